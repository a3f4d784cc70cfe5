"""Semi-hard triplet loss: keras_margins' O(B^2) memory vs an O(B^3) formulation.

The O(B^3) formulation is the direct one tensorflow-addons used: compare every anchor-positive
distance with every anchor-negative distance in ``B x B x B`` temporaries (written here with
broadcasting, which needs fewer temporaries than tensorflow-addons' tiles). keras_margins sorts
each anchor's negatives and binary-searches them: ``O(B^2)`` memory, ``O(B^2 log B)`` time.

Each (method, batch size) runs in a fresh subprocess, so the peak resident memory (``ru_maxrss``)
is its own; the baseline of a process that imported TensorFlow and built the inputs is
subtracted. Time is the median of forward + gradient (``tf.function``) after one warm-up call.
A configuration whose single float32 ``B^3`` temporary alone exceeds ``--max-gb`` is not run.

    python benchmarks/bench_triplet.py            # B = 256, 1024, 2048
    python benchmarks/bench_triplet.py --quick    # B = 64, 256

Writes benchmarks/results/bench_triplet.json and .md.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DIM, NUM_CLASSES_DIV = 64, 8  # embeddings of size 64; B / 8 classes (8 samples per class)


def cubic_semihard(labels, emb, margin=1.0):
    """Semi-hard triplet loss with B x B x B temporaries (tensorflow-addons' approach)."""
    import tensorflow as tf

    from keras_margins.distances import label_masks, pairwise_distance

    d = pairwise_distance(emb, "L2")
    pos, neg = label_masks(labels)
    # candidate[a, p, n]: n is a negative of a farther from a than p is.
    candidate = tf.logical_and(neg[:, None, :], d[:, None, :] > d[:, :, None])
    outside = tf.reduce_min(tf.where(candidate, d[:, None, :], float("inf")), axis=2)
    has = tf.reduce_any(candidate, axis=2)
    row_min = tf.reduce_min(d, axis=1, keepdims=True)
    inside = tf.reduce_max(tf.where(neg, d - row_min, 0.0), axis=1, keepdims=True) + row_min
    semi = tf.where(has, outside, inside)
    hinge = tf.maximum(d - semi + margin, 0.0)
    posf = tf.cast(pos, tf.float32)
    return tf.reduce_sum(hinge * posf) / tf.maximum(tf.reduce_sum(posf), 1.0)


def _max_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_one(method, batch, repeats):
    """Runs in the child process; prints one JSON line."""
    import numpy as np
    import tensorflow as tf

    import keras_margins as km

    rng = np.random.default_rng(0)
    emb = tf.constant(rng.normal(size=(batch, DIM)).astype("float32"))
    labels = tf.constant(np.repeat(np.arange(batch // NUM_CLASSES_DIV), NUM_CLASSES_DIV))
    fn = km.triplet_semihard_loss if method == "O(B^2) keras_margins" else cubic_semihard

    @tf.function
    def step(y, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = fn(y, x)
        return loss, tape.gradient(loss, x)

    baseline = _max_rss_bytes()
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss, grad = step(labels, emb)
        _ = grad.numpy()
        if i:
            times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "loss": float(loss),
                "time_s": float(np.median(times)),
                "peak_extra_bytes": max(_max_rss_bytes() - baseline, 0),
            }
        )
    )


def run_child(method, batch, repeats, max_gb):
    element_bytes = 4 * batch**3
    if method.startswith("O(B^3)") and element_bytes > max_gb * 2**30:
        return {
            "status": "not run",
            "reason": f"one float32 B^3 temporary needs {element_bytes / 2**30:.1f} GiB "
            f"> {max_gb} GiB budget (and the formulation holds several at once)",
        }
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, str(batch), str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        return {"status": "failed", "reason": f"exit {proc.returncode}: {tail}"}
    out = json.loads(lines[-1])
    out["status"] = "ok"
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 64 and 256 only, 1 repeat")
    parser.add_argument("--max-gb", type=float, default=24.0, help="memory budget, GiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    batches = [64, 256] if args.quick else [256, 1024, 2048]
    repeats = 1 if args.quick else args.repeats
    methods = ["O(B^2) keras_margins", "O(B^3) broadcast"]
    rows = []
    for batch in batches:
        for method in methods:
            res = run_child(method, batch, repeats, args.max_gb)
            res.update({"method": method, "batch": batch, "b3_temp_gib": 4 * batch**3 / 2**30})
            rows.append(res)
            print(_row_text(res), flush=True)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "embedding_dim": DIM,
        "samples_per_class": NUM_CLASSES_DIV,
        "repeats": repeats,
        "max_gb": args.max_gb,
        "measure": "forward + gradient in tf.function (no XLA), CPU; peak = ru_maxrss growth",
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bench_triplet.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(RESULTS, "bench_triplet.md"), "w") as f:
        f.write("# Semi-hard triplet loss: O(B^2) vs O(B^3) memory\n\n")
        f.write(", ".join(f"{k}: {v}" for k, v in meta.items()) + "\n\n")
        f.write("| B | method | time (s) | peak extra memory (MiB) | loss | note |\n")
        f.write("|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(_row_md(r) + "\n")


def _row_text(r):
    if r["status"] != "ok":
        return f"B={r['batch']:5d} {r['method']:22s} {r['status']}: {r['reason']}"
    return (
        f"B={r['batch']:5d} {r['method']:22s} time {r['time_s']:.4f} s   "
        f"peak +{r['peak_extra_bytes'] / 2**20:.0f} MiB   loss {r['loss']:.6f}"
    )


def _row_md(r):
    if r["status"] != "ok":
        return f"| {r['batch']} | {r['method']} | - | - | - | {r['status']}: {r['reason']} |"
    return (
        f"| {r['batch']} | {r['method']} | {r['time_s']:.4f} | "
        f"{r['peak_extra_bytes'] / 2**20:.0f} | {r['loss']:.6f} | |"
    )


if __name__ == "__main__":
    main()
