"""Quickstart: train a small network with margin heads on scikit-learn's digits.

Runs offline in well under a minute on a 2-core CPU:

    python examples/quickstart.py --heads arcface cosface --epochs 15

For each head it trains the two-input model (``[images, labels] -> logits``), then predicts
held-out digits with the trained embedding model and the head's class centres (``s * cos``).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_margins as km  # noqa: E402

HEADS = {
    "normsoftmax": lambda c: km.NormSoftmax(c),
    "cosface": lambda c: km.CosFace(c),
    "arcface": lambda c: km.ArcFace(c),
    "subcenter-arcface": lambda c: km.ArcFace(c, sub_centers=3),
    "combined": lambda c: km.CombinedMargin(c, m1=1.0, m2=0.3, m3=0.2),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=["arcface", "cosface"], choices=sorted(HEADS))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=args.seed, stratify=y
    )
    print(f"data: scikit-learn digits, {len(x_train)} train / {len(x_test)} held-out samples")

    rows = []
    for name in args.heads:
        keras.utils.set_random_seed(args.seed)
        backbone = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(32)],
            name="mlp",
        )
        head = HEADS[name](10)
        train_model, embed_model = km.build_models(backbone, head)
        train_model.compile(
            optimizer=keras.optimizers.Adam(3e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        print(f"\n== {name}")
        train_model.fit([x_train, y_train], y_train, epochs=args.epochs, batch_size=64, verbose=2)
        embeddings = embed_model.predict(x_test, verbose=0)
        predicted = np.argmax(keras.ops.convert_to_numpy(head(embeddings)), axis=1)
        rows.append((name, float(np.mean(predicted == y_test))))

    print("\nhead                 held-out accuracy")
    for name, acc in rows:
        print(f"{name:<20} {acc:.3f}")


if __name__ == "__main__":
    main()
