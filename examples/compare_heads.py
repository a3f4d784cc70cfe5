"""The papers' comparison, reproduced: every head and loss on identities never trained on.

    python examples/compare_heads.py --dataset glyphs --seeds 0 1 2 --epochs 5
    python examples/compare_heads.py --dataset fashion --seeds 0 1 2 --epochs 3
    python examples/compare_heads.py --smoke            # the CI check

Same backbone (examples/common.py), data, epochs, batch size and optimizer for every method;
only the head or loss differs. For each seed the data split (glyphs: which characters are
held out, and the augmentation) and the initialization change. Reported on the held-out
identities: LFW-style 10-fold verification accuracy, TAR@FAR and rank-1 identification (one
gallery image per identity), as mean ± std over seeds. Writes ``compare_<dataset>.json`` and
``compare_<dataset>.md`` into ``--output``.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401 -- before TensorFlow: no start-up banners

# isort: split

import numpy as np  # noqa: E402
from common import (  # noqa: E402
    DESCRIPTIONS,
    METHODS,
    evaluate_open_set,
    load_fashion_open_set,
    train_method,
)

import keras_margins as km  # noqa: E402

COLUMNS = ["accuracy", "tar@far=1e-02", "tar@far=1e-03", "rank1"]


def load(dataset, seed, smoke):
    if dataset == "glyphs":
        if smoke:
            chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            split = km.datasets.load_glyphs(
                characters=chars, samples_per_font=1, seed=seed, test_fraction=0.3
            )
        else:
            split = km.datasets.load_glyphs(seed=seed)
        source = f"glyphs, {len(split.info['fonts'])} fonts ({split.info['font_set']})"
        x_train, y_train, x_test, y_test = split.x_train, split.y_train, split.x_test, split.y_test
        rng = np.random.default_rng(seed)
        keep = rng.permutation(len(y_train))[: 1500 if smoke else 21000]
        test_keep = rng.permutation(len(y_test))[: 600 if smoke else 6000]
        return (
            source,
            x_train[keep],
            y_train[keep],
            x_test[test_keep],
            y_test[test_keep],
            split.num_train_classes,
        )
    # Fashion-MNIST, held out: Coat, Sneaker, Bag.
    split, data_source, (x_train, y_train), (x_test, y_test) = load_fashion_open_set(
        1500 if smoke else 21000, 600 if smoke else 6000, seed=seed
    )
    return (
        f"fashion-mnist ({data_source})",
        x_train,
        y_train,
        x_test,
        y_test,
        split.num_train_classes,
    )


def fmt(values):
    values = np.asarray(values, dtype=float)
    if np.all(np.isnan(values)):
        return "n/a"  # a FAR the number of impostor pairs cannot resolve
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["glyphs", "fashion"], default="glyphs")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--output", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument(
        "--tag", default=None, help="write compare_DATASET_TAG.* (keeps the full run's files)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.seeds = 1, args.seeds[:1]
        given = sys.argv[1:] if argv is None else argv
        if "--methods" not in given:
            args.methods = ["softmax", "arcface", "center", "triplet"]

    runs = {m: [] for m in args.methods}
    source = None
    started = time.perf_counter()
    for seed in args.seeds:
        source, x_train, y_train, x_test, y_test, num_classes = load(args.dataset, seed, args.smoke)
        print(
            f"[seed {seed}] {source}: {num_classes} training identities ({len(x_train)} images),"
            f" {len(np.unique(y_test))} held-out identities ({len(x_test)} images)",
            flush=True,
        )
        for method in args.methods:
            embed_model, extras = train_method(
                method, x_train, y_train, num_classes, epochs=args.epochs, seed=seed, verbose=0
            )
            metrics, _, _ = evaluate_open_set(
                embed_model, x_test, y_test, num_pairs=1000 if args.smoke else 6000, seed=seed
            )
            metrics["train_seconds"] = extras["train_seconds"]
            metrics["final_loss"] = float(extras["history"]["loss"][-1])
            runs[method].append(metrics)
            print(
                f"  {method:<18} acc {metrics['accuracy']:.4f}  "
                f"TAR@1e-2 {metrics.get('tar@far=1e-02', float('nan')):.4f}  "
                f"rank-1 {metrics['rank1']:.4f}  ({metrics['train_seconds']:.0f} s)",
                flush=True,
            )

    lines = [
        f"Data: {source}; seeds {args.seeds}; {args.epochs} epochs; batch 128; Adam 3e-3; "
        "same CNN for every method. Mean ± std over seeds, on held-out identities.",
        "",
        "| method | setting | verification acc (10-fold) | TAR@FAR=1e-2 | TAR@FAR=1e-3 | rank-1 |",
        "|---|---|---|---|---|---|",
    ]
    for method, rows in runs.items():
        cells = [fmt([r.get(c, float("nan")) for r in rows]) for c in COLUMNS]
        lines.append(f"| {method} | {DESCRIPTIONS[method]} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    print(f"\ntotal time: {time.perf_counter() - started:.0f} s")

    os.makedirs(args.output, exist_ok=True)
    suffix = ("_" + args.tag if args.tag else "") + ("_smoke" if args.smoke else "")
    stem = os.path.join(args.output, f"compare_{args.dataset}{suffix}")
    with open(stem + ".md", "w") as f:
        f.write(table + "\n")
    with open(stem + ".json", "w") as f:
        json.dump(
            {"dataset": source, "seeds": args.seeds, "epochs": args.epochs, "runs": runs},
            f,
            indent=2,
        )
    return runs


if __name__ == "__main__":
    main()
