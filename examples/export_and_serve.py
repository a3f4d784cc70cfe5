"""Train an ArcFace model on digits, export it, and serve it from a fresh plain-TensorFlow process.

The exported SavedModel needs neither keras_margins nor Keras: the serving half of this script
runs in a new Python process that cannot import keras_margins (``python -I -S``, with only the
site-packages directories on ``sys.path``) and uses nothing but ``tf.saved_model.load``.

Usage::

    python examples/export_and_serve.py                 # ~30 epochs, into a temporary folder
    python examples/export_and_serve.py --smoke         # a few epochs, well under a minute
    python examples/export_and_serve.py --output DIR    # keep the artifacts in DIR

Writes ``DIR/saved_model`` (signatures ``serving_default`` and ``classify``) and
``DIR/embedder.tflite``; with tf2onnx installed, also ``DIR/embedder.onnx``.
"""

import argparse
import json
import os
import site
import subprocess
import sys
import tempfile
import textwrap

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401 -- before TensorFlow: no start-up banners

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_margins as km  # noqa: E402
from keras_margins.export import export_onnx, export_saved_model, export_tflite  # noqa: E402

SERVE = textwrap.dedent(
    """
    import json, sys
    site_dirs, model_dir, x_path, examples_dir = sys.argv[1:5]
    sys.path.extend(json.loads(site_dirs))
    try:
        import keras_margins  # noqa: F401
        raise SystemExit("keras_margins should not be importable here")
    except ImportError:
        print("serving process: keras_margins is not importable; using plain TensorFlow")
    sys.path.insert(0, examples_dir)
    import quiet  # noqa: F401 -- examples/quiet.py: TensorFlow without its start-up banners
    import numpy as np
    import tensorflow as tf

    served = tf.saved_model.load(model_dir)
    images = tf.constant(np.load(x_path))
    emb = served.signatures["serving_default"](images=images)["embeddings"].numpy()
    top = served.signatures["classify"](images=images)
    np.set_printoptions(precision=3, suppress=True)
    print("embeddings", emb.shape, emb.dtype, "norms", np.linalg.norm(emb, axis=1)[:4])
    print("first embedding", emb[0, :6], "...")
    print("top-k class ids\\n", top["class_ids"].numpy()[:5])
    print("top-k cosines\\n", top["cosines"].numpy()[:5])
    np.save(x_path.replace(".npy", "_top1.npy"), top["class_ids"].numpy()[:, 0])
    """
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few epochs (< 1 minute)")
    parser.add_argument("--output", default=None, help="folder for the exported artifacts")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y.astype("int32"), test_size=0.3, random_state=0, stratify=y
    )

    backbone = keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(32),
        ],
        name="digits_backbone",
    )
    train_model, embed_model = km.build_models(
        backbone, km.ArcFace(num_classes=10, scale=16.0, margin=0.3)
    )
    train_model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    epochs = 3 if args.smoke else 30
    history = train_model.fit([x_train, y_train], y_train, batch_size=64, epochs=epochs, verbose=0)
    print(
        f"trained {epochs} epochs: loss {history.history['loss'][0]:.3f} -> "
        f"{history.history['loss'][-1]:.3f}"
    )

    output = args.output or tempfile.mkdtemp(prefix="keras_margins_export_")
    os.makedirs(output, exist_ok=True)
    saved = export_saved_model(
        train_model, os.path.join(output, "saved_model"), top_k=args.top_k, overwrite=True
    )
    lite = export_tflite(train_model, os.path.join(output, "embedder.tflite"), overwrite=True)
    print("SavedModel:", saved)
    print("TFLite:    ", lite, f"({os.path.getsize(lite)} bytes)")
    try:
        onnx_path = export_onnx(train_model, os.path.join(output, "embedder.onnx"), overwrite=True)
        print("ONNX:      ", onnx_path)
    except Exception as error:  # optional: tf2onnx missing or unable to convert
        print("ONNX:       skipped:", error)

    x_path = os.path.join(output, "test_images.npy")
    np.save(x_path, x_test)
    site_dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            SERVE,
            json.dumps(site_dirs),
            saved,
            x_path,
            os.path.dirname(os.path.abspath(__file__)),
        ],
        cwd=output,
        env=env,
        check=True,
    )
    top1 = np.load(x_path.replace(".npy", "_top1.npy"))
    print(f"served top-1 accuracy on {len(y_test)} held-out digits: {np.mean(top1 == y_test):.3f}")
    expected = keras.ops.convert_to_numpy(embed_model(x_test[:3]))
    print("Keras embedding model, first embedding:", np.round(expected[0, :6], 3), "...")


if __name__ == "__main__":
    main()
