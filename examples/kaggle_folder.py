"""A Kaggle similarity notebook as a script: image folder + CSV in, submission CSV out.

    python examples/kaggle_folder.py --smoke              # the CI check, under a minute on 2 cores
    python examples/kaggle_folder.py --output out/        # a longer run on more glyphs
    python examples/kaggle_folder.py --imagenet           # ImageNet weights (downloads once)
    python examples/kaggle_folder.py --mixed-precision    # mixed_float16 (use on a GPU)

What a Shopee-style competition gives you is a folder of images and a CSV:

    data/train_images/train_0.png ...   data/train.csv  posting_id,image,label_group
    data/test_images/test_0.png ...     data/test.csv   posting_id,image

and what it wants back is ``submission.csv`` with ``posting_id,matches`` (the space-separated
posting ids of the items showing the same product, the item itself included). Here the dataset
is built offline from rendered glyphs (``km.datasets.load_glyphs``: each character is a
product, each font a photo of it), written to disk as PNG files, so the script runs on a fresh
machine; the test set's labels go to ``data/test_solution.csv`` so the submission can be scored.

The recipe, step by step (see docs/guides/kaggle.md):

1. a ``tf.data`` pipeline reading the CSV and decoding the PNG files, with a validation fold of
   held-out label groups (GroupKFold style: validation products never appear in training);
2. a ``keras.applications`` backbone (MobileNetV3Small; ``weights=None`` offline, ImageNet with
   ``--imagenet``), a GeM -> Dense -> BatchNorm neck, and an ArcFace head fed the labels as a
   second input (``km.build_models``);
3. ``km.EmbeddingEvaluation`` on the validation fold (a ``tf.data.Dataset``) with
   ``task="match_f1"``, feeding ``ModelCheckpoint``;
4. the best checkpoint reloaded with ``km.load_model`` (keeps the optimizer state of
   mixed-precision runs), the match threshold chosen on the validation fold, the test
   submission written with ``km.write_match_submission`` and scored;
5. the embedding model exported as a SavedModel (``km.export_saved_model``) for inference.
"""

import argparse
import contextlib
import csv
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _quiet_stderr():
    """Hide the banners TensorFlow's C++ runtime prints before its logging is configured."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_stderr():
    import tensorflow as tf

    tf.config.list_physical_devices()  # initializes the devices (and their messages) now

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402

SMOKE_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


# --------------------------------------------------------------------------------------------
# 0. The dataset on disk, as Kaggle ships it
# --------------------------------------------------------------------------------------------


def _write_split(folder, prefix, images, labels, names, with_labels):
    os.makedirs(os.path.join(folder, f"{prefix}_images"), exist_ok=True)
    rows = []
    for i, (image, label) in enumerate(zip(images, labels)):
        posting_id = f"{prefix}_{i}"
        file_name = f"{posting_id}.png"
        pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype("uint8")
        keras.utils.save_img(
            os.path.join(folder, f"{prefix}_images", file_name), pixels, scale=False
        )
        label_group = ord(names[label])  # an integer id per product, like Shopee's
        rows.append((posting_id, file_name, label_group))
    header = ["posting_id", "image", "label_group"] if with_labels else ["posting_id", "image"]
    with open(os.path.join(folder, f"{prefix}.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows if with_labels else [r[:2] for r in rows])
    if not with_labels:  # the hidden answer key, used only to score the submission
        with open(os.path.join(folder, f"{prefix}_solution.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["posting_id", "label_group"])
            writer.writerows([(r[0], r[2]) for r in rows])


def _per_class(labels, limit, rng):
    keep = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        keep.extend(rng.permutation(idx)[:limit].tolist())
    return np.sort(np.array(keep))


def build_dataset(folder, smoke, seed):
    """Render glyphs and write train/test image folders and CSV files under ``folder``."""
    if smoke:
        split = km.datasets.load_glyphs(
            characters=SMOKE_CHARACTERS, image_size=32, samples_per_font=1, seed=seed
        )
        limit = 16
    else:
        split = km.datasets.load_glyphs(image_size=64, samples_per_font=2, seed=seed)
        limit = 40
    rng = np.random.default_rng(seed)
    train = _per_class(split.y_train, limit, rng)
    test = _per_class(split.y_test, limit, rng)
    _write_split(
        folder,
        "train",
        split.x_train[train],
        split.y_train[train],
        split.train_names,
        with_labels=True,
    )
    _write_split(
        folder, "test", split.x_test[test], split.y_test[test], split.test_names, with_labels=False
    )
    return f"{len(split.info['fonts'])} fonts, {len(train)} train and {len(test)} test images"


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------------------------
# 1. tf.data pipeline from the CSV
# --------------------------------------------------------------------------------------------


def image_dataset(folder, files, labels, image_size, batch_size, shuffle=False, seed=0):
    """Batches of float32 RGB images in [0, 255] (and labels, when given)."""
    paths = [os.path.join(folder, f) for f in files]

    def load(path):
        image = tf.io.decode_png(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, (image_size, image_size))
        return tf.cast(image, tf.float32)

    if labels is None:
        ds = tf.data.Dataset.from_tensor_slices(paths)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, "int32")))
        if shuffle:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(lambda p, y: (load(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def group_fold(label_groups, fraction, seed):
    """Hold out whole label groups: validation products never appear in training."""
    groups = np.unique(label_groups)
    rng = np.random.default_rng(seed)
    n_val = max(2, int(round(fraction * groups.size)))
    val_groups = set(rng.choice(groups, size=n_val, replace=False).tolist())
    is_val = np.array([g in val_groups for g in label_groups])
    return ~is_val, is_val


# --------------------------------------------------------------------------------------------
# 2. Model: keras.applications backbone, GeM -> Dense -> BatchNorm neck, ArcFace head
# --------------------------------------------------------------------------------------------


def build_backbone(image_size, embedding_dim, imagenet):
    inputs = keras.Input((image_size, image_size, 3), name="images")  # raw pixels, 0..255
    # MobileNetV3Small rescales the pixels itself (include_preprocessing=True).
    base = keras.applications.MobileNetV3Small(
        input_shape=(image_size, image_size, 3),
        include_top=False,
        minimalistic=True,
        weights="imagenet" if imagenet else None,
    )
    if not imagenet:
        # keras.applications uses BatchNorm momentum 0.999: trained from scratch for a few
        # hundred steps, the moving statistics lag far behind the weights and the inference
        # embeddings collapse (EmbeddingEvaluation warns). 0.9 follows them closely enough.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    features = base(inputs)
    pooled = km.GeMPooling2D(name="gem")(features)
    embedding = keras.layers.Dense(embedding_dim, name="neck_dense")(pooled)
    # The neck's BatchNorm centres the embeddings; a lagging moving mean leaves them all
    # pointing the same way at inference, hence momentum 0.9 here too.
    embedding = keras.layers.BatchNormalization(momentum=0.9, name="neck_bn")(embedding)
    return keras.Model(inputs, embedding, name="glyph_net")


def embed(model, ds):
    return np.concatenate([model.predict_on_batch(batch) for batch in ds], axis=0)


def submission_f1(submission_path, solution_path):
    """The competition metric computed from the CSV files alone: mean row-wise F1."""
    truth = {r["posting_id"]: r["label_group"] for r in read_csv(solution_path)}
    members = {}
    for posting_id, group in truth.items():
        members.setdefault(group, set()).add(posting_id)
    scores = []
    for row in read_csv(submission_path):
        predicted = set(row["matches"].split())
        actual = members[truth[row["posting_id"]]]
        scores.append(2 * len(predicted & actual) / (len(predicted) + len(actual)))
    return float(np.mean(scores))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--output", default="kaggle_folder_output")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument(
        "--imagenet",
        action="store_true",
        help="ImageNet weights for the backbone (needs the network once)",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="mixed_float16 (fast on GPUs; slower on CPUs)",
    )
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="XLA (helps on GPUs; several times slower on CPU here)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (6 if args.smoke else 8)
    args.batch_size = args.batch_size or (16 if args.smoke else 64)
    image_size = args.image_size or (32 if args.smoke else 64)
    timings = {}
    start = time.perf_counter()

    def tick(name):
        nonlocal start
        now = time.perf_counter()
        timings[name] = round(now - start, 2)
        start = now

    os.makedirs(args.output, exist_ok=True)
    data = os.path.join(args.output, "data")
    description = build_dataset(data, args.smoke, args.seed)
    print(f"Dataset written to {data}: {description}")
    tick("write_dataset")

    # 1. Read the CSV; a validation fold of whole label groups.
    train_rows = read_csv(os.path.join(data, "train.csv"))
    groups = np.array([int(r["label_group"]) for r in train_rows])
    files = np.array([os.path.join("train_images", r["image"]) for r in train_rows])
    is_train, is_val = group_fold(groups, 0.2, args.seed)
    train_groups = np.unique(groups[is_train])
    class_index = {g: i for i, g in enumerate(train_groups.tolist())}
    y_train = np.array([class_index[g] for g in groups[is_train]])
    train_ds = image_dataset(
        data, files[is_train], y_train, image_size, args.batch_size, shuffle=True, seed=args.seed
    )
    train_ds = train_ds.map(lambda x, y: ((x, y), y))  # labels are the head's second input
    val_ds = image_dataset(data, files[is_val], groups[is_val], image_size, args.batch_size)

    # 2. Model.
    if args.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    keras.utils.set_random_seed(args.seed)
    backbone = build_backbone(image_size, args.embedding_dim, args.imagenet)
    # ArcFace with a fixed margin. Class-size-adaptive margins (the Happywhale/GLR winners'
    # dynamic margins) would replace this head once keras_margins has them.
    head = km.ArcFace(num_classes=len(train_groups), scale=30.0, margin=0.3)
    train_model, embed_model = km.build_models(backbone, head)
    steps = epochs * -(-int(is_train.sum()) // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        1e-4, decay_steps=steps, warmup_target=3e-3, warmup_steps=max(1, steps // 10)
    )
    train_model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.jit_compile,
    )
    tick("build_model")

    # 3. Train with the retrieval metric of the competition on the validation fold.
    checkpoint_path = os.path.join(args.output, "best.keras")
    callbacks = [
        km.EmbeddingEvaluation(
            val_ds,
            embedding_model=embed_model,
            task="match_f1",
            thresholds=np.linspace(0.0, 1.0, 101),
            verbose=0,
        ),
        keras.callbacks.ModelCheckpoint(
            checkpoint_path, monitor="val_match_f1_best_f1", mode="max", save_best_only=True
        ),
    ]
    history = train_model.fit(
        train_ds, epochs=epochs, callbacks=callbacks, verbose=2, shuffle=False
    )  # train_ds shuffles itself
    tick("train")

    # 4. Reload the best checkpoint (as a second notebook would), choose the threshold on the
    #    validation fold, and write the submission for the test set.
    best = km.load_model(checkpoint_path)
    best_embed = km.get_embedding_model(best)
    val_emb = embed(best_embed, val_ds.map(lambda x, y: x))
    sweep = km.match_f1_sweep(val_emb, groups[is_val], thresholds=np.linspace(0.0, 1.0, 101))
    threshold = sweep["best_threshold"]
    test_rows = read_csv(os.path.join(data, "test.csv"))
    test_files = [os.path.join("test_images", r["image"]) for r in test_rows]
    test_emb = embed(best_embed, image_dataset(data, test_files, None, image_size, args.batch_size))
    submission = os.path.join(args.output, "submission.csv")
    km.write_match_submission(
        submission,
        test_emb,
        [r["posting_id"] for r in test_rows],
        threshold=threshold,
        max_matches=50,
        min_matches=2,
    )
    test_f1 = submission_f1(submission, os.path.join(data, "test_solution.csv"))
    tick("threshold_and_submission")

    # 5. SavedModel for inference (float32 embeddings, no keras_margins needed to serve it).
    saved = km.export_saved_model(best, os.path.join(args.output, "saved_model"), overwrite=True)
    served = tf.saved_model.load(saved).signatures["serving_default"]
    probe = next(iter(image_dataset(data, test_files[:8], None, image_size, 8)))
    served_emb = served(images=probe)["embeddings"].numpy()
    export_error = float(np.max(np.abs(served_emb - test_emb[:8])))
    tick("export")

    logged = history.history["val_match_f1_best_f1"]
    print(f"Validation match F1 by epoch: {', '.join(f'{v:.3f}' for v in logged)}")
    print(f"Threshold chosen on validation: {threshold:.2f} (validation F1 {sweep['best_f1']:.3f})")
    print(f"Test F1 of submission.csv: {test_f1:.3f} ({len(test_rows)} rows)")
    print(f"SavedModel: {saved} (max |served - Keras| = {export_error:.1e})")
    print("Timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    summary = {
        "dataset": description,
        "epochs": epochs,
        "image_size": image_size,
        "mixed_precision": args.mixed_precision,
        "jit_compile": args.jit_compile,
        "imagenet": args.imagenet,
        "val_match_f1_by_epoch": logged,
        "threshold": threshold,
        "val_f1": sweep["best_f1"],
        "test_f1": test_f1,
        "export_max_abs_error": export_error,
        "timings_s": timings,
    }
    with open(os.path.join(args.output, "kaggle_folder.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    return summary


if __name__ == "__main__":
    main()
