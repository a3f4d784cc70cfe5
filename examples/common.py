"""What the examples share: one backbone, every training method, open-set evaluation.

Every method trains the same small CNN for the same number of steps with the same optimizer;
only the head (or loss) differs. Evaluation always uses the L2-normalized embeddings of images
of identities that were never trained on.
"""

import math
import sys
import time

import keras
import numpy as np

import keras_margins as km

#: The cosine heads use one scale, so that they differ only by their margin.
SCALE = 30.0

MARGIN_HEADS = {
    "normsoftmax": lambda c: km.NormSoftmax(c, scale=SCALE),
    "l2softmax": lambda c: km.L2Softmax(c),
    "sphereface": lambda c: km.SphereFace(c),
    "cosface": lambda c: km.CosFace(c, scale=SCALE, margin=0.35),
    "arcface": lambda c: km.ArcFace(c, scale=SCALE, margin=0.5),
    "subcenter-arcface": lambda c: km.ArcFace(c, scale=SCALE, margin=0.5, sub_centers=3),
    "svsoftmax": lambda c: km.SVSoftmax(c, scale=SCALE, t=1.2, margin=0.35, margin_type="cosine"),
    "combined": lambda c: km.CombinedMargin(c, scale=SCALE, m1=1.0, m2=0.3, m3=0.2),
    "adaface": lambda c: km.AdaFace(c, scale=SCALE, margin=0.4, h=0.333),
    "magface": lambda c: km.MagFace(c, scale=SCALE),
    # The paper's norm range (10 to 110) is for ResNet face features; this CNN's are near 1.
    "magface-scaled": lambda c: km.MagFace(c, scale=SCALE, l_a=0.5, u_a=1.5, lambda_g=5.0),
    "curricularface": lambda c: km.CurricularFace(c, scale=SCALE, margin=0.5),
    "elasticface": lambda c: km.ElasticFace(c, scale=SCALE, margin=0.5, sigma=0.05, seed=0),
    "elasticface-plus": lambda c: km.ElasticFace(
        c, scale=SCALE, margin=0.5, sigma=0.0175, plus=True, seed=0
    ),
    "adacos": lambda c: km.AdaCos(c),
    "adacos-dynamic": lambda c: km.AdaCos(c, dynamic=True),
}

METHODS = ["softmax", *MARGIN_HEADS, "center", "triplet"]

DESCRIPTIONS = {
    "softmax": "Dense + softmax (no normalization)",
    "normsoftmax": f"NormSoftmax s={SCALE:g}",
    "l2softmax": "L2-Softmax, alpha = paper's bound (p=0.9)",
    "sphereface": "SphereFace m=4, lambda annealing, ||x|| scale",
    "cosface": f"CosFace s={SCALE:g} m=0.35",
    "arcface": f"ArcFace s={SCALE:g} m=0.5",
    "subcenter-arcface": f"sub-center ArcFace K=3 s={SCALE:g} m=0.5",
    "svsoftmax": f"SV-AM-Softmax s={SCALE:g} m=0.35 t=1.2",
    "combined": f"CombinedMargin s={SCALE:g} (1, 0.3, 0.2)",
    "adaface": f"AdaFace s={SCALE:g} m=0.4 h=0.333",
    "magface": f"MagFace s={SCALE:g}, margins 0.45-0.8 over norms 10-110, lambda_g 35",
    "magface-scaled": f"MagFace s={SCALE:g}, margins 0.45-0.8 over norms 0.5-1.5, lambda_g 5",
    "curricularface": f"CurricularFace s={SCALE:g} m=0.5",
    "elasticface": f"ElasticFace-Arc s={SCALE:g} m=0.5 sigma=0.05",
    "elasticface-plus": f"ElasticFace-Arc+ s={SCALE:g} m=0.5 sigma=0.0175",
    "adacos": "AdaCos, fixed scale sqrt(2) log(C-1)",
    "adacos-dynamic": "AdaCos, dynamic scale",
    "center": "softmax + center loss (weight 0.003, alpha 0.5)",
    "triplet": "triplet, semi-hard mining (margin 1.0), P x K batches",
}


def build_backbone(input_shape, embedding_dim=64, name="cnn"):
    """A small CNN: three conv blocks and a linear embedding layer."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(embedding_dim),
        ],
        name=name,
    )


def _cross_entropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train_method(
    method,
    x_train,
    y_train,
    num_classes,
    epochs=3,
    batch_size=128,
    learning_rate=3e-3,
    embedding_dim=64,
    seed=0,
    verbose=2,
):
    """Train one method; returns ``(embedding_model, extras)``.

    ``embedding_model`` maps images to L2-normalized float32 embeddings. ``extras`` holds the
    history, the training time, and the head or training model where there is one.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    keras.utils.set_random_seed(seed)
    backbone = build_backbone(x_train.shape[1:], embedding_dim)
    steps = math.ceil(len(x_train) / batch_size)
    optimizer = keras.optimizers.Adam(learning_rate)
    start = time.perf_counter()
    extras = {}

    if method in MARGIN_HEADS:
        head = MARGIN_HEADS[method](num_classes)
        train_model, embed_model = km.build_models(backbone, head)
        train_model.compile(optimizer=optimizer, loss=_cross_entropy())
        history = train_model.fit(
            [x_train, y_train], y_train, epochs=epochs, batch_size=batch_size, verbose=verbose
        )
        extras.update(head=head, train_model=train_model)
    elif method in ("softmax", "center"):
        images = keras.Input(x_train.shape[1:])
        labels = keras.Input((), dtype="int32")
        features = backbone(images)
        if method == "center":
            features = km.CenterLoss(num_classes, alpha=0.5, weight=0.003)([features, labels])
        logits = keras.layers.Dense(num_classes)(features)
        train_model = keras.Model([images, labels], logits)
        train_model.compile(optimizer=optimizer, loss=_cross_entropy())
        history = train_model.fit(
            [x_train, y_train], y_train, epochs=epochs, batch_size=batch_size, verbose=verbose
        )
        embed_model = keras.Model(
            images, keras.layers.UnitNormalization(dtype="float32")(backbone(images))
        )
        extras.update(train_model=train_model)
    else:  # triplet
        images = keras.Input(x_train.shape[1:])
        embed_model = keras.Model(
            images, keras.layers.UnitNormalization(dtype="float32")(backbone(images))
        )
        embed_model.compile(optimizer=optimizer, loss=km.TripletSemiHardLoss(margin=1.0))
        # P x K batches of about `batch_size`: K = 4 samples per identity when there are enough
        # identities (Hermans et al.), more per identity when there are few classes.
        p = min(len(np.unique(y_train)), max(2, batch_size // 4))
        sampler = km.PKSampler(y_train, p=p, k=max(2, batch_size // p), seed=seed)
        # Each epoch iterates the dataset again and draws new P x K batches.
        history = embed_model.fit(
            sampler.dataset(x_train, y_train, num_batches=steps),
            epochs=epochs,
            verbose=verbose,
            shuffle=False,  # the sampler draws the batches; Keras would warn it ignores shuffle
        )
    extras["history"] = history.history
    extras["train_seconds"] = time.perf_counter() - start
    return embed_model, extras


def load_fashion_open_set(train_samples, test_samples, seed=0, split_seed=1, allow_download=True):
    """Fashion-MNIST with 3 classes held out, then a seeded sub-sample of each side.

    ``split_seed=1`` holds out Coat, Sneaker and Bag (0 would hold out the three look-alike
    tops Pullover, Coat and Shirt). Returns ``(split, source, (x_train, y_train),
    (x_test, y_test))`` where ``split`` is the full :class:`keras_margins.datasets.OpenSetSplit`.
    """
    data = km.datasets.load_fashion_mnist(allow_download=allow_download, download_timeout=10.0)
    if data.source == "digits":
        warn_fallback(data.info.get("fallback_reasons", {}), allow_download)
    split = data.open_set(num_held_out=3, seed=split_seed)
    rng = np.random.default_rng(seed)
    train = rng.permutation(len(split.y_train))[:train_samples]
    test = rng.permutation(len(split.y_test))[:test_samples]
    return (
        split,
        data.source,
        (split.x_train[train], split.y_train[train]),
        (split.x_test[test], split.y_test[test]),
    )


def warn_fallback(reasons, allow_download=True):
    """Say loudly, on stdout and stderr, that Fashion-MNIST was not found and why."""
    lines = [
        "Fashion-MNIST is NOT available: this run uses scikit-learn's 8x8 digits instead, "
        "so its numbers are not Fashion-MNIST's."
    ]
    if not allow_download:
        lines.append("  keras: not tried (no download in this mode)")
    for source, reason in reasons.items():
        lines.append(f"  {source}: {reason}")
    lines.append(
        "  To get it: run once with internet access (Keras downloads it to "
        "~/.keras/datasets), or `sudo apt-get install -y dataset-fashion-mnist`."
    )
    banner = "\n".join(["!" * 78, *("!! " + line for line in lines), "!" * 78])
    print(banner, flush=True)
    print(banner, file=sys.stderr, flush=True)


def load_small_fashion_open_set(smoke, seed, training="training on"):
    """:func:`load_fashion_open_set` at the sizes the small examples use, with a printed summary.

    21 000 training and 6 000 held-out images (1 500 and 600 with ``smoke``, which also never
    downloads). ``training`` words the summary line ("training on", "pairs from"). Returns
    ``(num_train_classes, x_train, y_train, x_test, y_test)``.
    """
    split, source, (x_train, y_train), (x_test, y_test) = load_fashion_open_set(
        1500 if smoke else 21000, 600 if smoke else 6000, seed=seed, allow_download=not smoke
    )
    names = ", ".join(split.test_names) if len(split.test_names) else "3 classes"
    print(
        f"data source: {source}; {training} {split.num_train_classes} training classes "
        f"({len(x_train)} images); verifying on held-out {names} ({len(x_test)} images)"
    )
    return split.num_train_classes, x_train, y_train, x_test, y_test


def gallery_probe_split(labels, seed=0):
    """One seeded gallery sample per identity; every other sample is a probe."""
    rng = np.random.default_rng(seed)
    gallery = []
    for c in np.unique(labels):
        gallery.append(rng.choice(np.flatnonzero(labels == c)))
    gallery = np.sort(np.asarray(gallery))
    probes = np.setdiff1d(np.arange(len(labels)), gallery)
    return gallery, probes


def evaluate_open_set(embed_model, x_test, y_test, num_pairs=6000, seed=0, batch_size=512):
    """Verification (10-fold accuracy, AUC, EER, TAR@FAR) and rank-1 identification."""
    emb = embed_model.predict(x_test, batch_size=batch_size, verbose=0)
    report = km.verify_embeddings(emb, y_test, num_pairs=num_pairs, seed=seed)
    gallery, probes = gallery_probe_split(y_test, seed=seed)
    rank1 = km.rank_k_accuracy(emb[probes], y_test[probes], emb[gallery], y_test[gallery], k=1)
    result = {
        "accuracy": report.accuracy,
        "accuracy_std": report.accuracy_std,
        "auc": report.auc,
        "eer": report.eer,
        "rank1": rank1,
    }
    for far, tar in report.tar_at_far.items():
        result[f"tar@far={far:.0e}"] = tar
    return result, report, emb
