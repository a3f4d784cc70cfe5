"""Quickstart: margin heads on Fashion-MNIST, verified on clothing classes never trained on.

    python examples/quickstart.py                       # a few minutes on a 2-core CPU
    python examples/quickstart.py --heads arcface cosface --epochs 2 --output out/
    python examples/quickstart.py --smoke               # the CI check, well under a minute

What it does:

1. loads Fashion-MNIST (Keras's downloader when online, else the Debian package
   ``dataset-fashion-mnist``, else scikit-learn's digits) and holds out 3 of its 10 classes;
2. trains the same small CNN with each head on the 7 other classes (the two-input pattern:
   ``[images, labels] -> logits``);
3. evaluates open-set verification on the held-out classes with keras_margins' own protocol
   (LFW-style 10-fold accuracy, AUC, EER, TAR@FAR) and rank-1 identification;
4. prints a results table and writes into ``--output``: ``results.md`` / ``results.json``,
   ``roc.png`` (every head's ROC curve), ``sphere.png`` (held-out features of the best head on
   the sphere, a 3-D PCA projection), and ``embedder/``, the best head's embedding model as a
   TensorFlow SavedModel.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402
from common import (  # noqa: E402
    DESCRIPTIONS,
    METHODS,
    evaluate_open_set,
    load_fashion_open_set,
    train_method,
)

DEFAULT_HEADS = ["softmax", "normsoftmax", "cosface", "arcface", "sphereface"]


def load_data(train_samples, seed, split_seed, smoke):
    split, source, (x_train, y_train), (x_test, y_test) = load_fashion_open_set(
        train_samples, 600 if smoke else 6000, seed=seed, split_seed=split_seed
    )
    return (source, x_train, y_train, x_test, y_test, split.num_train_classes,
            list(split.test_names))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=DEFAULT_HEADS, choices=METHODS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=21000)
    parser.add_argument("--output", default="quickstart_output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split-seed", type=int, default=1,
        help="seed of the held-out classes (1: Coat, Sneaker, Bag; 0 holds out the three "
        "look-alike tops Pullover, Coat, Shirt)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.train_samples = 1, 1500
        given = sys.argv[1:] if argv is None else argv
        args.heads = args.heads if "--heads" in given else ["softmax", "arcface"]

    source, x_train, y_train, x_test, y_test, num_classes, held_out = load_data(
        args.train_samples, args.seed, args.split_seed, args.smoke
    )
    print(f"data source: {source}; training on {num_classes} classes ({len(x_train)} images), "
          f"verifying on {len(np.unique(y_test))} held-out classes ({len(x_test)} images)"
          + (f": {', '.join(held_out)}" if held_out else ""))
    os.makedirs(args.output, exist_ok=True)

    results, reports, models = {}, {}, {}
    for method in args.heads:
        print(f"\n== {method}: {DESCRIPTIONS[method]}")
        embed_model, extras = train_method(
            method, x_train, y_train, num_classes, epochs=args.epochs, seed=args.seed
        )
        metrics, report, emb = evaluate_open_set(
            embed_model, x_test, y_test, num_pairs=1000 if args.smoke else 6000, seed=args.seed
        )
        metrics["train_seconds"] = extras["train_seconds"]
        results[method], reports[method], models[method] = metrics, report, (embed_model, emb)

    header = "| head | verification acc (10-fold) | AUC | EER | TAR@FAR=1e-2 | rank-1 |"
    lines = [header, "|---|---|---|---|---|---|"]
    for method, m in results.items():
        lines.append(
            f"| {method} | {m['accuracy']:.4f} ± {m['accuracy_std']:.4f} | {m['auc']:.4f} | "
            f"{m['eer']:.4f} | {m.get('tar@far=1e-02', float('nan')):.4f} | {m['rank1']:.4f} |"
        )
    table = "\n".join(lines)
    print(f"\nOpen-set results on held-out classes (data: {source})\n{table}")
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write(f"# Quickstart results (data: {source}, seed {args.seed}, "
                f"{args.epochs} epochs)\n\n{table}\n")
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump({"source": source, "held_out": held_out, "results": results}, f, indent=2)

    best = max(results, key=lambda k: results[k]["accuracy"])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        for method, report in reports.items():
            km.plots.plot_roc(report, label=f"{method} (AUC {report.auc:.3f})", ax=ax,
                              mark_fars=False)
        ax.set_title(f"Open-set verification, held-out classes ({source})")
        fig.savefig(os.path.join(args.output, "roc.png"), dpi=120, bbox_inches="tight")
        plt.close(fig)
        emb = models[best][1]
        centered = emb - emb.mean(axis=0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        projected = emb @ vt[:3].T
        fig = km.plots.plot_features_on_sphere(
            projected, y_test, max_points=1500, class_names=held_out or None
        )
        fig.suptitle(f"{best}: held-out features, 3-D PCA projection")
        fig.savefig(os.path.join(args.output, "sphere.png"), dpi=120, bbox_inches="tight")
        plt.close(fig)
        print(f"plots: {args.output}/roc.png, {args.output}/sphere.png")
    except ImportError as exc:
        print(f"plots skipped ({exc}); install the examples extra: pip install -e '.[examples]'")

    path = os.path.join(args.output, "embedder")
    km.export.export_saved_model(models[best][0], path, overwrite=True)
    print(f"best head: {best}; its embedding model is exported to {path} (SavedModel)")
    return results


if __name__ == "__main__":
    main()
