"""Softmax + center loss against plain softmax, verified on classes never trained on.

    python examples/center_loss.py                       # about a minute on a 2-core CPU
    python examples/center_loss.py --weight 0.01 --alpha 0.5 --epochs 5 --output out/
    python examples/center_loss.py --smoke               # the CI check, well under a minute

Wen et al. (ECCV 2016) keep the ordinary softmax classifier and add a second term that pulls
each embedding towards a learned center of its class, ``L = L_softmax + lambda * L_C``.
``km.CenterLoss`` is a layer placed between the backbone and the classifier: it owns the
centers, adds ``lambda * L_C`` with ``add_loss`` and applies the paper's center update
(learning rate ``alpha``) after every batch; in inference it does nothing. Both models here
share the backbone, data, optimizer, epochs and seed; only the center-loss layer differs.

Data: Fashion-MNIST (Keras's downloader, else the Debian package ``dataset-fashion-mnist``,
else scikit-learn's digits) with 3 classes held out; the embeddings (the backbone's output,
L2-normalized) are evaluated on them: 10-fold verification accuracy, AUC, EER, TAR@FAR,
rank-1. The training-class center spread is printed too. Numbers go to
``--output``/``center_loss.json``.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401 -- before TensorFlow: no start-up banners

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import build_backbone, evaluate_open_set, load_small_fashion_open_set  # noqa: E402

import keras_margins as km  # noqa: E402


def load_data(smoke, seed):
    num_classes, x_train, y_train, x_test, y_test = load_small_fashion_open_set(
        smoke, seed, training="training on"
    )
    return x_train, y_train, x_test, y_test, num_classes


def train(x, y, num_classes, epochs, seed, center=None):
    """Backbone -> [CenterLoss] -> Dense classifier; returns the normalized embedding model."""
    keras.utils.set_random_seed(seed)
    backbone = build_backbone(x.shape[1:], embedding_dim=64)
    images, labels = keras.Input(x.shape[1:]), keras.Input((), dtype="int32")
    features = backbone(images)
    if center is not None:
        # The layer needs the labels, hence the two-input model; it returns features unchanged.
        features = km.CenterLoss(
            num_classes, alpha=center["alpha"], weight=center["weight"], name="center_loss"
        )([features, labels])
    logits = keras.layers.Dense(num_classes)(features)
    model = keras.Model([images, labels], logits)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit([x, y], y, batch_size=128, epochs=epochs, verbose=2)
    return keras.Model(images, keras.layers.UnitNormalization(dtype="float32")(backbone(images)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--weight", type=float, default=0.01, help="lambda of the center loss")
    parser.add_argument("--alpha", type=float, default=0.5, help="center learning rate")
    parser.add_argument("--output", default="center_loss_output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = 1
    os.makedirs(args.output, exist_ok=True)
    x_train, y_train, x_test, y_test, num_classes = load_data(args.smoke, args.seed)
    num_pairs = 1000 if args.smoke else 6000

    results = {}
    runs = {
        "softmax": None,
        f"softmax + center (lambda={args.weight:g})": {"weight": args.weight, "alpha": args.alpha},
    }
    for name, center in runs.items():
        print(f"\n== {name}")
        embed = train(x_train, y_train, num_classes, args.epochs, args.seed, center)
        metrics, _, _ = evaluate_open_set(
            embed, x_test, y_test, num_pairs=num_pairs, seed=args.seed
        )
        # Intra-class compactness on the training classes: mean cosine to the class mean.
        emb = embed.predict(x_train[:3000], batch_size=512, verbose=0)
        lab = y_train[:3000]
        means = np.stack([emb[lab == c].mean(0) for c in np.unique(lab)])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        metrics["train_intra_cosine"] = float(np.mean(np.sum(emb * means[lab], axis=1)))
        results[name] = metrics

    print("\nOpen-set verification on the held-out classes")
    print(
        "| model | accuracy (10-fold) | AUC | EER | TAR@FAR=1e-2 | rank-1 | train intra-class cos |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, m in results.items():
        print(
            f"| {name} | {m['accuracy']:.4f} ± {m['accuracy_std']:.4f} | {m['auc']:.4f} | "
            f"{m['eer']:.4f} | {m.get('tar@far=1e-02', float('nan')):.4f} | "
            f"{m['rank1']:.4f} | {m['train_intra_cosine']:.4f} |"
        )

    path = os.path.join(args.output, "center_loss.json")
    with open(path, "w") as f:
        json.dump(
            {"epochs": args.epochs, "weight": args.weight, "alpha": args.alpha, "results": results},
            f,
            indent=2,
        )
    print(f"results written to {path}")
    return results


if __name__ == "__main__":
    main()
