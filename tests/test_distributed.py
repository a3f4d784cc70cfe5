"""Data-parallel (tf.distribute) and model-parallel (JAX, keras.distribution) training.

Each test runs its TensorFlow or JAX program in a fresh subprocess: logical CPU devices, the
forced host device count and the Keras backend must be set before the framework initializes,
and this test session has already imported Keras (tests/conftest.py).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_margins

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(source, tmp_path, env=None, timeout=240, name="script.py"):
    """Run ``source`` in a fresh Python and return the JSON object it prints last."""
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(source))
    full_env = dict(os.environ)
    full_env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO})
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, path], capture_output=True, text=True, timeout=timeout, env=full_env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(lines[-1])


# A small model, its data and one SGD step, shared by the data-parallel scripts. ``make_top`` is
# replaced by each test: it returns the layer on top of the embeddings.
COMMON = """
import json, os
import numpy as np
import keras
import tensorflow as tf
import keras_margins as km
from keras_margins.partial_fc import PartialFC

DIM, EMB = 12, 8

def make_model(make_top):
    keras.utils.set_random_seed(7)
    x_in = keras.Input((DIM,))
    y_in = keras.Input((), dtype="int32")
    emb = keras.layers.Dense(EMB, name="backbone")(x_in)
    top = make_top()
    out = top([emb, y_in])
    return keras.Model([x_in, y_in], out), top

def data(batch, num_classes, labels=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, DIM)).astype("float32")
    y = rng.integers(0, num_classes, size=batch).astype("int32") if labels is None else labels
    return x, y

def one_step(model, x, y, loss):
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
    ds = tf.data.Dataset.from_tensor_slices(((x, y), y)).batch(len(x))
    hist = model.fit(ds, epochs=1, verbose=0)
    return hist.history["loss"][0], [np.asarray(w) for w in model.get_weights()]
"""

MIRRORED = COMMON.replace(
    "import tensorflow as tf\n",
    """import tensorflow as tf
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
""",
    1,
)


HEAD_FACTORIES = {
    "CosFace": "lambda: km.CosFace(NUM_CLASSES, scale=10.0, margin=0.2, name='top')",
    "ArcFace": "lambda: km.ArcFace(NUM_CLASSES, scale=10.0, margin=0.3, name='top')",
    "ArcFace_subcenters": (
        "lambda: km.ArcFace(NUM_CLASSES, scale=10.0, margin=0.3, sub_centers=2, name='top')"
    ),
    # k = 10 of 20 classes and each replica's batch holds exactly the classes 0..9: the sampled
    # set is the same on every replica and on one device, so the step must match exactly.
    "PartialFC": (
        "lambda: PartialFC(km.ArcFace(NUM_CLASSES, scale=10.0, margin=0.3), 0.5, seed=0, "
        "name='top')"
    ),
    # center loss (a layer adding its loss) under a CosFace head
    "CenterLoss": (
        "lambda: (lambda ins: km.CosFace(NUM_CLASSES, scale=10.0, margin=0.2, name='top')("
        "[km.CenterLoss(NUM_CLASSES, weight=0.5, name='center')(ins), ins[1]]))"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("top", list(HEAD_FACTORIES))
def test_mirrored_two_replicas_match_one_device(top, tmp_path):
    if top == "CenterLoss" and getattr(keras_margins, "CenterLoss", None) is None:
        pytest.skip("keras_margins.CenterLoss does not exist (yet)")
    script = (
        MIRRORED
        + f"""
NUM_CLASSES = 20
make_top = {HEAD_FACTORIES[top]}
partial = {top == "PartialFC"}
labels = np.tile(np.arange(10, dtype="int32"), 4) if partial else None  # 40 = 2 x 20
x, y = data(40, NUM_CLASSES, labels)
loss = None if partial else keras.losses.SparseCategoricalCrossentropy(from_logits=True)

model, _ = make_model(make_top)
init = model.get_weights()
single_loss, single = one_step(model, x, y, loss)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model2, _ = make_model(make_top)
    model2.set_weights(init)
    dist_loss, dist = one_step(model2, x, y, loss)
# trainable weights must match; the center loss's centres follow their own update rule with
# per-replica class counts, so they are only checked to move and stay finite
trainable = [not w.path.endswith("centers") for w in model.weights]
pairs = [(a, b) for a, b, t in zip(single, dist, trainable) if t]
centres = [b for b, t in zip(dist, trainable) if not t]
print(json.dumps({{
    "replicas": strategy.num_replicas_in_sync,
    "single_loss": single_loss, "dist_loss": dist_loss,
    "max_diff": max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in pairs),
    "max_update": max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(init, single)),
    "centres_finite": all(bool(np.isfinite(c).all()) for c in centres),
    "centres_moved": all(float(np.abs(c).max()) > 0 for c in centres),
}}))
"""
    )
    res = run_script(script, tmp_path)
    assert res["replicas"] == 2
    assert res["max_update"] > 1e-3  # the step did change the weights
    np.testing.assert_allclose(res["dist_loss"], res["single_loss"], rtol=1e-5)
    assert res["max_diff"] < 1e-5, res
    assert res["centres_finite"] and res["centres_moved"]


LOSS_NAMES = ["TripletSemiHardLoss", "TripletHardLoss", "TripletLoss"]


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_mirrored_embedding_losses(name, tmp_path):
    """A batch-level loss on two replicas: each replica's loss on its half of the batch, scaled by
    the number of replicas, so the step equals one device's step on the mean of the two halves'
    losses."""
    cls = getattr(keras_margins, name, None)
    if cls is None:
        pytest.skip(f"keras_margins.{name} does not exist (yet)")
    try:
        loss = cls()
    except Exception as exc:  # a loss that needs arguments or state this test does not know
        pytest.skip(f"{name}() cannot be built without arguments: {exc}")
    if not isinstance(loss, __import__("keras").losses.Loss):
        pytest.skip(f"{name} is not a keras.losses.Loss")
    values = loss.call(np.array([0, 0, 1, 1], "int32"), np.eye(4, 3, dtype="float32"))
    if tuple(values.shape) == ():
        # Keras scales a loss for tf.distribute (1 / replicas) only when `call` returns
        # per-sample values; a scalar is left as it is, so gradients are summed over replicas.
        pytest.xfail(f"{name}.call returns a scalar: not scaled by 1 / num_replicas in Keras")
    script = (
        MIRRORED
        + f"""
LOSS = km.{name}
x, y = data(32, 4, np.tile(np.arange(4, dtype="int32"), 8))

def make():
    keras.utils.set_random_seed(7)
    return keras.Sequential([keras.Input((DIM,)), keras.layers.Dense(EMB)])

model = make()
init = model.get_weights()
loss_fn = LOSS()
# reference on one device: mean of the losses of the two halves the replicas see
with tf.GradientTape() as tape:
    halves = [loss_fn(y[s], model(x[s])) for s in (slice(0, 16), slice(16, 32))]
    ref_loss = (halves[0] + halves[1]) / 2.0
grads = tape.gradient(ref_loss, model.trainable_variables)
keras.optimizers.SGD(0.5).apply_gradients(zip(grads, model.trainable_variables))
single = [np.asarray(w) for w in model.get_weights()]

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model2 = make()
    model2.set_weights(init)
    model2.compile(optimizer=keras.optimizers.SGD(0.5), loss=LOSS())
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
model2.fit(ds, epochs=1, verbose=0)
dist = [np.asarray(w) for w in model2.get_weights()]
print(json.dumps({{
    "max_diff": max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(single, dist)),
    "max_update": max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(init, single)),
}}))
"""
    )
    res = run_script(script, tmp_path)
    assert res["max_update"] > 0
    assert res["max_diff"] < 1e-5, res


def _free_ports(count):
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes_on_localhost(tmp_path):
    """Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy), one step of an ArcFace
    model on a global batch of 32 (16 per worker), against one process on the same batch."""
    ports = _free_ports(2)
    worker = (
        COMMON
        + """
import sys
task = int(sys.argv[1])
strategy = tf.distribute.MultiWorkerMirroredStrategy()
NUM_CLASSES = 12
x, y = data(32, NUM_CLASSES)
with strategy.scope():
    model, _ = make_model(lambda: km.ArcFace(NUM_CLASSES, scale=10.0, margin=0.3, name="top"))
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
# Keras 3.15's model.fit cannot start under MultiWorkerMirroredStrategy (its symbolic build
# reduces a PerReplica batch and fails), so the step is TensorFlow's documented custom loop:
# strategy.run + the loss averaged over the *global* batch.
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
# each worker reads the whole batch; DATA sharding gives worker i the rows i, i + 2, ...
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).with_options(options)
dist_ds = strategy.experimental_distribute_dataset(ds)
ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

@tf.function
def train_step(batch):
    def step_fn(xb, yb):
        with tf.GradientTape() as tape:
            per_sample = ce(yb, model([xb, yb], training=True))
            loss = tf.nn.compute_average_loss(per_sample, global_batch_size=32)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss
    per_replica = strategy.run(step_fn, args=batch)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

global_loss = float(train_step(next(iter(dist_ds))))
np.savez(os.path.join(os.environ["OUT_DIR"], f"worker{task}.npz"), *model.get_weights())
print(json.dumps({"task": task, "replicas": strategy.num_replicas_in_sync,
                  "loss": global_loss}))
"""
    )
    single = (
        COMMON
        + """
NUM_CLASSES = 12
x, y = data(32, NUM_CLASSES)
model, _ = make_model(lambda: km.ArcFace(NUM_CLASSES, scale=10.0, margin=0.3, name="top"))
init = model.get_weights()
loss, weights = one_step(
    model, x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
)
np.savez(os.path.join(os.environ["OUT_DIR"], "single.npz"), *weights)
np.savez(os.path.join(os.environ["OUT_DIR"], "init.npz"), *init)
print(json.dumps({"loss": loss}))
"""
    )
    out_dir = str(tmp_path)
    wpath = os.path.join(out_dir, "worker.py")
    with open(wpath, "w") as f:
        f.write(worker)
    base_env = dict(os.environ)
    base_env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO, "OUT_DIR": out_dir})
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for task in range(2):
        env = dict(base_env)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": task}}
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, wpath, str(task)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-4000:]
            outputs.append(json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1]))
    finally:
        for proc in procs:  # never leave a worker behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [o["replicas"] for o in outputs] == [2, 2]
    ref = run_script(single, tmp_path, env={"OUT_DIR": out_dir}, name="single.py")

    def load(name):
        data = np.load(os.path.join(out_dir, name))
        return [data[f"arr_{i}"] for i in range(len(data.files))]

    single_w, init_w = load("single.npz"), load("init.npz")
    assert max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(single_w, init_w)) > 1e-3
    for task in range(2):
        got = load(f"worker{task}.npz")
        for a, b in zip(got, single_w):
            np.testing.assert_allclose(a, b, atol=1e-5)
    for o in outputs:  # the loss summed over replicas is the global batch's mean loss
        np.testing.assert_allclose(o["loss"], ref["loss"], rtol=1e-5)


MODEL_PARALLEL = """
import json
import numpy as np
import keras
import jax
import keras_margins as km
from keras import distribution

C, D, B = 64, 16, 24
HEAD = {head}
rng = np.random.default_rng(0)
x = rng.normal(size=(B, D)).astype("float32")
y = rng.integers(0, C, size=B).astype("int32")
ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

def make():
    keras.utils.set_random_seed(3)
    x_in = keras.Input((D,))
    y_in = keras.Input((), dtype="int32")
    emb = keras.layers.Dense(D, name="backbone")(x_in)
    return keras.Model([x_in, y_in], HEAD(C, scale=16.0, name="head")([emb, y_in]))

def step(model):
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=ce)
    before = float(ce(y, model([x, y])))
    model.fit([x, y], y, batch_size=B, epochs=1, verbose=0, shuffle=False)
    return before, [np.asarray(w) for w in model.get_weights()]

reference = make()
init = reference.get_weights()
ref_loss, ref_weights = step(reference)

devices = distribution.list_devices("cpu")
mesh = distribution.DeviceMesh((1, len(devices)), axis_names=("batch", "model"), devices=devices)
layout = distribution.LayoutMap(mesh)
layout["head/kernel"] = (None, "model")     # (D, C): the class axis is split over the devices
layout["backbone/kernel"] = (None, None)    # replicated
layout["backbone/bias"] = (None,)
distribution.set_distribution(distribution.ModelParallel(layout_map=layout, batch_dim_name="batch"))
model = make()
model.set_weights(init)
kernel = model.get_layer("head").kernel.value
shards = [tuple(s.data.shape) for s in kernel.addressable_shards]
loss, weights = step(model)
print(json.dumps({{
    "devices": len(devices), "shards": shards, "ref_loss": ref_loss, "loss": loss,
    "max_diff": max(
        float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(weights, ref_weights)
    ),
    "max_update": max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(init, ref_weights)),
}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("head", ["km.ArcFace", "km.CosFace"])
def test_jax_model_parallel_shards_class_centres(head, tmp_path):
    pytest.importorskip("jax")
    res = run_script(
        MODEL_PARALLEL.format(head=head),
        tmp_path,
        env={
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
            "JAX_PLATFORMS": "cpu",
        },
    )
    assert res["devices"] == 8
    assert res["shards"] == [[16, 64 // 8]] * 8  # each device holds C / 8 class centres
    np.testing.assert_allclose(res["loss"], res["ref_loss"], rtol=1e-5)
    assert res["max_update"] > 1e-3
    assert res["max_diff"] < 1e-5, res
