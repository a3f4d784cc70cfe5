"""Kaggle similarity competitions end to end: ArcFace embeddings, threshold matching, MAP@5.

    python examples/kaggle_retrieval.py                  # about a minute on a 2-core CPU
    python examples/kaggle_retrieval.py --epochs 5 --output out/
    python examples/kaggle_retrieval.py --smoke          # the CI check, well under a minute

Two competition formats share one recipe -- train a classifier with a margin head on the
known identities, throw the head away, and compare L2-normalized embeddings:

* product matching (Shopee): every item's prediction is the *set* of items whose cosine
  similarity with it is at least a threshold; the score is the mean per-item F1 of that set.
  The threshold is swept on a validation split (``km.match_f1_sweep``) and the best one is
  applied unchanged to the test split (``km.match_f1``).
* identification with unknowns (Humpback Whale Identification): each query gets five ranked
  guesses from a gallery of known individuals (``km.nearest_neighbors`` +
  ``km.predict_labels``), and a ``new_individual`` guess is inserted wherever the similarity
  falls below a threshold; the score is MAP@5 (``km.map_at_k``). That threshold is also chosen
  on the validation split.

Data: rendered glyphs (``km.datasets.load_glyphs``; each character is an identity, each font a
photo of it). Training identities, validation identities and test identities are disjoint, so
every evaluated identity is new to the network, as on Kaggle's private leaderboard. Without
fonts it falls back to Fashion-MNIST (or digits) with four held-out classes. Numbers and the
sweep curves are written to ``--output``/``kaggle_retrieval.json``.
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
from common import build_backbone  # noqa: E402

import keras_margins as km  # noqa: E402

NEW = -1  # the "new_whale" label


def load_data(smoke, seed):
    """Training identities and held-out identities (glyphs, else Fashion-MNIST)."""
    try:
        if smoke:
            split = km.datasets.load_glyphs(
                characters="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", samples_per_font=1, seed=seed
            )
        else:
            split = km.datasets.load_glyphs(seed=seed)
        source = f"glyphs ({len(split.info['fonts'])} fonts, {split.num_train_classes} training "
        source += f"and {split.num_test_classes} held-out characters)"
    except (FileNotFoundError, ValueError) as err:  # no usable fonts on this machine
        data = km.datasets.load_fashion_mnist(allow_download=not smoke, download_timeout=10.0)
        split = data.open_set(num_held_out=4, seed=seed)
        source = f"{data.source} (4 held-out classes; glyphs unavailable: {err})"
    return split, source


def subsample(x, y, per_identity, rng):
    """At most ``per_identity`` seeded samples of each identity."""
    keep = [rng.permutation(np.flatnonzero(y == c))[:per_identity] for c in np.unique(y)]
    keep = np.sort(np.concatenate(keep))
    return x[keep], y[keep]


def gallery_and_queries(labels, gallery_per_identity, new_fraction, rng):
    """Whale-style split: some identities are absent from the gallery ("new individuals")."""
    identities = rng.permutation(np.unique(labels))
    num_new = max(1, int(round(new_fraction * len(identities))))
    new = set(identities[:num_new].tolist())
    gallery, queries = [], []
    for c in identities:
        members = rng.permutation(np.flatnonzero(labels == c))
        if c in new:
            queries.extend(members)
        else:
            gallery.extend(members[:gallery_per_identity])
            queries.extend(members[gallery_per_identity:])
    truth = np.array([NEW if labels[q] in new else labels[q] for q in queries])
    return np.sort(gallery), np.asarray(queries), truth


def whale_map5(emb, labels, gallery, queries, truth, thresholds):
    """MAP@5 for each "new individual" threshold (and never guessing "new"), one search."""
    depth = min(50, len(gallery))
    values, indices = km.nearest_neighbors(emb[queries], emb[gallery], k=depth)
    ranked = labels[gallery][indices]
    curve = np.array(
        [
            km.map_at_k(
                truth, km.predict_labels(values, ranked, k=5, new_label=NEW, new_threshold=t)
            )
            for t in thresholds
        ]
    )
    never_new = km.map_at_k(truth, km.predict_labels(values, ranked, k=5))
    return curve, never_new


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--per-identity",
        type=int,
        default=20,
        help="evaluated samples per held-out identity (small groups, as Shopee)",
    )
    parser.add_argument("--gallery-per-identity", type=int, default=2)
    parser.add_argument(
        "--new-fraction",
        type=float,
        default=0.3,
        help="fraction of held-out identities left out of the gallery",
    )
    parser.add_argument("--output", default="kaggle_retrieval_output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = 1
    os.makedirs(args.output, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    split, source = load_data(args.smoke, args.seed)
    print(f"data source: {source}")

    # 1. Train: backbone + ArcFace on the training identities (the two-input pattern).
    keras.utils.set_random_seed(args.seed)
    backbone = build_backbone(split.x_train.shape[1:], embedding_dim=64)
    head = km.ArcFace(split.num_train_classes, scale=30.0, margin=0.3)
    train_model, embed_model = km.build_models(backbone, head)
    train_model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    train_model.fit(
        [split.x_train, split.y_train], split.y_train, batch_size=128, epochs=args.epochs, verbose=2
    )

    # 2. Embed the held-out identities; half of them tune thresholds, the other half test.
    x, y = subsample(split.x_test, split.y_test, args.per_identity, rng)
    emb = embed_model.predict(x, batch_size=512, verbose=0)
    identities = rng.permutation(np.unique(y))
    val_ids = identities[: len(identities) // 2]
    parts = {"validation": np.isin(y, val_ids), "test": ~np.isin(y, val_ids)}
    print(
        f"held-out identities: {len(val_ids)} for validation, "
        f"{len(identities) - len(val_ids)} for test, {args.per_identity} samples each at most"
    )

    # 3. Product matching: threshold sweep of mean F1 on validation, applied to test.
    thresholds = np.round(np.linspace(-0.2, 0.99, 120), 2)
    sweep = km.match_f1_sweep(
        emb[parts["validation"]], y[parts["validation"]], thresholds=thresholds
    )
    best_t = sweep["best_threshold"]
    test_f1 = km.match_f1(emb[parts["test"]], y[parts["test"]], threshold=best_t)
    test_oracle = km.match_f1_sweep(emb[parts["test"]], y[parts["test"]], thresholds=thresholds)
    print("\n== Product matching (mean per-item F1 of the threshold match sets)")
    print(f"validation: best threshold {best_t:.2f}, F1 {sweep['best_f1']:.4f}")
    print(
        f"test at that threshold: F1 {test_f1:.4f} "
        f"(the test split's own best: {test_oracle['best_f1']:.4f} at "
        f"{test_oracle['best_threshold']:.2f})"
    )

    # 4. Whale identification: MAP@5 with a "new individual" threshold tuned on validation.
    curves, results = {}, {}
    for name, mask in parts.items():
        xe, ye = emb[mask], y[mask]
        gallery, queries, truth = gallery_and_queries(
            ye, args.gallery_per_identity, args.new_fraction, rng
        )
        curves[name], never_new = whale_map5(xe, ye, gallery, queries, truth, thresholds)
        results[name] = dict(
            gallery=len(gallery),
            queries=len(queries),
            new_queries=int(np.sum(truth == NEW)),
            map5_never_new=never_new,
        )
        if name == "test":
            results[name]["retrieval (known identities)"] = km.retrieval_metrics(
                xe[queries[truth != NEW]],
                ye[queries[truth != NEW]],
                xe[gallery],
                ye[gallery],
                ks=(1, 5),
            )
    new_t = float(thresholds[int(np.argmax(curves["validation"]))])
    test_map5 = float(curves["test"][thresholds == new_t][0])
    print("\n== Identification with new individuals (MAP@5)")
    for name in parts:
        r = results[name]
        print(
            f"{name}: gallery {r['gallery']} images, {r['queries']} queries "
            f"({r['new_queries']} of new individuals)"
        )
    print(
        f"validation: best new-individual threshold {new_t:.2f}, "
        f"MAP@5 {curves['validation'].max():.4f}"
    )
    print(
        f"test at that threshold: MAP@5 {test_map5:.4f} "
        f"(never guessing new: {results['test']['map5_never_new']:.4f})"
    )
    print(
        "test, known identities only: "
        + ", ".join(
            f"{k} {v:.4f}" for k, v in results["test"]["retrieval (known identities)"].items()
        )
    )

    summary = {
        "source": source,
        "epochs": args.epochs,
        "match_f1": {
            "threshold": best_t,
            "validation": sweep["best_f1"],
            "test": test_f1,
            "test_best": test_oracle["best_f1"],
            "sweep": dict(zip(thresholds.tolist(), sweep["f1"].tolist())),
        },
        "map@5": {
            "new_threshold": new_t,
            "validation": float(curves["validation"].max()),
            "test": test_map5,
            "splits": results,
            "sweep": {k: dict(zip(thresholds.tolist(), v.tolist())) for k, v in curves.items()},
        },
    }
    path = os.path.join(args.output, "kaggle_retrieval.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nresults written to {path}")
    return summary


if __name__ == "__main__":
    main()
