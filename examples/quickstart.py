"""Quickstart: margin heads against softmax, verified on identities never trained on.

    python examples/quickstart.py                       # about 3 minutes on a 2-core CPU
    python examples/quickstart.py --heads arcface cosface --epochs 2 --output out/
    python examples/quickstart.py --dataset fashion     # Fashion-MNIST: 7 classes, 3 unseen
    python examples/quickstart.py --smoke               # the CI check, well under a minute

What it does:

1. renders the glyph benchmark (``km.datasets.load_glyphs``): each Latin, Greek or Cyrillic
   character is an identity, each font a sample; 92 characters train, 40 others are held out.
   It needs no download: the fonts that ship with matplotlib (DejaVu Sans, Serif and Mono and
   STIX, 16 faces) are enough, and the system's fonts, when there are any, are added (more
   type designs per identity; the font set is printed and saved);
2. trains the same small CNN with each head (the two-input pattern: ``[images, labels] ->
   logits``), one progress line per head;
3. evaluates open-set verification on the held-out identities with keras_margins' own protocol
   (LFW-style 10-fold accuracy, AUC, EER, TAR@FAR) and rank-1 identification;
4. prints a results table and a verdict, and writes into ``--output``: ``results.md`` /
   ``results.json``, ``roc.png`` (every head's ROC curve), ``sphere.png`` (held-out features of
   the best head on the sphere, a 3-D PCA projection), and ``embedder/``, the best head's
   embedding model as a TensorFlow SavedModel.

``--dataset fashion`` runs the same on Fashion-MNIST (Keras's downloader, else the Debian package
``dataset-fashion-mnist``; without either it falls back to scikit-learn's 8x8 digits and says
why). With only 7 training classes there, plain softmax usually verifies the unseen classes best:
margins pay off with many identities.
"""

import time

STARTED = time.perf_counter()  # noqa: E402 -- the total time includes TensorFlow's start-up

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import quiet  # noqa: E402,F401 -- first: TensorFlow without its start-up banners

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

DEFAULT_HEADS = ["softmax", "cosface", "arcface"]
NAMES = {
    "softmax": "softmax",
    "normsoftmax": "NormSoftmax",
    "l2softmax": "L2-Softmax",
    "sphereface": "SphereFace",
    "cosface": "CosFace",
    "arcface": "ArcFace",
    "subcenter-arcface": "sub-center ArcFace",
    "svsoftmax": "SV-Softmax",
    "combined": "CombinedMargin",
    "adaface": "AdaFace",
    "magface": "MagFace",
    "magface-scaled": "MagFace (norm range 0.5-1.5)",
    "curricularface": "CurricularFace",
    "elasticface": "ElasticFace",
    "elasticface-plus": "ElasticFace+",
    "adacos": "AdaCos",
    "adacos-dynamic": "AdaCos (dynamic)",
    "center": "softmax + center loss",
    "triplet": "triplet",
}
#: Samples per (character, font) of the glyph benchmark: 16 matplotlib fonts x 8 = 128 images
#: per identity.
GLYPH_SAMPLES_PER_FONT = 8


def load_glyph_data(seed, smoke):
    split = km.datasets.load_glyphs(
        samples_per_font=2 if smoke else GLYPH_SAMPLES_PER_FONT, seed=seed
    )
    x_train, y_train, x_test, y_test = split.x_train, split.y_train, split.x_test, split.y_test
    if smoke:
        rng = np.random.default_rng(seed)
        keep = rng.permutation(len(y_train))[:1500]
        x_train, y_train = x_train[keep], y_train[keep]
    fonts = split.info["fonts"]
    source = f"glyphs, {len(fonts)} fonts ({split.info['font_set']})"
    held_out = [f"'{c}'" for c in split.test_names]
    note = None
    if split.info["font_set"] == "matplotlib":
        note = (
            "fonts: only matplotlib's (no system fonts found); for more type designs per "
            "identity: sudo apt-get install -y " + km.datasets.FONT_PACKAGES
        )
    return (
        source,
        x_train,
        y_train,
        x_test,
        y_test,
        split.num_train_classes,
        held_out,
        {"font_set": split.info["font_set"], "fonts": fonts},
        note,
    )


def load_fashion_data(seed, split_seed, smoke):
    split, source, (x_train, y_train), (x_test, y_test) = load_fashion_open_set(
        1500 if smoke else 21000,
        600 if smoke else 6000,
        seed=seed,
        split_seed=split_seed,
        allow_download=not smoke,
    )
    return (
        f"fashion-mnist ({source})" if source != "digits" else "digits (fallback)",
        x_train,
        y_train,
        x_test,
        y_test,
        split.num_train_classes,
        list(split.test_names),
        {},
        None,
    )


def verdict(results, data_name):
    """One paragraph in words: which head verified the unseen identities best, by how much."""
    best = max(results, key=lambda k: results[k]["accuracy"])
    if "softmax" not in results:
        return (
            f"Verdict: {NAMES.get(best, best)} verifies the held-out identities best "
            f"(accuracy {results[best]['accuracy']:.3f}); add softmax to --heads to compare "
            "with the baseline."
        )
    base = results["softmax"]
    margins = {k: v for k, v in results.items() if k != "softmax"}
    if not margins:
        return "Verdict: only softmax was trained; add margin heads to --heads to compare."
    top = max(margins, key=lambda k: margins[k]["accuracy"])
    gain = 100 * (margins[top]["accuracy"] - base["accuracy"])
    rank_gain = 100 * (margins[top]["rank1"] - base["rank1"])
    ahead = [NAMES.get(k, k) for k, v in margins.items() if v["accuracy"] > base["accuracy"]]
    if gain > 0:
        return (
            f"Verdict: the margin pays off. {NAMES.get(top, top)} verifies identities it "
            f"never saw best: accuracy {margins[top]['accuracy']:.3f} against "
            f"{base['accuracy']:.3f} for plain softmax ({gain:+.1f} points; rank-1 "
            f"{rank_gain:+.1f} points). Ahead of softmax: {', '.join(ahead)}."
        )
    extra = (
        " With few training classes a plain softmax embedding is a strong baseline; the "
        "margin heads pay off with many identities (the default glyph benchmark)."
        if data_name != "glyphs"
        else ""
    )
    return (
        f"Verdict: plain softmax verified the held-out identities best here (accuracy "
        f"{base['accuracy']:.3f}; best margin head {NAMES.get(top, top)}: "
        f"{margins[top]['accuracy']:.3f}).{extra}"
    )


def write_plots(output, reports, results, best, emb, y_test, held_out, source, seed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for method, report in reports.items():
        km.plots.plot_roc(
            report,
            label=f"{NAMES.get(method, method)} (AUC {report.auc:.3f})",
            ax=ax,
            mark_fars=False,
        )
    ax.set_title(
        f"Verification of {len(np.unique(y_test))} held-out identities\n({source})", fontsize=11
    )
    ax.set_xlim(right=1.0)
    fig.savefig(os.path.join(output, "roc.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)

    # The sphere: a 3-D PCA projection of the held-out embeddings, a few identities only (a
    # plot of 40 colours cannot be read). The lines are each identity's mean direction: these
    # identities have no class centre, the head never saw them.
    classes = np.unique(y_test)
    rng = np.random.default_rng(seed)
    shown = np.sort(rng.choice(classes, size=min(8, len(classes)), replace=False))
    keep = np.isin(y_test, shown)
    centred = emb[keep] - emb[keep].mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:3].T
    names = {int(c): f"held-out {held_out[c]}" if held_out else f"held-out {c}" for c in shown}
    fig = km.plots.plot_features_on_sphere(
        projected,
        y_test[keep],
        max_points=1200,
        seed=seed,
        class_names=names,
        title=f"{NAMES.get(best, best)}: {len(shown)} held-out identities on the sphere\n"
        "(3-D PCA of the embeddings; lines: each identity's mean direction)",
    )
    fig.savefig(os.path.join(output, "sphere.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["glyphs", "fashion"], default="glyphs")
    parser.add_argument("--heads", nargs="+", default=DEFAULT_HEADS, choices=METHODS)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: 5 on glyphs, 3 on fashion)",
    )
    parser.add_argument("--output", default="quickstart_output")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the initialization (and, on glyphs, of the held-out "
        "identities and the augmentation)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=1,
        help="fashion only: seed of the held-out classes (1: Coat, Sneaker, Bag; 0 holds out "
        "the three look-alike tops Pullover, Coat, Shirt)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 5 if args.dataset == "glyphs" else 3
    if args.smoke:
        args.epochs = 1
        given = sys.argv[1:] if argv is None else argv
        args.heads = args.heads if "--heads" in given else ["softmax", "arcface"]

    if args.dataset == "glyphs":
        loaded = load_glyph_data(args.seed, args.smoke)
    else:
        loaded = load_fashion_data(args.seed, args.split_seed, args.smoke)
    source, x_train, y_train, x_test, y_test, num_classes, held_out, meta, note = loaded
    print(
        f"data: {source}; training on {num_classes} identities ({len(x_train)} images), "
        f"verifying on {len(np.unique(y_test))} held-out identities ({len(x_test)} images)"
        + (f": {' '.join(held_out)}" if held_out else "")
    )
    if note:
        print(note)
    os.makedirs(args.output, exist_ok=True)

    results, reports, models = {}, {}, {}
    for i, method in enumerate(args.heads, 1):
        print(
            f"[{i}/{len(args.heads)}] {method} ({DESCRIPTIONS[method]}): training "
            f"{args.epochs} epoch{'s' if args.epochs != 1 else ''} ...",
            end="",
            flush=True,
        )
        embed_model, extras = train_method(
            method, x_train, y_train, num_classes, epochs=args.epochs, seed=args.seed, verbose=0
        )
        metrics, report, emb = evaluate_open_set(
            embed_model, x_test, y_test, num_pairs=1000 if args.smoke else 6000, seed=args.seed
        )
        metrics["train_seconds"] = extras["train_seconds"]
        results[method], reports[method], models[method] = metrics, report, (embed_model, emb)
        print(
            f" {extras['train_seconds']:.0f} s; held-out verification accuracy "
            f"{metrics['accuracy']:.3f}, rank-1 {metrics['rank1']:.3f}",
            flush=True,
        )

    header = "| head | verification acc (10-fold) | AUC | EER | TAR@FAR=1e-2 | rank-1 |"
    lines = [header, "|---|---|---|---|---|---|"]
    for method, m in results.items():
        lines.append(
            f"| {method} | {m['accuracy']:.4f} ± {m['accuracy_std']:.4f} | {m['auc']:.4f} | "
            f"{m['eer']:.4f} | {m.get('tar@far=1e-02', float('nan')):.4f} | {m['rank1']:.4f} |"
        )
    table = "\n".join(lines)
    summary = verdict(results, args.dataset)
    if args.smoke:
        summary += " (A --smoke run trains 1 epoch on 1500 images: too short to compare heads.)"
    print(f"\nOpen-set results on held-out classes (data: {source})\n{table}\n\n{summary}")
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write(
            f"# Quickstart results (data: {source}, seed {args.seed}, "
            f"{args.epochs} epochs)\n\n{table}\n\n{summary}\n"
        )
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(
            {
                "source": source,
                "dataset": args.dataset,
                **meta,
                "held_out": held_out,
                "seed": args.seed,
                "epochs": args.epochs,
                "verdict": summary,
                "results": results,
            },
            f,
            indent=2,
        )

    best = max(results, key=lambda k: results[k]["accuracy"])
    try:
        write_plots(
            args.output,
            reports,
            results,
            best,
            models[best][1],
            y_test,
            held_out,
            source,
            args.seed,
        )
        print(f"plots: {args.output}/roc.png, {args.output}/sphere.png")
    except ImportError as exc:
        print(f"plots skipped ({exc}); install the examples extra: pip install -e '.[examples]'")

    path = os.path.join(args.output, "embedder")
    km.export.export_saved_model(models[best][0], path, overwrite=True)
    print(f"best head: {best}; its embedding model is exported to {path} (SavedModel)")
    print(f"total time: {time.perf_counter() - STARTED:.0f} s")
    return results


if __name__ == "__main__":
    main()
