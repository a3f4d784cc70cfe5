"""A triplet network: semi-hard online mining on P x K batches, verified on unseen identities.

    python examples/triplet_semihard.py                  # about a minute on a 2-core CPU
    python examples/triplet_semihard.py --p 16 --k 8 --margin 0.3 --output out/
    python examples/triplet_semihard.py --smoke          # the CI check, well under a minute

FaceNet's recipe (Schroff et al. 2015) as tensorflow-addons users know it: the network maps an
image straight to an L2-normalized embedding and ``km.TripletSemiHardLoss`` builds its
triplets inside each batch, choosing for every anchor-positive pair the closest negative that
is still farther than the positive. That only works if each batch holds several samples of
each identity: ``km.PKSampler`` draws ``P`` identities and ``K`` samples of each
(Hermans et al. 2017), and its ``dataset()`` feeds ``model.fit`` directly.

Data: rendered glyphs (``km.datasets.load_glyphs``: characters are identities, fonts are
samples), training on some characters and verifying on characters never seen (10-fold
accuracy, AUC, EER, TAR@FAR, rank-1), next to the same network before training. Without fonts
it falls back to Fashion-MNIST (or digits) with 3 held-out classes. Numbers go to
``--output``/``triplet_semihard.json``.
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
from common import build_backbone, evaluate_open_set  # noqa: E402

import keras_margins as km  # noqa: E402


def load_data(smoke, seed):
    try:
        chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" if smoke else None
        split = km.datasets.load_glyphs(
            characters=chars, samples_per_font=1 if smoke else 2, seed=seed
        )
        source = f"glyphs ({len(split.info['fonts'])} fonts)"
    except (FileNotFoundError, ValueError) as err:  # no usable fonts on this machine
        data = km.datasets.load_fashion_mnist(allow_download=not smoke, download_timeout=10.0)
        split = data.open_set(num_held_out=3, seed=1)
        source = f"{data.source} (glyphs unavailable: {err})"
    rng = np.random.default_rng(seed)
    test = rng.permutation(len(split.y_test))[: 600 if smoke else 6000]
    print(
        f"data source: {source}; training on {split.num_train_classes} identities "
        f"({len(split.y_train)} images), verifying on {split.num_test_classes} unseen "
        f"identities ({len(test)} images)"
    )
    return split.x_train, split.y_train, split.x_test[test], split.y_test[test]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--p", type=int, default=32, help="identities per batch")
    parser.add_argument("--k", type=int, default=4, help="samples per identity in a batch")
    parser.add_argument("--margin", type=float, default=0.5)
    parser.add_argument("--output", default="triplet_semihard_output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    x_train, y_train, x_test, y_test = load_data(args.smoke, args.seed)
    num_pairs = 1000 if args.smoke else 6000

    keras.utils.set_random_seed(args.seed)
    images = keras.Input(x_train.shape[1:])
    features = build_backbone(x_train.shape[1:], embedding_dim=64)(images)
    model = keras.Model(images, keras.layers.UnitNormalization(dtype="float32")(features))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=km.TripletSemiHardLoss(margin=args.margin)
    )
    before, _, _ = evaluate_open_set(model, x_test, y_test, num_pairs=num_pairs, seed=args.seed)

    p = min(args.p, len(np.unique(y_train)))
    sampler = km.PKSampler(y_train, p=p, k=args.k, seed=args.seed)
    steps = 20 if args.smoke else sampler.steps_per_epoch()
    epochs = 1 if args.smoke else args.epochs
    print(
        f"P x K batches: {p} identities x {args.k} samples = {sampler.batch_size} images, "
        f"{steps} batches per epoch"
    )
    batches = sampler.dataset(x_train, y_train, num_batches=steps * epochs)
    model.fit(batches, epochs=epochs, steps_per_epoch=steps, shuffle=False, verbose=2)
    after, _, _ = evaluate_open_set(model, x_test, y_test, num_pairs=num_pairs, seed=args.seed)

    print("\nOpen-set verification on unseen identities")
    print("| network | accuracy (10-fold) | AUC | EER | TAR@FAR=1e-2 | rank-1 |")
    print("|---|---|---|---|---|---|")
    for name, m in (("untrained", before), ("triplet semi-hard", after)):
        print(
            f"| {name} | {m['accuracy']:.4f} ± {m['accuracy_std']:.4f} | {m['auc']:.4f} | "
            f"{m['eer']:.4f} | {m.get('tar@far=1e-02', float('nan')):.4f} | "
            f"{m['rank1']:.4f} |"
        )

    path = os.path.join(args.output, "triplet_semihard.json")
    with open(path, "w") as f:
        json.dump(
            {
                "epochs": epochs,
                "p": p,
                "k": args.k,
                "margin": args.margin,
                "untrained": before,
                "triplet": after,
            },
            f,
            indent=2,
        )
    print(f"results written to {path}")
    return after


if __name__ == "__main__":
    main()
