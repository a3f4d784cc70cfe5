"""Does SphereFace's lambda annealing matter? A small experiment on scikit-learn's digits.

Trains the same MLP backbone with four heads and reports held-out closed-set accuracy
(arg-max of the cosines to the class centres) and the final training loss, over a few seeds:

- NormSoftmax (s = 16), the baseline;
- SphereFace, m = 4, the default annealing schedule (lambda from 1000 down to 5);
- SphereFace, m = 4, lambda = 0 from the first step (plain A-Softmax, no annealing);
- SphereFace, m = 4, annealing to lambda_min = 0 (the margin fully on at the end).

Usage: python benchmarks/sphereface_annealing.py [--epochs 100] [--seeds 3] [--json out.json]
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_margins as km  # noqa: E402
from keras_margins.heads.sphereface import SphereFace  # noqa: E402

HEADS = {
    "NormSoftmax (s=16)": lambda: km.NormSoftmax(10, scale=16.0),
    "SphereFace m=4, annealed (default)": lambda: SphereFace(10, margin=4),
    "SphereFace m=4, lambda=0 from step 0": lambda: SphereFace(
        10, margin=4, lambda_base=0.0, lambda_min=0.0
    ),
    "SphereFace m=4, annealed to lambda_min=0": lambda: SphereFace(10, margin=4, lambda_min=0.0),
}


def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y.astype("int32"), test_size=0.3, random_state=0, stratify=y)


def run(make_head, seed, epochs, data):
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(32)]
    )
    head = make_head()
    train_model, embed_model = km.build_models(backbone, head)
    train_model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    hist = train_model.fit([x_train, y_train], y_train, epochs=epochs, batch_size=64, verbose=0)
    emb = embed_model.predict(x_test, verbose=0)
    pred = np.argmax(keras.ops.convert_to_numpy(head(emb)), axis=1)
    emb_train = embed_model.predict(x_train, verbose=0)
    pred_train = np.argmax(keras.ops.convert_to_numpy(head(emb_train)), axis=1)
    result = {
        "test_accuracy": float(np.mean(pred == y_test)),
        "train_accuracy": float(np.mean(pred_train == y_train)),
        "final_loss": float(hist.history["loss"][-1]),
        "loss_finite": bool(np.all(np.isfinite(hist.history["loss"]))),
    }
    if isinstance(head, SphereFace):
        result["final_lambda"] = head.current_lambda()
        result["steps"] = int(keras.ops.convert_to_numpy(head.step))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the raw results here")
    args = parser.parse_args()
    data = digits()
    results = {}
    for name, make_head in HEADS.items():
        start = time.time()
        results[name] = [run(make_head, seed, args.epochs, data) for seed in range(args.seeds)]
        acc = [r["test_accuracy"] for r in results[name]]
        print(
            f"{name:42s} test acc {np.mean(acc):.4f} +- {np.std(acc):.4f} "
            f"(per seed {', '.join(f'{a:.3f}' for a in acc)}), "
            f"train acc {np.mean([r['train_accuracy'] for r in results[name]]):.4f}, "
            f"final loss {np.mean([r['final_loss'] for r in results[name]]):.3f}"
            + (
                f", final lambda {results[name][0]['final_lambda']:.2f}"
                if "final_lambda" in results[name][0]
                else ""
            )
            + f"  [{time.time() - start:.0f}s]",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"epochs": args.epochs, "seeds": args.seeds, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
