"""Benchmark every margin head against its floor: a plain Dense + sparse softmax cross-entropy.

What is timed is one forward + backward step (the loss, and the gradients for the embeddings and
for the class-centre kernel) at shapes (B, D, C). Every contender runs in the same process on the
same inputs; the runs alternate (one call of each contender per round, in a rotating order) and
the median over the rounds is reported, as a ratio to the floor's median
(``Dense(C, use_bias=False)`` followed by sparse softmax cross-entropy). Contenders:

* every head in ``keras_margins.heads.__all__`` that is a ``MarginHead`` (default arguments);
* the formulation common in Kaggle notebooks (ArcFace with explicit ``(B, C)`` cos and phi matrices
  mixed by a float one-hot), written below;
* pytorch-metric-learning's ``ArcFaceLoss`` / ``CosFaceLoss`` on PyTorch's CPU build, if installed.

Then, each in a fresh subprocess so that the peak resident memory belongs to one contender: the
peak memory of a training step per head at C = 100 000 and 1 000 000, and Partial FC
(``sample_rate=0.1``) against the full head at C = 1 000 000 (training step with the optimizer
update, for SGD, SGD with momentum and Adam).

Usage::

    python benchmarks/bench_heads.py            # the full run (tens of minutes on 2 cores)
    python benchmarks/bench_heads.py --quick    # a smoke run, under a minute

Results: a table on stdout and ``benchmarks/results/bench_heads.{json,md}``
(``bench_heads_quick.*`` for ``--quick``).
"""

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


# ----------------------------------------------------------------------------- contenders
def head_classes():
    """(name, class) of every MarginHead subclass exported by keras_margins.heads (no aliases)."""
    import keras_margins.heads as kh
    from keras_margins.heads.base import MarginHead

    seen, out = set(), []
    for name in kh.__all__:
        cls = getattr(kh, name, None)
        if not (isinstance(cls, type) and issubclass(cls, MarginHead)) or cls is MarginHead:
            continue
        if cls in seen:
            continue
        seen.add(cls)
        out.append((name, cls))
    return out


def head_variants(num_classes):
    """(name, zero-argument factory) of head settings other than the defaults worth timing."""
    import numpy as np

    import keras_margins as km

    c = num_classes
    return [
        ("ArcFace, per-class margins", lambda: km.ArcFace(c, margin=np.linspace(0.05, 0.5, c))),
        (
            "ArcFace, inter-class filter 0.4",
            lambda: km.ArcFace(c, interclass_filtering_threshold=0.4),
        ),
        ("ElasticFace+ (arc)", lambda: km.ElasticFace(c, sigma=0.0175, plus=True, seed=0)),
        ("ElasticFace (cos)", lambda: km.ElasticFace(c, margin=0.35, base="cos", seed=0)),
        ("AdaCos (dynamic)", lambda: km.AdaCos(c, dynamic=True)),
    ]


def selected(name, only):
    """Whether contender ``name`` is timed: the floor always; the rest if ``only`` names them.

    A variant (``"ElasticFace+ (arc)"``) is selected by its head's name (``ElasticFace``).
    """
    head = name.split(" ")[0].rstrip(",+")
    return only is None or name.startswith("floor") or head in only or name in only


def make_tf_steps(batch, dim, num_classes, xla, seed=0, with_torch=True, only=None):
    """Build {name: zero-argument callable running one step} for all contenders.

    ``only``: a list of head names (``ArcFace``, ``AdaFace``, ...; a variant is selected by its
    head's name) to time besides the floor; ``None`` times every contender.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, dim)).astype("float32"))
    y = tf.constant(rng.integers(0, num_classes, size=batch).astype("int32"))
    w0 = (rng.normal(size=(dim, num_classes)) * 0.05).astype("float32")
    steps = {}

    # The floor: Dense without bias + sparse softmax cross-entropy.
    w_floor = tf.Variable(w0)

    @tf.function(jit_compile=xla)
    def floor_step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.matmul(x, w_floor)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        gx, gw = tape.gradient(loss, [x, w_floor])
        return loss, gx, gw

    steps["floor (Dense + CE)"] = lambda: floor_step(x, y)

    factories = [
        (name, lambda cls=cls: cls(num_classes=num_classes)) for name, cls in head_classes()
    ]
    for name, factory in factories + head_variants(num_classes):
        if not selected(name, only):
            continue
        try:
            head = factory()
            head.build((None, dim))
            head.kernel.assign(w0)
        except Exception as exc:  # a head that needs other arguments: say so, go on
            print(f"  skipping {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue

        def make(head):
            @tf.function(jit_compile=xla)
            def step(x, y):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    logits = head([x, y], training=True)
                    loss = tf.reduce_mean(
                        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                    )
                    if head.losses:  # a loss the head adds itself (MagFace's regulariser)
                        loss = loss + tf.add_n(head.losses)
                gx, gw = tape.gradient(loss, [x, head.kernel.value])
                return loss, gx, gw

            return lambda: step(x, y)

        steps[name] = make(head)

    # The Kaggle formulation of ArcFace: full (B, C) cos, sine and phi, mixed with a float one-hot.
    w_kaggle = tf.Variable(w0)
    s, m = 64.0, 0.5
    cos_m, sin_m = math.cos(m), math.sin(m)
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m

    @tf.function(jit_compile=xla)
    def kaggle_step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            cosine = tf.matmul(tf.math.l2_normalize(x, axis=1), tf.math.l2_normalize(w_kaggle, 0))
            sine = tf.sqrt(tf.clip_by_value(1.0 - tf.square(cosine), 1e-9, 1.0))
            phi = cosine * cos_m - sine * sin_m
            phi = tf.where(cosine > th, phi, cosine - mm)
            one_hot = tf.one_hot(y, num_classes, dtype=tf.float32)
            logits = (one_hot * phi + (1.0 - one_hot) * cosine) * s
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        gx, gw = tape.gradient(loss, [x, w_kaggle])
        return loss, gx, gw

    if selected("Kaggle ArcFace (one-hot mix)", only):
        steps["Kaggle ArcFace (one-hot mix)"] = lambda: kaggle_step(x, y)

    if with_torch and only is None:
        steps.update(make_torch_steps(x.numpy(), y.numpy(), w0))
    return steps


TORCH_FLOOR = "PyTorch floor (Linear + CE, CPU)"


def make_torch_steps(x, y, w0):
    """pytorch-metric-learning ArcFaceLoss / CosFaceLoss on torch CPU, if installed."""
    try:
        import torch
        from pytorch_metric_learning import losses as pml_losses
    except Exception:  # optional extra
        return {}
    steps = {}
    dim, num_classes = w0.shape
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tensor(y.astype("int64"))

    # PyTorch's own floor (bias-free Linear + cross-entropy), to tell PyTorch's CPU speed apart
    # from what pytorch-metric-learning adds on top of it.
    w_floor = torch.tensor(w0, requires_grad=True)

    def torch_floor():
        xt.grad = None
        w_floor.grad = None
        loss = torch.nn.functional.cross_entropy(xt @ w_floor, yt)
        loss.backward()
        return loss.item()

    steps[TORCH_FLOOR] = torch_floor
    for name, cls, kwargs in [
        ("PML ArcFaceLoss (torch CPU)", pml_losses.ArcFaceLoss, {}),
        ("PML CosFaceLoss (torch CPU)", pml_losses.CosFaceLoss, {}),
    ]:
        loss_fn = cls(num_classes=num_classes, embedding_size=dim, **kwargs)
        with torch.no_grad():
            loss_fn.W.copy_(torch.tensor(w0))

        def make(loss_fn):
            def step():
                xt.grad = None
                loss_fn.W.grad = None
                loss = loss_fn(xt, yt)
                loss.backward()
                return loss.item()

            return step

        steps[name] = make(loss_fn)
    return steps


def is_torch(name):
    return name.startswith("PML") or name == TORCH_FLOOR


def run_alternating(steps, rounds, warmup=2):
    """Median seconds per contender over ``rounds`` rounds of one call each, rotating order."""

    def call(fn):
        out = fn()
        if isinstance(out, tuple):  # force the TF results to be ready
            out[0].numpy()

    names = list(steps)
    for name in names:
        for _ in range(warmup):
            call(steps[name])
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            call(steps[name])
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}, times


def make_breakdown_steps(batch, dim, num_classes, xla, seed=0):
    """The head's computation built up piece by piece (CosFace, m = 0.35, s = 64): what costs.

    Training steps (loss, gradients for the embeddings and the kernel), each adding one piece of
    the head's work to the floor, then the previous base (autodiff through a full-matrix clip and
    a ``where`` on a boolean target mask) for comparison. Then two ablations of the head that drop
    one of the two passes over the ``(D, C)`` kernel an exact gradient through normalized class
    centres needs: the column norms (forward) and the projection term ``- W * r`` of the kernel
    gradient (backward). They are wrong on purpose and only measure what those passes cost.
    """
    import numpy as np
    import tensorflow as tf

    import keras_margins as km
    from keras_margins.ops import normalized_matmul

    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, dim)).astype("float32"))
    y = tf.constant(rng.integers(0, num_classes, size=batch).astype("int32"))
    w = tf.Variable((rng.normal(size=(dim, num_classes)) * 0.05).astype("float32"))
    idx = tf.stack([tf.range(batch), y], axis=1)

    def x_n():
        return x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(x * x, 1, keepdims=True), 1e-12))

    def inv_norm():
        return tf.math.rsqrt(tf.maximum(tf.reduce_sum(w * w, 0), 1e-12))

    def previous_base():
        cos = tf.clip_by_value(tf.matmul(x_n(), w) * inv_norm(), -1.0, 1.0)
        is_target = tf.range(num_classes)[None, :] == y[:, None]
        cos_y = tf.gather_nd(cos, idx)
        return 64.0 * tf.where(is_target, (cos_y - 0.35)[:, None], cos)

    variants = {
        "floor: x @ W": lambda: tf.matmul(x, w),
        "+ normalize x": lambda: tf.matmul(x_n(), w),
        "+ column norms, autodiff": lambda: tf.matmul(x_n() * 64.0, w) * inv_norm(),
        "+ column norms, hand-written gradient": lambda: normalized_matmul(
            x_n() * 64.0, tf.convert_to_tensor(w)
        ),
        "previous base: (B, C) clip + where, autodiff": previous_base,
    }
    head = km.CosFace(num_classes, scale=64.0, margin=0.35)
    head.build((None, dim))
    head.kernel.assign(w)

    def make(fn, var):
        @tf.function(jit_compile=xla)
        def step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=fn())
                )
            return (loss, *tape.gradient(loss, [x, var]))

        return step

    steps = {}
    for name, fn in [*variants.items(), ("+ target margin = CosFace head", None)]:
        var = w if fn is not None else head.kernel.value
        fn = fn or (lambda: head([x, y], training=True))
        steps[name] = make(fn, var)

    # Ablations, for measurement only (their gradients or values are wrong): the head without
    # the column norms (inverse norms taken as 1) and the head without the projection term
    # `- W * r` of the kernel gradient. Each is traced while the shared function is swapped.
    from keras_margins import ops as base

    def no_norms(w, transposed=False):
        sq = tf.ones((w.shape[0 if transposed else 1],))
        return sq, sq

    def no_projection(xs, w, sq, inv, out, g, transposed=False):
        dz = g * inv
        return tf.matmul(dz, w, transpose_b=True), tf.matmul(xs, dz, transpose_a=True)

    for name, attr, replacement in [
        ("ablation: head without column norms", "_column_inverse_norms", no_norms),
        (
            "ablation: head without the projection - W * r",
            "_normalized_matmul_backward",
            no_projection,
        ),
    ]:
        ablated = km.CosFace(num_classes, scale=64.0, margin=0.35)
        ablated.build((None, dim))
        ablated.kernel.assign(w)
        step = make(lambda h=ablated: h([x, y], training=True), ablated.kernel.value)
        original = getattr(base, attr)
        setattr(base, attr, replacement)
        try:
            step.get_concrete_function()  # trace now, with the replacement in place
        finally:
            setattr(base, attr, original)
        steps[name] = step
    return steps


# ----------------------------------------------------------------------------- subprocess parts
def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class PeakRSS:
    """Sample the resident set size every millisecond while in the ``with`` block."""

    def __enter__(self):
        import threading

        self.before = rss_mib()
        self.peak = self.before
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, rss_mib())
                self._stop.wait(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def child_memory(kind, batch, dim, num_classes):
    """One training step (forward, backward, SGD update) of one contender; print memory."""
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, dim)).astype("float32"))
    y = tf.constant(rng.integers(0, num_classes, size=batch).astype("int32"))
    if kind == "floor":
        layer = keras.layers.Dense(num_classes, use_bias=False)
        layer.build((None, dim))
        forward = lambda: layer(x)  # noqa: E731
    else:
        cls = dict(head_classes())[kind]
        layer = cls(num_classes=num_classes)
        layer.build((None, dim))
        forward = lambda: layer([x, y], training=True)  # noqa: E731
    opt = keras.optimizers.SGD(0.01)
    opt.build(layer.trainable_variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = forward()
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        grads = tape.gradient(loss, layer.trainable_variables)
        opt.apply_gradients(zip(grads, layer.trainable_variables))
        return loss

    step().numpy()  # the first step traces, allocates the optimizer's state and warms up
    t0 = time.perf_counter()
    step().numpy()  # timed without the memory sampler's polling thread
    elapsed = time.perf_counter() - t0
    with PeakRSS() as mem:
        step().numpy()
    print(
        json.dumps(
            {
                "before_mib": mem.before,
                "peak_mib": mem.peak,
                "step_extra_mib": mem.peak - mem.before,
                "process_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                "step_s": elapsed,
            }
        )
    )


def child_partial_fc(mode, optimizer, batch, dim, num_classes, rate, repeats):
    """Training steps of ArcFace, full or with Partial FC; print median time and memory."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_margins as km
    from keras_margins.partial_fc import PartialFC

    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.normal(size=(batch, dim)).astype("float32")) for _ in range(repeats + 1)]
    ys = [
        tf.constant(rng.integers(0, num_classes, size=batch).astype("int32"))
        for _ in range(repeats + 1)
    ]
    head = km.ArcFace(num_classes=num_classes)
    layer = head if mode == "full" else PartialFC(head, sample_rate=rate, seed=0)
    layer.build([(None, dim), (None,)])
    opt = {
        "sgd": lambda: keras.optimizers.SGD(0.1),
        "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        "adam": lambda: keras.optimizers.Adam(1e-3),
    }[optimizer]()
    variables = layer.trainable_variables
    opt.build(variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = layer([x, y], training=True)
            if mode == "full":
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                )
            else:
                loss = tf.add_n(layer.losses)
        grads = tape.gradient(loss, variables)
        sparse = isinstance(grads[0], tf.IndexedSlices)
        opt.apply_gradients(zip(grads, variables))
        return loss, sparse

    _, sparse = step(xs[0], ys[0])  # traces, allocates the optimizer's state
    # Timed without the memory sampler (its polling thread would take CPU from the step), then
    # one more step under the sampler for the memory figures.
    times = []
    for i in range(1, repeats + 1):
        t0 = time.perf_counter()
        step(xs[i], ys[i])[0].numpy()
        times.append(time.perf_counter() - t0)
    with PeakRSS() as mem:
        step(xs[0], ys[0])[0].numpy()
    print(
        json.dumps(
            {
                "median_s": statistics.median(times),
                "times_s": times,
                "before_mib": mem.before,
                "peak_mib": mem.peak,
                "step_extra_mib": mem.peak - mem.before,
                "sparse_gradient": bool(sparse.numpy()),
            }
        )
    )


def run_child(args, timeout=1200):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *map(str, args)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- main
def fmt_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join(
        [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        + [line(r) for r in rows]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, under a minute")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds per shape")
    parser.add_argument("--no-torch", action="store_true", help="skip pytorch-metric-learning")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--no-partial-fc", action="store_true", help="skip Partial FC at 1M")
    parser.add_argument(
        "--breakdown",
        type=int,
        default=0,
        metavar="C",
        help="only the op-by-op cost breakdown of the base head at C classes (B=256, D=512)",
    )
    parser.add_argument(
        "--shape",
        nargs=3,
        type=int,
        metavar=("B", "D", "C"),
        help="time this one shape only (no memory or Partial FC runs)",
    )
    parser.add_argument(
        "--heads", nargs="+", help="time these heads only (e.g. ArcFace AdaFace), besides the floor"
    )
    parser.add_argument(
        "--tag", default=None, help="write bench_heads_TAG.{json,md} instead of bench_heads.*"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "memory":
            child_memory(rest[0], *map(int, rest[1:4]))
        else:
            optimizer, b, d, c, rate, repeats = rest
            child_partial_fc(kind, optimizer, int(b), int(d), int(c), float(rate), int(repeats))
        return

    import keras
    import tensorflow as tf

    if args.breakdown:
        md = [
            f"# Piece-by-piece cost of a head, B=256, D=512, C={args.breakdown}",
            "",
            "Median of alternating rounds, as a ratio to the floor's training step (see "
            "`make_breakdown_steps` in bench_heads.py). The ablations are not heads (their "
            "values or gradients are wrong on purpose): each drops one of the two (D, C) passes "
            "an exact gradient through normalized class centres needs, to measure its cost.",
            "",
        ]
        for xla in (False, True):
            medians, _ = run_alternating(
                make_breakdown_steps(256, 512, args.breakdown, xla), args.rounds or 9
            )
            floor = medians["floor: x @ W"]
            rows = [[n, f"{t * 1e3:.1f}", f"{t / floor:.2f}"] for n, t in medians.items()]
            table = fmt_table(["variant", "median ms", "x floor"], rows)
            print(f"\n== XLA {'on' if xla else 'off'}\n{table}", flush=True)
            md += [f"## XLA {'on' if xla else 'off'}", "", table, ""]
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "breakdown.md"), "w") as f:
            f.write("\n".join(md))
        return

    if args.quick:
        shapes = [(64, 128, 2000)]
        rounds = args.rounds or 3
        memory_cs, memory_shape = [], (64, 128)
        pfc_shape, pfc_repeats, pfc_optimizers = (64, 128, 50_000), 2, ["sgd"]
    else:
        shapes = [(256, 512, 10_000), (256, 512, 100_000)]
        rounds = args.rounds or 5
        memory_cs, memory_shape = [100_000, 1_000_000], (256, 512)
        pfc_shape, pfc_repeats, pfc_optimizers = (
            (256, 512, 1_000_000),
            3,
            [
                "sgd",
                "sgd_momentum",
                "adam",
            ],
        )

    if args.shape:
        shapes = [tuple(args.shape)]
        memory_cs = []
        args.no_partial_fc = True

    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "device": "CPU" if not tf.config.list_physical_devices("GPU") else "GPU",
        },
        "mode": "one shape" if args.shape else ("quick" if args.quick else "full"),
        "rounds": rounds,
        "timing": [],
        "memory": [],
        "partial_fc": [],
    }
    md = [f"# Head benchmarks ({results['mode']} run)", ""]
    md.append(
        f"Machine: {results['machine']['platform']}, {results['machine']['cpus']} CPUs, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}. Median of {rounds} alternating "
        "rounds; ratio = median step time / floor's median step time (lower is better)."
    )

    for batch, dim, num_classes in shapes:
        for xla in (False, True):
            print(f"\n== timing B={batch} D={dim} C={num_classes} XLA={'on' if xla else 'off'}")
            steps = make_tf_steps(
                batch, dim, num_classes, xla, with_torch=not args.no_torch, only=args.heads
            )
            if xla:  # torch does not depend on XLA: time it once, with XLA off
                steps = {k: v for k, v in steps.items() if not is_torch(k)}
            medians, _ = run_alternating(steps, rounds)
            floor = medians["floor (Dense + CE)"]
            rows = []
            for name, sec in medians.items():
                ratio = sec / floor
                rows.append([name, f"{sec * 1e3:.1f}", f"{ratio:.2f}"])
                results["timing"].append(
                    {
                        "batch": batch,
                        "dim": dim,
                        "classes": num_classes,
                        "xla": xla,
                        "name": name,
                        "median_ms": sec * 1e3,
                        "ratio_to_floor": ratio,
                    }
                )
            del steps  # free this shape's kernels before the next one (and the memory runs)
            gc.collect()
            keras.backend.clear_session()
            table = fmt_table(["contender", "median ms", "x floor"], rows)
            print(table, flush=True)
            md += ["", f"## B={batch}, D={dim}, C={num_classes}, XLA {'on' if xla else 'off'}", ""]
            md.append(table)
            save(results, md, args.quick, args.tag)

    peer_rows = peer_summary(results)
    if peer_rows:
        table = fmt_table(
            [
                "B, D, C",
                "peer",
                "peer / ours, XLA off",
                "peer / ours, XLA on",
                "peer / PyTorch floor",
                "PyTorch floor / TF floor",
            ],
            peer_rows,
        )
        print("\n== pytorch-metric-learning against our heads (speed-up = peer time / ours)")
        print(table, flush=True)
        md += [
            "",
            "## pytorch-metric-learning against our heads",
            "",
            "Speed-up = the peer's median step time / ours, same inputs and shapes. The last two "
            "columns split the peer's time: its overhead over PyTorch's own floor (bias-free "
            "Linear + cross-entropy) and PyTorch's floor against TensorFlow's.",
            "",
            table,
        ]
        save(results, md, args.quick, args.tag)

    if memory_cs and not args.no_memory:
        batch, dim = memory_shape
        kinds = ["floor", *[name for name, _ in head_classes()]]
        rows = []
        for c in memory_cs:
            for kind in kinds:
                print(f"  memory: {kind} C={c}", file=sys.stderr)
                res = run_child(["memory", kind, batch, dim, c])
                res.update({"name": kind, "classes": c, "batch": batch, "dim": dim})
                results["memory"].append(res)
                if "error" in res:
                    rows.append([kind, c, "error", "", str(res["error"])[:60]])
                else:
                    rows.append(
                        [
                            kind,
                            c,
                            f"{res['peak_mib']:.0f}",
                            f"{res['step_extra_mib']:.0f}",
                            f"{res['step_s']:.2f}",
                        ]
                    )
        table = fmt_table(
            ["contender", "C", "peak RSS MiB", "step peak - before step MiB", "step s"], rows
        )
        print(f"\n== peak memory of one training step (SGD), B={batch} D={dim}")
        print(table, flush=True)
        md += ["", f"## Peak memory of one training step (SGD), B={batch}, D={dim}", "", table]
        save(results, md, args.quick, args.tag)

    if not args.no_partial_fc:
        batch, dim, c = pfc_shape
        # The full head is timed with plain SGD only (with Adam its state alone would add
        # 2 x 2 GB at C = 1M); Partial FC with each optimizer, as a speed-up over that.
        runs = [("full", "sgd")] + [("partial", opt) for opt in pfc_optimizers]
        rows = []
        for mode, optimizer in runs:
            print(f"  partial fc: {mode} {optimizer} C={c}", file=sys.stderr)
            # Partial FC steps take about a second, and the first few are slower while the
            # allocator grows: time more of them (the full head's steps are steady from the 2nd).
            repeats = pfc_repeats if mode == "full" else 4 * pfc_repeats
            res = run_child([mode, optimizer, batch, dim, c, 0.1, repeats], timeout=1800)
            res.update({"mode": mode, "optimizer": optimizer, "classes": c, "rate": 0.1})
            results["partial_fc"].append(res)
        full = results["partial_fc"][0]
        for res in results["partial_fc"]:
            label = ("full ArcFace" if res["mode"] == "full" else "Partial FC 0.1") + (
                f" + {res['optimizer']}"
            )
            if "error" in res:
                rows.append([label, "error", "", "", "", str(res["error"])[:60]])
                continue
            speedup = f"{full['median_s'] / res['median_s']:.1f}x" if "median_s" in full else "n/a"
            rows.append(
                [
                    label,
                    f"{res['median_s']:.2f}",
                    speedup,
                    f"{res['peak_mib']:.0f}",
                    f"{res['step_extra_mib']:.0f}",
                    "yes" if res["sparse_gradient"] else "no",
                ]
            )
        table = fmt_table(
            [
                "training step",
                "s/step (median)",
                "speed-up vs full + sgd",
                "peak RSS MiB",
                "step peak - before MiB",
                "sparse kernel grad",
            ],
            rows,
        )
        print(f"\n== Partial FC (sample_rate=0.1) vs full ArcFace, B={batch} D={dim} C={c}")
        print(table)
        md += [
            "",
            f"## Partial FC (sample_rate=0.1) vs full ArcFace, B={batch}, D={dim}, C={c}",
            "",
            table,
        ]

    path = save(results, md, args.quick, args.tag)
    print(f"\nwrote {path}.json / .md")


def peer_summary(results):
    """Rows comparing pytorch-metric-learning's losses with the same heads of ours."""
    pairs = [("PML ArcFaceLoss (torch CPU)", "ArcFace"), ("PML CosFaceLoss (torch CPU)", "CosFace")]
    timing = results["timing"]
    rows = []
    shapes = sorted({(t["batch"], t["dim"], t["classes"]) for t in timing})

    def ms(shape, name, xla):
        for t in timing:
            if (t["batch"], t["dim"], t["classes"]) == shape and t["name"] == name:
                if xla is None or t["xla"] == xla:
                    return t["median_ms"]
        return None

    for shape in shapes:
        tf_floor = ms(shape, "floor (Dense + CE)", False)
        torch_floor = ms(shape, TORCH_FLOOR, None)
        for peer, ours in pairs:
            peer_ms = ms(shape, peer, None)
            off, on = ms(shape, ours, False), ms(shape, ours, True)
            if peer_ms is None or off is None:
                continue
            entry = {
                "batch": shape[0],
                "dim": shape[1],
                "classes": shape[2],
                "peer": peer,
                "ours": ours,
                "speedup_xla_off": peer_ms / off,
                "speedup_xla_on": peer_ms / on if on else None,
                "peer_over_torch_floor": peer_ms / torch_floor if torch_floor else None,
                "torch_floor_over_tf_floor": torch_floor / tf_floor if torch_floor else None,
            }
            results.setdefault("peer", []).append(entry)
            rows.append(
                [
                    ", ".join(map(str, shape)),
                    f"{peer} vs {ours}",
                    f"{entry['speedup_xla_off']:.2f}x",
                    f"{entry['speedup_xla_on']:.2f}x" if on else "",
                    f"{entry['peer_over_torch_floor']:.2f}" if torch_floor else "",
                    f"{entry['torch_floor_over_tf_floor']:.2f}" if torch_floor else "",
                ]
            )
    return rows


def save(results, md, quick, tag=None):
    """Write what is measured so far (called after every section)."""
    os.makedirs(RESULTS, exist_ok=True)
    name = f"bench_heads_{tag}" if tag else ("bench_heads_quick" if quick else "bench_heads")
    stem = os.path.join(RESULTS, name)
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    return stem


if __name__ == "__main__":
    main()
