"""Export and serving: SavedModel, TFLite, ONNX of the embedding model; .keras round trips."""

import json
import os
import site
import subprocess
import sys
import textwrap
import traceback

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_margins as km
from keras_margins.export import (
    export_onnx,
    export_saved_model,
    export_tflite,
    get_embedding_model,
)
from tests.helpers import load_digits_split

NUM_CLASSES = 10
TOP_K = 3


def _backbone(seed=0, name="backbone"):
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(32, activation="relu", kernel_initializer=init),
            keras.layers.Dense(16, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)),
        ],
        name=name,
    )


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _np_embeddings(features):
    f = np.asarray(features, dtype=np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def trained():
    """One backbone + ArcFace model trained briefly on digits, shared by the export tests."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(7)
    x_train, x_test, y_train, y_test = load_digits_split()
    backbone = _backbone()
    head = km.ArcFace(num_classes=NUM_CLASSES, scale=16.0, margin=0.3)
    train_model, embed_model = km.build_models(backbone, head)
    _compile(train_model)
    history = train_model.fit(
        [x_train, y_train], y_train, batch_size=64, epochs=4, verbose=0, shuffle=False
    )
    return {
        "train_model": train_model,
        "embed_model": embed_model,
        "backbone": backbone,
        "head": head,
        "x": x_test[:200],
        "y": y_test[:200],
        "loss": history.history["loss"],
    }


@pytest.fixture(scope="module")
def saved_model_dir(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "digits_embedder"
    return export_saved_model(trained["train_model"], str(path), top_k=TOP_K)


@pytest.fixture(scope="module")
def tflite_path(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "embed.tflite"
    return export_tflite(trained["train_model"], str(path))


# ---------------------------------------------------------------------------- embedding model
def test_training_actually_learned(trained):
    loss = trained["loss"]
    assert loss[-1] < 0.7 * loss[0]


def test_get_embedding_model_cuts_the_head(trained):
    embed = get_embedding_model(trained["train_model"])
    assert len(embed.inputs) == 1 and tuple(embed.inputs[0].shape) == (None, 64)
    x = trained["x"]
    got = keras.ops.convert_to_numpy(embed(x))
    assert got.dtype == np.float32
    expected = _np_embeddings(keras.ops.convert_to_numpy(trained["backbone"](x)))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # The build_models embedding model is the same function.
    np.testing.assert_allclose(got, trained["embed_model"](x), atol=1e-6, rtol=0)
    raw = get_embedding_model(trained["train_model"], normalize=False)(x)
    np.testing.assert_array_equal(raw, trained["backbone"](x))


def test_get_embedding_model_accepts_backbone_and_embedding_model(trained):
    x = trained["x"][:20]
    expected = trained["embed_model"](x)
    for model in (trained["backbone"], trained["embed_model"]):
        np.testing.assert_allclose(get_embedding_model(model)(x), expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- SavedModel
def test_saved_model_matches_keras_any_batch_size(trained, saved_model_dir):
    loaded = tf.saved_model.load(saved_model_dir)
    assert set(loaded.signatures.keys()) == {"serving_default", "embed", "classify"}
    serve = loaded.signatures["serving_default"]
    x = trained["x"]
    expected = keras.ops.convert_to_numpy(trained["embed_model"](x))
    for batch in (1, 7, len(x)):
        out = serve(images=tf.constant(x[:batch]))
        assert set(out) == {"embeddings"}
        emb = out["embeddings"].numpy()
        assert emb.dtype == np.float32 and emb.shape == (batch, 16)
        assert np.max(np.abs(emb - expected[:batch])) < 1e-5
    norms = np.linalg.norm(serve(images=tf.constant(x))["embeddings"].numpy(), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_classify_signature_matches_numpy_top_k(trained, saved_model_dir):
    loaded = tf.saved_model.load(saved_model_dir)
    x = trained["x"]
    out = loaded.signatures["classify"](images=tf.constant(x))
    ids, cosines = out["class_ids"].numpy(), out["cosines"].numpy()
    assert ids.dtype == np.int32 and cosines.dtype == np.float32
    assert ids.shape == cosines.shape == (len(x), TOP_K)

    # Independent float64 reference: normalized backbone features against normalized centres.
    feats = _np_embeddings(keras.ops.convert_to_numpy(trained["backbone"](x)))
    w = keras.ops.convert_to_numpy(trained["head"].kernel).astype(np.float64)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    cos = feats @ w
    ref_ids = np.argsort(-cos, axis=1, kind="stable")[:, :TOP_K]
    ref_cos = np.take_along_axis(cos, ref_ids, axis=1)
    np.testing.assert_allclose(cosines, ref_cos, atol=1e-5, rtol=0)
    gaps = np.diff(np.sort(cos, axis=1)[:, ::-1][:, : TOP_K + 1], axis=1)
    clear = np.all(np.abs(gaps) > 1e-5, axis=1)  # rows without near-ties
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(ids[clear], ref_ids[clear])
    # The top-1 class is the trained classifier's prediction: far better than chance.
    assert np.mean(ids[:, 0] == trained["y"]) > 0.8


def test_classify_with_sub_centers_takes_max_over_each_class(tmp_path):
    keras.utils.set_random_seed(3)
    head = km.ArcFace(num_classes=6, sub_centers=3, scale=8.0)
    train_model, _ = km.build_models(_backbone(seed=5), head)
    path = export_saved_model(train_model, str(tmp_path / "sub"), top_k=6)
    x = load_digits_split()[1][:50]
    out = tf.saved_model.load(path).signatures["classify"](images=tf.constant(x))

    feats = _np_embeddings(keras.ops.convert_to_numpy(get_embedding_model(train_model)(x)))
    w = keras.ops.convert_to_numpy(head.kernel).astype(np.float64)
    w = w / np.linalg.norm(w, axis=0, keepdims=True)
    cos_cols = feats @ w  # column c * K + k
    ref = np.empty((len(x), 6))
    for c in range(6):  # a class's cosine: the best of its K sub-centres
        ref[:, c] = np.max(cos_cols[:, c * 3 : c * 3 + 3], axis=1)
    np.testing.assert_allclose(out["cosines"].numpy(), np.sort(ref, axis=1)[:, ::-1], atol=1e-5)
    # The ranking is the reference's up to near-ties (no dependence on float32 rounding).
    _np_topk_check(ref, out["class_ids"].numpy(), out["cosines"].numpy(), 6)


_CHILD = textwrap.dedent(
    """
    import json, sys
    site_dirs, model_dir, x_path, out_path = sys.argv[1:5]
    # -I -S: no user site, no .pth files (so no editable install), no cwd on sys.path.
    sys.path.extend(json.loads(site_dirs))
    try:
        import keras_margins  # noqa: F401
        print("KERAS_MARGINS_IMPORTABLE")
        sys.exit(3)
    except ImportError:
        pass
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(model_dir)
    x = tf.constant(np.load(x_path))
    emb = loaded.signatures["serving_default"](images=x)["embeddings"]
    top = loaded.signatures["classify"](images=x)
    np.savez(out_path, embeddings=emb.numpy(), class_ids=top["class_ids"].numpy(),
             cosines=top["cosines"].numpy())
    print("keras_margins" in sys.modules, emb.dtype.name)
    """
)


def test_saved_model_serves_in_fresh_process_without_keras_margins(
    trained, saved_model_dir, tmp_path
):
    x = trained["x"][:33]
    x_path, out_path = tmp_path / "x.npy", tmp_path / "out.npz"
    np.save(x_path, x)
    site_dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _CHILD,
            json.dumps(site_dirs),
            saved_model_dir,
            str(x_path),
            str(out_path),
        ],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False float32"
    served = np.load(out_path)
    expected = keras.ops.convert_to_numpy(trained["embed_model"](x))
    assert np.max(np.abs(served["embeddings"] - expected)) < 1e-5
    in_process = tf.saved_model.load(saved_model_dir).signatures["classify"](images=tf.constant(x))
    np.testing.assert_array_equal(served["class_ids"], in_process["class_ids"].numpy())
    np.testing.assert_allclose(served["cosines"], in_process["cosines"].numpy(), atol=1e-6)


# ---------------------------------------------------------------------------- TFLite and ONNX
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_matches_keras(trained, tflite_path):
    interpreter = tf.lite.Interpreter(model_path=tflite_path)
    runner = interpreter.get_signature_runner("serving_default")
    x = trained["x"]
    expected = keras.ops.convert_to_numpy(trained["embed_model"](x))
    for batch in (1, 13, len(x)):
        emb = runner(images=x[:batch])["embeddings"]
        assert emb.dtype == np.float32 and emb.shape == (batch, 16)
        assert np.max(np.abs(emb - expected[:batch])) < 1e-5


def test_onnx_matches_keras(trained, tmp_path):
    try:
        import onnxruntime
        import tf2onnx  # noqa: F401
    except Exception as error:  # the converter's own import error
        pytest.skip(f"tf2onnx/onnxruntime unavailable with this TensorFlow: {error!r}")
    try:
        path = export_onnx(trained["train_model"], str(tmp_path / "embed.onnx"))
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        if not any("tf2onnx" in frame.filename for frame in frames):
            raise  # a failure of ours, not the converter's
        pytest.skip(f"tf2onnx cannot convert with TensorFlow {tf.__version__}: {error!r}")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["embeddings"]
    x = trained["x"]
    expected = keras.ops.convert_to_numpy(trained["embed_model"](x))
    for batch in (1, len(x)):
        (emb,) = session.run(None, {"images": x[:batch]})
        assert emb.dtype == np.float32
        assert np.max(np.abs(emb - expected[:batch])) < 1e-5


# ---------------------------------------------------------------------------- mixed precision
def test_mixed_precision_model_exports_float32_embeddings(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    keras.utils.set_random_seed(11)
    x_train, x_test, y_train, _ = load_digits_split()
    backbone = _backbone(seed=2)
    train_model, _ = km.build_models(backbone, km.ArcFace(num_classes=NUM_CLASSES, scale=16.0))
    _compile(train_model).fit([x_train, y_train], y_train, batch_size=64, epochs=1, verbose=0)
    assert keras.backend.standardize_dtype(backbone(x_test[:4]).dtype) == "float16"
    keras.config.set_dtype_policy("float32")

    path = export_saved_model(train_model, str(tmp_path / "mp"))
    emb = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x_test))
    emb = emb["embeddings"].numpy()
    assert emb.dtype == np.float32 and np.all(np.isfinite(emb))
    keras_emb = keras.ops.convert_to_numpy(get_embedding_model(train_model)(x_test))
    assert keras_emb.dtype == np.float32
    assert np.max(np.abs(emb - keras_emb)) < 1e-5
    # The float16 features, normalized in float64, agree to float32 precision.
    ref = _np_embeddings(keras.ops.convert_to_numpy(backbone(x_test)))
    np.testing.assert_allclose(emb, ref, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- .keras round trips
def _state_model(kind, backbone):
    images = keras.Input((64,), name="pixels")
    labels = keras.Input((), dtype="int32", name="labels")
    features = backbone(images)
    if kind == "ArcFace":
        logits = km.ArcFace(num_classes=NUM_CLASSES, scale=16.0, margin=0.3)([features, labels])
    elif kind == "SphereFace":
        logits = km.SphereFace(num_classes=NUM_CLASSES)([features, labels])
    elif kind == "CenterLoss":
        passed = km.CenterLoss(num_classes=NUM_CLASSES)([features, labels])
        logits = km.ArcFace(num_classes=NUM_CLASSES, scale=16.0)([passed, labels])
    else:  # pragma: no cover
        raise AssertionError(kind)
    return _compile(keras.Model([images, labels], logits))


@pytest.mark.parametrize("kind", ["ArcFace", "SphereFace", "CenterLoss"])
def test_training_model_round_trips_and_continues_identically(kind, tmp_path):
    if getattr(km, kind, None) is None:
        pytest.skip(f"keras_margins.{kind} is not available yet")
    keras.utils.set_random_seed(5)
    x_train, x_test, y_train, _ = load_digits_split()
    x_train, y_train = x_train[:512], y_train[:512]
    backbone = _backbone(seed=9)
    model = _state_model(kind, backbone)
    model.fit([x_train, y_train], y_train, batch_size=64, epochs=1, verbose=0, shuffle=False)

    if kind != "ArcFace":  # the state under test (step counter, centres) is layer state
        assert model.non_trainable_weights
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [
        type(layer).__name__ for layer in model.layers
    ]
    for a, b in zip(model.weights, loaded.weights):  # trainable and state (counters, centres)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_array_equal(
        model.predict([x_test, np.zeros(len(x_test), "int32")], verbose=0),
        loaded.predict([x_test, np.zeros(len(x_test), "int32")], verbose=0),
    )

    for m in (model, loaded):
        m.fit([x_train, y_train], y_train, batch_size=64, epochs=1, verbose=0, shuffle=False)
    assert int(loaded.optimizer.iterations.numpy()) == 2 * (512 // 64)
    # Same state, same data order, same process: bit-identical weights and optimizer slots.
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))

    # The embedding model is found through the state layers, and it is the backbone's output.
    embed = get_embedding_model(loaded)
    inner = [layer for layer in loaded.layers if isinstance(layer, keras.Model)][0]
    np.testing.assert_allclose(
        embed(x_test), _np_embeddings(keras.ops.convert_to_numpy(inner(x_test))), atol=1e-6
    )


# ---------------------------------------------------------------------------- bad input
class _Exploding(keras.layers.Layer):
    """A layer that fails when traced for export once ``armed`` (a failure in mid-export)."""

    armed = False

    def call(self, x):
        if self.armed:
            raise RuntimeError("deliberate failure while tracing")
        return x


def _listing(folder):
    return sorted(os.listdir(folder))


def test_no_identifiable_embedding_output_raises():
    x = keras.Input((8,))
    seq = keras.Model(x, keras.layers.Reshape((2, 4))(x))
    with pytest.raises(ValueError, match="no identifiable embedding output"):
        get_embedding_model(seq)
    two = keras.Model(x, [keras.layers.Dense(3)(x), keras.layers.Dense(2)(x)])
    with pytest.raises(ValueError, match="no identifiable embedding output"):
        get_embedding_model(two)
    ints = keras.Model(x, keras.ops.argmax(x, axis=-1, keepdims=True))
    with pytest.raises(ValueError, match="no identifiable embedding output"):
        get_embedding_model(ints)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional graph"):
        get_embedding_model(Subclassed())
    with pytest.raises(ValueError, match="must be a Keras model"):
        get_embedding_model(keras.layers.Dense(3))

    # Embeddings that depend on the labels cannot be served without labels.
    labels = keras.Input((), dtype="int32")
    mixed = keras.layers.Concatenate()(
        [keras.layers.Dense(4)(x), keras.ops.cast(keras.ops.expand_dims(labels, -1), "float32")]
    )
    leaky = keras.Model([x, labels], km.ArcFace(num_classes=3)([mixed, labels]))
    with pytest.raises(ValueError, match="depend on the labels"):
        get_embedding_model(leaky)


def test_bad_arguments_raise_before_writing(trained, tmp_path):
    model, target = trained["train_model"], tmp_path / "out" / "model"
    with pytest.raises(ValueError, match="top_k"):
        export_saved_model(model, str(target), top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        export_saved_model(model, str(target), top_k=NUM_CLASSES + 1)
    with pytest.raises(ValueError, match="top_k"):
        export_saved_model(trained["backbone"], str(target), top_k=2)  # no head to classify
    with pytest.raises(ValueError, match="normalize"):
        export_saved_model(model, str(target), normalize="yes")
    with pytest.raises(ValueError, match="overwrite"):
        export_saved_model(model, str(target), overwrite=1)
    with pytest.raises(ValueError, match="head"):
        export_saved_model(model, str(target), head=keras.layers.Dense(3))
    assert _listing(tmp_path) == []


def test_existing_path_needs_overwrite_and_is_replaced_whole(trained, tmp_path):
    model, x = trained["train_model"], trained["x"][:10]
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_saved_model(model, str(target))
    assert _listing(target) == ["keep.txt"] and _listing(tmp_path) == ["model"]

    # overwrite=True replaces the directory whole (no stale files mixed in).
    export_saved_model(model, str(target), normalize=False, overwrite=True)
    assert "keep.txt" not in _listing(target) and "saved_model.pb" in _listing(target)
    emb = tf.saved_model.load(str(target)).signatures["serving_default"](images=tf.constant(x))
    raw = keras.ops.convert_to_numpy(trained["backbone"](x))
    assert np.max(np.abs(emb["embeddings"].numpy() - raw)) < 1e-5  # normalize=False
    assert _listing(tmp_path) == ["model"]

    # An existing empty directory is fine; an existing file needs overwrite.
    empty = tmp_path / "empty"
    empty.mkdir()
    export_saved_model(trained["backbone"], str(empty))
    assert "saved_model.pb" in _listing(empty)
    lite = tmp_path / "m.tflite"
    lite.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        export_tflite(model, str(lite))
    assert lite.read_bytes() == b"old"


def test_failure_mid_export_leaves_nothing_behind(tmp_path):
    x = keras.Input((64,), name="pixels")
    bomb = _Exploding()
    model = keras.Model(x, keras.layers.Dense(8)(bomb(x)))
    bomb.armed = True
    fresh = tmp_path / "deep" / "new_model"
    with pytest.raises(RuntimeError, match="deliberate failure"):
        export_saved_model(model, str(fresh))
    assert _listing(tmp_path) == []  # not even the parent folder it had to create

    existing = tmp_path / "old_model"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    with pytest.raises(RuntimeError, match="deliberate failure"):
        export_saved_model(model, str(existing), overwrite=True)
    with pytest.raises(RuntimeError, match="deliberate failure"):
        export_tflite(model, str(tmp_path / "m.tflite"))
    assert _listing(tmp_path) == ["old_model"] and _listing(existing) == ["keep.txt"]


@keras.saving.register_keras_serializable(package="keras_margins")
class _ExportTestPassThrough(keras.layers.Layer):
    """Stands for a package state layer (center loss): [embeddings, labels] -> embeddings."""

    def call(self, inputs):
        embeddings, labels = inputs
        return embeddings + 0.0 * keras.ops.cast(keras.ops.expand_dims(labels, -1), "float32")


def test_embedding_output_steps_over_package_pass_through_layers():
    x = keras.Input((64,), name="pixels")
    labels = keras.Input((), dtype="int32", name="labels")
    dense = keras.layers.Dense(8)
    features = dense(x)
    passed = _ExportTestPassThrough()([features, labels])
    images = load_digits_split()[1][:20]
    expected = _np_embeddings(keras.ops.convert_to_numpy(dense(images)))

    # With a margin head after the pass-through layer ...
    with_head = keras.Model([x, labels], km.ArcFace(num_classes=4)([passed, labels]))
    # ... and with only the package layer in front of a plain softmax classifier.
    plain = keras.Model([x, labels], keras.layers.Dense(4)(passed))
    for model in (with_head, plain):
        embed = get_embedding_model(model)
        assert [t.name for t in embed.inputs] == ["pixels"]
        np.testing.assert_allclose(embed(images), expected, atol=1e-6, rtol=0)


def _tree(folder):
    return sorted(
        os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
    )


def test_export_never_replaces_the_working_directory_or_its_parents(tmp_path, monkeypatch):
    # Issue 12: export_saved_model(model, "", overwrite=True) renamed the current directory
    # aside and deleted it. Everything runs inside tmp_path, so even the old code could only
    # delete the throwaway folder.
    work = tmp_path / "project" / "notebooks"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("precious")
    (tmp_path / "project" / "data.csv").write_text("precious")
    monkeypatch.chdir(work)
    backbone = _backbone()
    before = _tree(tmp_path)
    targets = [
        "",
        ".",
        "./",
        "..",
        "../..",
        str(work),
        str(tmp_path),
        os.sep,
        os.path.join(str(work), "sub", ".."),
    ]
    for target in targets:
        for exporter in (export_saved_model, export_tflite, export_onnx):
            with pytest.raises(ValueError, match="current directory or one of its parents"):
                exporter(backbone, target, overwrite=True)
    assert _tree(tmp_path) == before
    with pytest.raises(TypeError, match="path"):
        export_saved_model(backbone, None)

    # A single-file export never replaces a directory, a directory export never a file.
    (work / "m.tflite").mkdir()
    (work / "m.tflite" / "keep.txt").write_text("precious")
    (work / "model").write_text("precious")
    for exporter, target in (
        (export_tflite, "m.tflite"),
        (export_onnx, "m.tflite"),
        (export_saved_model, "model"),
    ):
        with pytest.raises(ValueError, match="never replaces"):
            exporter(backbone, target, overwrite=True)
    assert (work / "m.tflite" / "keep.txt").read_text() == "precious"
    assert (work / "model").read_text() == "precious"
    if hasattr(os, "mkfifo"):
        os.mkfifo(work / "pipe")
        with pytest.raises(ValueError, match="special file"):
            export_tflite(backbone, "pipe", overwrite=True)

    # A relative path below the working directory is fine, and a symlink to the working
    # directory is replaced as a link: its target is untouched.
    out = export_tflite(backbone, os.path.join("exports", "embed.tflite"))
    assert out == str(work / "exports" / "embed.tflite") and os.path.getsize(out) > 0
    os.symlink(str(work), str(tmp_path / "link"))
    export_tflite(backbone, str(tmp_path / "link"), overwrite=True)
    assert os.path.isfile(tmp_path / "link") and (work / "notes.txt").read_text() == "precious"


def _np_topk_check(cosines_ref, class_ids, cosines, k, tol=1e-5):
    """Returned classes are a top-k of the float64 reference cosines (up to near-ties)."""
    for ref, ids, got in zip(cosines_ref, class_ids, cosines):
        np.testing.assert_allclose(ref[ids], np.sort(ref)[::-1][:k], atol=tol, rtol=0)
        np.testing.assert_allclose(got, ref[ids], atol=tol, rtol=0)


def test_head_not_in_model_raises_and_partial_fc_classifies(tmp_path):
    # Issue 12: head=pfc.to_head() (a copy, not in the model) exported [images, labels] ->
    # logits as "embeddings": an 8-dim backbone with 8 classes passed the shape check.
    images = load_digits_split()[1][:12]
    x = keras.Input((64,), name="pixels")
    labels = keras.Input((), dtype="int32", name="labels")
    dense = keras.layers.Dense(8)
    pfc = km.PartialFC(km.ArcFace(num_classes=8), sample_rate=0.5, seed=0)
    model = keras.Model([x, labels], pfc([dense(x), labels]))
    stranger = pfc.to_head()
    for call in (
        lambda: get_embedding_model(model, head=stranger),
        lambda: export_saved_model(model, str(tmp_path / "a"), head=stranger, top_k=2),
        lambda: export_tflite(model, str(tmp_path / "a.tflite"), head=stranger),
    ):
        with pytest.raises(ValueError, match="not in `model`.*head=pfc"):
            call()
    arc_model, _ = km.build_models(_backbone(), km.ArcFace(num_classes=5))
    with pytest.raises(ValueError, match="not in `model`"):
        get_embedding_model(arc_model, head=km.ArcFace(num_classes=5))
    assert _listing(tmp_path) == []

    # The supported route: the PartialFC layer itself (found automatically, or as head=).
    features = keras.ops.convert_to_numpy(dense(images)).astype(np.float64)
    expected = _np_embeddings(features)
    centres = keras.ops.convert_to_numpy(pfc.kernel).astype(np.float64)
    ref_cos = expected @ (centres / np.linalg.norm(centres, axis=1, keepdims=True)).T
    for head in (None, pfc):
        embed = get_embedding_model(model, head=head)
        assert [t.name for t in embed.inputs] == ["pixels"]
        np.testing.assert_allclose(embed(images), expected, atol=1e-6, rtol=0)
    out = export_saved_model(model, str(tmp_path / "pfc"), top_k=3)
    served = tf.saved_model.load(out)
    result = served.signatures["classify"](images=tf.constant(images))
    _np_topk_check(ref_cos, result["class_ids"].numpy(), result["cosines"].numpy(), 3)
    out = export_saved_model(model, str(tmp_path / "pfc2"), top_k=8, head=pfc)
    result = tf.saved_model.load(out).signatures["classify"](images=tf.constant(images))
    _np_topk_check(ref_cos, result["class_ids"].numpy(), result["cosines"].numpy(), 8)


def test_training_model_nested_in_another_model(tmp_path):
    # Issue 12: outer = keras.Model([img, lab], train_model([img, lab])) exported
    # [img, lab] -> softmax as embeddings and serving_default(lab, img).
    images = load_digits_split()[1][:10]
    backbone = _backbone()
    head = km.ArcFace(num_classes=NUM_CLASSES)
    train_model, _ = km.build_models(backbone, head)
    img = keras.Input((64,), name="outer_images")
    lab = keras.Input((), dtype="int32", name="outer_labels")
    probs = keras.layers.Activation("softmax")(train_model([img, lab]))
    outer = keras.Model([img, lab], probs)
    # Twice nested, with preprocessing on the outer image input.
    img2 = keras.Input((64,), name="raw")
    lab2 = keras.Input((), dtype="int32", name="lab2")
    outer2 = keras.Model([img2, lab2], outer([keras.layers.Rescaling(2.0)(img2), lab2]))
    expected = _np_embeddings(keras.ops.convert_to_numpy(backbone(images)))
    expected2 = _np_embeddings(keras.ops.convert_to_numpy(backbone(2.0 * images)))
    for model, want, name in ((outer, expected, "outer_images"), (outer2, expected2, "raw")):
        embed = get_embedding_model(model)
        assert [t.name for t in embed.inputs] == [name]
        np.testing.assert_allclose(embed(images), want, atol=1e-6, rtol=0)
        out = export_saved_model(model, str(tmp_path / name), top_k=2)
        served = tf.saved_model.load(out)
        signature = served.signatures["serving_default"]
        assert list(signature.structured_input_signature[1]) == ["images"]
        emb = signature(images=tf.constant(images))["embeddings"].numpy()
        np.testing.assert_allclose(emb, want, atol=1e-5, rtol=0)
        centres = keras.ops.convert_to_numpy(head.kernel).astype(np.float64)
        ref_cos = want @ (centres / np.linalg.norm(centres, axis=0, keepdims=True))
        result = served.signatures["classify"](images=tf.constant(images))
        _np_topk_check(ref_cos, result["class_ids"].numpy(), result["cosines"].numpy(), 2)

    # A nested model whose embeddings depend on the labels still cannot be served.
    x = keras.Input((8,))
    y = keras.Input((), dtype="int32")
    mixed = keras.layers.Concatenate()(
        [keras.layers.Dense(4)(x), keras.ops.cast(keras.ops.expand_dims(y, -1), "float32")]
    )
    leaky = keras.Model([x, y], km.ArcFace(num_classes=3)([mixed, y]))
    a = keras.Input((8,))
    b = keras.Input((), dtype="int32")
    with pytest.raises(ValueError, match="depend on the labels"):
        get_embedding_model(keras.Model([a, b], leaky([a, b])))


def test_tflite_of_a_mixed_float16_model_computes_in_float32(tmp_path):
    # Issue 16: export_tflite of a mixed_float16 model failed with "'tf.Mul' op is neither a
    # custom op nor a flex op". The flat buffer now comes from a float32 copy of the embedding
    # model with the same weights.
    keras.config.set_dtype_policy("mixed_float16")
    keras.utils.set_random_seed(5)
    x_train, x_test, y_train, _ = load_digits_split()
    init = keras.initializers.GlorotUniform(seed=3)
    backbone = keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(32, activation="relu", kernel_initializer=init),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(16, kernel_initializer=init),
        ],
        name="mp_backbone",
    )
    train_model, _ = km.build_models(backbone, km.ArcFace(num_classes=NUM_CLASSES, scale=16.0))
    _compile(train_model).fit([x_train, y_train], y_train, batch_size=64, epochs=1, verbose=0)
    assert keras.backend.standardize_dtype(backbone(x_test[:4]).dtype) == "float16"
    keras.config.set_dtype_policy("float32")

    path = export_tflite(train_model, str(tmp_path / "mp.tflite"))
    runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
    lite = runner(images=x_test.astype("float32"))["embeddings"]
    assert lite.dtype == np.float32

    # Float64 NumPy forward pass from the trained weights (BatchNorm in inference mode).
    dense1, bn, dense2 = backbone.layers
    w1, b1 = (np.asarray(v, np.float64) for v in dense1.get_weights())
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in bn.get_weights())
    w2, b2 = (np.asarray(v, np.float64) for v in dense2.get_weights())
    h = np.maximum(x_test.astype(np.float64) @ w1 + b1, 0.0)
    h = (h - mean) / np.sqrt(var + bn.epsilon) * gamma + beta
    ref = _np_embeddings(h @ w2 + b2)
    np.testing.assert_allclose(lite, ref, atol=2e-5, rtol=0)
    # The mixed-precision Keras model agrees to float16 precision only, and is unchanged.
    mixed = keras.ops.convert_to_numpy(get_embedding_model(train_model)(x_test))
    assert 1e-5 < np.max(np.abs(mixed - ref)) < 5e-2
    assert keras.backend.standardize_dtype(backbone(x_test[:4]).dtype) == "float16"


def test_embedding_normalization_works_at_any_magnitude(tmp_path):
    # Issue 12: UnitNormalization's squared norm overflows float32 above ~1e19 (embeddings of
    # 0) and its 1e-12 floor shrinks embeddings below ~1e-6. NaN features stay NaN.
    x = keras.Input((4,), name="features")
    outputs = {}
    feats = np.array(
        [[1, -2, 3, 4], [0, 0, 0, 0], [3e-3, 0, 0, -4e-3], [1, np.nan, 0, 0]], "float32"
    )
    ref = np.asarray(feats, np.float64)
    norms = np.linalg.norm(ref, axis=1, keepdims=True)
    ref = np.where(norms > 0, ref / np.where(norms > 0, norms, 1), 0.0)
    for scale in (1e-30, 1e-8, 1.0, 1e20, 1e35):
        model = keras.Model(x, keras.layers.Rescaling(scale)(x))
        got = keras.ops.convert_to_numpy(get_embedding_model(model)(feats))
        np.testing.assert_allclose(got[:3], ref[:3], atol=1e-6, rtol=0)
        assert np.all(np.isnan(got[3]))
        outputs[scale] = model
    path = export_saved_model(outputs[1e35], str(tmp_path / "big"))
    served = tf.saved_model.load(path).signatures["serving_default"]
    got = served(images=tf.constant(feats))["embeddings"].numpy()
    np.testing.assert_allclose(got[:3], ref[:3], atol=1e-6, rtol=0)
    assert np.all(np.isnan(got[3]))
