"""A Siamese network trained with the contrastive loss, verified on classes it never saw.

    python examples/siamese_contrastive.py               # about a minute on a 2-core CPU
    python examples/siamese_contrastive.py --epochs 5 --margin 0.8 --output out/
    python examples/siamese_contrastive.py --smoke       # the CI check, well under a minute

The pair-based route to embeddings (Bromley et al. 1993; Hadsell, Chopra & LeCun 2006): one
tower (a small CNN followed by L2 normalization) embeds both images of a pair,
``km.build_siamese_model`` puts ``km.PairDistance`` (the Euclidean distance) on top, and
``km.ContrastiveLoss`` pulls similar pairs together and pushes dissimilar ones beyond the
margin. No class labels reach the network, only "same / different" (``y = 1`` / ``y = 0``, the
tensorflow-addons convention).

Data: Fashion-MNIST (Keras's downloader, else the Debian package ``dataset-fashion-mnist``,
else scikit-learn's digits) with 3 classes held out. Balanced training pairs are drawn from the
7 training classes with ``km.generate_pairs``, fresh for each epoch. The tower is then evaluated
on the held-out classes (10-fold verification accuracy, AUC, EER, TAR@FAR, rank-1), next to the
same tower before training. Numbers go to ``--output``/``siamese_contrastive.json``.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401 -- before TensorFlow: no start-up banners

# isort: split

import keras  # noqa: E402
from common import build_backbone, evaluate_open_set, load_small_fashion_open_set  # noqa: E402

import keras_margins as km  # noqa: E402


def load_data(smoke, seed):
    num_classes, x_train, y_train, x_test, y_test = load_small_fashion_open_set(
        smoke, seed, training="pairs from"
    )
    return x_train, y_train, x_test, y_test


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=20000, help="training pairs per epoch")
    parser.add_argument("--margin", type=float, default=1.0)
    parser.add_argument("--output", default="siamese_contrastive_output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.pairs = 1, 2000
    os.makedirs(args.output, exist_ok=True)
    x_train, y_train, x_test, y_test = load_data(args.smoke, args.seed)
    num_pairs = 1000 if args.smoke else 6000

    keras.utils.set_random_seed(args.seed)
    tower = keras.Sequential(
        [build_backbone(x_train.shape[1:], embedding_dim=64), keras.layers.UnitNormalization()],
        name="tower",
    )
    siamese = km.build_siamese_model(tower, metric="euclidean")
    siamese.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=km.ContrastiveLoss(margin=args.margin)
    )

    before, _, _ = evaluate_open_set(tower, x_test, y_test, num_pairs=num_pairs, seed=args.seed)
    for epoch in range(args.epochs):
        a, b, same = km.generate_pairs(y_train, num_pairs=args.pairs, seed=args.seed + epoch)
        print(f"epoch {epoch + 1}/{args.epochs}: {len(same)} pairs ({int(same.sum())} similar)")
        siamese.fit(
            [x_train[a], x_train[b]], same.astype("float32"), batch_size=128, epochs=1, verbose=2
        )
    after, report, _ = evaluate_open_set(tower, x_test, y_test, num_pairs=num_pairs, seed=args.seed)

    print("\nOpen-set verification on the held-out classes")
    print("| tower | accuracy (10-fold) | AUC | EER | TAR@FAR=1e-2 | rank-1 |")
    print("|---|---|---|---|---|---|")
    for name, m in (("untrained", before), ("contrastive", after)):
        print(
            f"| {name} | {m['accuracy']:.4f} ± {m['accuracy_std']:.4f} | {m['auc']:.4f} | "
            f"{m['eer']:.4f} | {m.get('tar@far=1e-02', float('nan')):.4f} | "
            f"{m['rank1']:.4f} |"
        )
    print(f"decision threshold (cosine similarity, all pairs): {report.best_threshold:.3f}")

    path = os.path.join(args.output, "siamese_contrastive.json")
    with open(path, "w") as f:
        json.dump(
            {
                "epochs": args.epochs,
                "margin": args.margin,
                "untrained": before,
                "contrastive": after,
            },
            f,
            indent=2,
        )
    print(f"results written to {path}")
    return after


if __name__ == "__main__":
    main()
