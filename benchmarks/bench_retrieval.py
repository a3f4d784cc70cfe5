"""Benchmark exact top-k retrieval: blocked matrix products against the full score matrix.

Contenders, each in a fresh subprocess so that its peak memory is its own:

* ``blocked`` -- ``keras_margins.nearest_neighbors`` (NumPy, float32, blocks of at most 256 MiB
  of scores merged into a running top-k; the queries x gallery matrix is never held whole);
* ``full`` -- the common one-liner: ``S = Q @ G.T`` in one go, then ``np.argpartition`` over each
  row and a sort of the k winners. Run only where its estimated memory (``12 * Q * G`` bytes:
  the float32 scores plus argpartition's int64 output) fits in half of the available RAM;
* ``sklearn`` -- ``sklearn.neighbors.NearestNeighbors(algorithm="brute", metric="cosine")``
  (scikit-learn chunks by its ``working_memory``, 1 GiB by default);
* ``faiss`` -- ``keras_margins.nearest_neighbors(backend="faiss")`` (exact ``IndexFlatIP``), if
  faiss is installed.

Data: random float32 Gaussian embeddings (seeded), cosine similarity, top-10. Reported per
contender: wall time of the search (data creation and imports excluded, after a small warm-up
call; the best of ``--repeats`` runs), the peak resident set size of the
process (``ru_maxrss``, data included), the resident size just before the search, and the peak
of Python-tracked allocations during the search (``tracemalloc``; NumPy reports its buffers to
it, BLAS and faiss internals are not seen). Each subprocess also writes its indices, and the
table says whether every contender returned the same neighbours as ``blocked``.

Usage::

    python benchmarks/bench_retrieval.py            # 100k gallery x 10k queries, D = 512
    python benchmarks/bench_retrieval.py --quick    # 10k x 1k, D = 128, seconds

Results: a table on stdout and ``benchmarks/results/bench_retrieval.{json,md}``
(``bench_retrieval_quick.*`` with ``--quick``).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
CONTENDERS = ("blocked", "full", "sklearn", "faiss")


def make_data(nq, ng, d, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    gallery = rng.standard_normal((ng, d), dtype=np.float32)
    # Queries near some gallery items, so that the neighbours are well defined (few near-ties).
    anchor = rng.integers(0, ng, nq)
    queries = gallery[anchor] + rng.standard_normal((nq, d), dtype=np.float32)
    return queries, gallery


def full_matrix_topk(queries, gallery, k):
    import numpy as np

    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    scores = q @ g.T
    part = np.argpartition(scores, -k, axis=1)[:, -k:]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(part, order, axis=1)


def worker(args):
    import tracemalloc

    import numpy as np

    # Imports happen before the clock starts (importing keras_margins imports Keras/TF).
    if args.worker in ("blocked", "faiss"):
        import keras_margins as km
    if args.worker == "sklearn":
        from sklearn.neighbors import NearestNeighbors
    queries, gallery = make_data(args.nq, args.ng, args.d)

    def search(queries, gallery):
        if args.worker == "blocked":
            return km.nearest_neighbors(queries, gallery, k=args.k)[1]
        if args.worker == "faiss":
            return km.nearest_neighbors(queries, gallery, k=args.k, backend="faiss")[1]
        if args.worker == "sklearn":
            nn = NearestNeighbors(n_neighbors=args.k, algorithm="brute", metric="cosine")
            return nn.fit(gallery).kneighbors(queries, return_distance=False)
        return full_matrix_topk(queries, gallery, args.k)[1]

    search(queries[:16], gallery[:1000])  # warm-up: BLAS threads, lazy imports, first touch
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    tracemalloc.start()
    for _ in range(args.repeats):
        start = time.perf_counter()
        idx = search(queries, gallery)
        times.append(time.perf_counter() - start)
    seconds = min(times)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.save(args.indices, np.asarray(idx, dtype=np.int64))
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss": peak,
                "rss_before": rss_before,
                "traced_peak": traced_peak,
            }
        )
    )


def available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def faiss_available():
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def run_contender(name, nq, ng, d, k, repeats, tmpdir):
    path = os.path.join(tmpdir, f"{name}.npy")
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        name,
        "--nq",
        str(nq),
        "--ng",
        str(ng),
        "--d",
        str(d),
        "--k",
        str(k),
        "--indices",
        path,
        "--repeats",
        str(repeats),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}, None
    return json.loads(proc.stdout.strip().splitlines()[-1]), path


def gib(x):
    return x / 2**30


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--nq", type=int, default=10_000)
    parser.add_argument("--ng", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per contender, the best is kept (1; 3 with --quick)",
    )
    parser.add_argument("--indices", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import numpy as np

    if args.quick:
        args.nq, args.ng, args.d = 1_000, 10_000, 128
    if args.repeats is None:
        args.repeats = 3 if args.quick else 1
    # The requested size, plus (full run) one where the full score matrix fits, to compare.
    scenarios = [(args.nq, args.ng)]
    if not args.quick and args.nq > 2_000:
        scenarios.append((2_000, args.ng))
    avail = available_bytes()
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for nq, ng in scenarios:
            full_estimate = 12 * nq * ng
            reference = None
            for name in CONTENDERS:
                row = {"contender": name, "queries": nq, "gallery": ng}
                if name == "faiss" and not faiss_available():
                    row["skipped"] = "faiss not installed"
                elif name == "full" and avail is not None and full_estimate > 0.5 * avail:
                    row["skipped"] = (
                        f"skipped: needs ~{gib(full_estimate):.1f} GiB (float32 scores + int64 "
                        f"argpartition output), over half of the {gib(avail):.1f} GiB available"
                    )
                else:
                    result, path = run_contender(name, nq, ng, args.d, args.k, args.repeats, tmpdir)
                    row.update(result)
                    if path is not None:
                        idx = np.load(path)
                        if reference is None:
                            reference = idx
                        row["same_neighbours_as_blocked"] = float(np.mean(idx == reference))
                rows.append(row)
                print(json.dumps(row), flush=True)

    setup = {
        "dim": args.d,
        "k": args.k,
        "dtype": "float32",
        "metric": "cosine",
        "repeats (best kept)": args.repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{gib(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')):.0f} GiB RAM",
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    header = (
        "| queries x gallery | contender | search time (s) | peak RSS (GiB) | "
        "RSS before search (GiB) | traced peak during search (GiB) | "
        "same top-k as blocked |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['queries']:,} x {r['gallery']:,}"
        if "skipped" in r or "error" in r:
            lines.append(
                f"| {size} | {r['contender']} | {r.get('skipped') or r.get('error')} | | | | |"
            )
            continue
        lines.append(
            f"| {size} | {r['contender']} | {r['seconds']:.2f} | {gib(r['peak_rss']):.2f} | "
            f"{gib(r['rss_before']):.2f} | {gib(r['traced_peak']):.2f} | "
            f"{100 * r['same_neighbours_as_blocked']:.3f}% |"
        )
    title = f"Exact top-{args.k} cosine search, D = {args.d}, float32"
    table = "\n".join(lines)
    print()
    print(title)
    print(table)
    os.makedirs(RESULTS, exist_ok=True)
    stem = "bench_retrieval_quick" if args.quick else "bench_retrieval"
    with open(os.path.join(RESULTS, stem + ".json"), "w") as f:
        json.dump({"setup": setup, "results": rows}, f, indent=2)
    with open(os.path.join(RESULTS, stem + ".md"), "w") as f:
        f.write(
            f"# {title}\n\n{table}\n\nSetup: {json.dumps(setup)}\n\n"
            "Peak RSS includes the data (gallery + queries) and, for `blocked` and `faiss`, the "
            "import of keras_margins (which imports Keras and TensorFlow, ~0.7 GiB); compare "
            "the growth from 'RSS before search' to 'peak RSS'. The traced peak counts the "
            "allocations NumPy reports to tracemalloc during the search only (not BLAS or faiss "
            "internals). The machine's 2 cores were shared with other jobs during the run, so "
            "times are indicative. 'same top-k' below 100% comes from float32 near-ties "
            "ordered differently by different summation orders.\n"
        )


if __name__ == "__main__":
    main()
