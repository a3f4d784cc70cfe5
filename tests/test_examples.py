"""Every example in ``examples/`` runs end to end in its reduced ``--smoke`` mode.

Each script is run as a subprocess (``sys.executable``, as a user would run it) with
``--smoke --output <tmp>``; the test checks the exit code, the lines that carry the results, and
the files the script says it writes, and sanity-checks the numbers it saved (finite, in range).
"""

import glob
import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
SHARED_MODULES = {"common.py", "quiet.py"}  # imported by the examples, not run
TIMEOUT_S = 300
# The longest smoke runs (about a minute each on 2 cores): still run in CI; -m "not slow" skips.
SLOW = {"compare_heads.py", "export_and_serve.py"}


# Examples whose smoke run has a test module of its own.
TESTED_ELSEWHERE = {"kaggle_folder.py"}  # tests/test_kaggle_folder.py


def _smoke_scripts():
    scripts = []
    for path in sorted(glob.glob(os.path.join(EXAMPLES, "*.py"))):
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            if name not in SHARED_MODULES | TESTED_ELSEWHERE and "--smoke" in f.read():
                scripts.append(name)
    return scripts


def _in_unit_interval(value):
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


def _check_metrics(metrics):
    for key in ("accuracy", "auc", "rank1"):
        assert _in_unit_interval(metrics[key]), (key, metrics[key])
    assert math.isfinite(metrics["eer"])


def _load_json(out, name):
    path = os.path.join(out, name)
    assert os.path.isfile(path), f"{name} was not written; files: {os.listdir(out)}"
    with open(path) as f:
        return json.load(f)


def _check_quickstart(out, text):
    assert "Open-set results on held-out classes" in text
    assert "| softmax |" in text and "| arcface |" in text
    results = _load_json(out, "results.json")["results"]
    assert set(results) == {"softmax", "arcface"}
    for metrics in results.values():
        _check_metrics(metrics)
    assert os.path.isfile(os.path.join(out, "results.md"))
    assert os.path.isfile(os.path.join(out, "embedder", "saved_model.pb"))


def _check_compare_heads(out, text):
    assert "| method | setting |" in text
    runs = _load_json(out, "compare_glyphs_smoke.json")["runs"]
    assert set(runs) == {"softmax", "arcface", "center", "triplet"}
    for rows in runs.values():
        for metrics in rows:
            _check_metrics(metrics)
    assert os.path.isfile(os.path.join(out, "compare_glyphs_smoke.md"))


def _check_export_and_serve(out, text):
    assert "served top-1 accuracy" in text
    assert os.path.isfile(os.path.join(out, "saved_model", "saved_model.pb"))
    assert os.path.getsize(os.path.join(out, "embedder.tflite")) > 0


def _check_kaggle_retrieval(out, text):
    assert "data source:" in text
    assert "== Product matching" in text and "== Identification with new individuals" in text
    summary = _load_json(out, "kaggle_retrieval.json")
    f1, map5 = summary["match_f1"], summary["map@5"]
    for value in (f1["validation"], f1["test"], f1["test_best"], map5["validation"], map5["test"]):
        assert _in_unit_interval(value), summary
    # The threshold applied to the test split is the validation sweep's argmax, and the test
    # split's own optimum can only be as good or better.
    assert f1["validation"] == max(f1["sweep"].values())
    assert f1["test"] <= f1["test_best"] + 1e-12
    assert map5["validation"] == max(map5["sweep"]["validation"].values())
    assert map5["splits"]["test"]["new_queries"] > 0


def _check_verification_table(name, expected_rows):
    def check(out, text):
        assert "data source:" in text
        assert "| accuracy (10-fold) |" in text
        for row in expected_rows:
            assert f"| {row}" in text
        saved = _load_json(out, name)
        tables = saved.get("results", saved)
        found = [m for m in tables.values() if isinstance(m, dict) and "accuracy" in m]
        assert len(found) == len(expected_rows)
        for metrics in found:
            _check_metrics(metrics)

    return check


CHECKS = {
    "quickstart.py": _check_quickstart,
    "compare_heads.py": _check_compare_heads,
    "export_and_serve.py": _check_export_and_serve,
    "kaggle_retrieval.py": _check_kaggle_retrieval,
    "siamese_contrastive.py": _check_verification_table(
        "siamese_contrastive.json", ["untrained", "contrastive"]
    ),
    "triplet_semihard.py": _check_verification_table(
        "triplet_semihard.json", ["untrained", "triplet semi-hard"]
    ),
    "center_loss.py": _check_verification_table(
        "center_loss.json", ["softmax |", "softmax + center"]
    ),
}


def test_every_smoke_example_is_checked():
    found = set(_smoke_scripts())
    assert set(CHECKS) <= found, f"missing examples: {set(CHECKS) - found}"
    assert found <= set(CHECKS), f"examples without a check in this file: {found - set(CHECKS)}"


@pytest.fixture(scope="module")
def glyph_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("glyph_cache"))


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in _smoke_scripts()],
)
def test_example_smoke(script, tmp_path, glyph_cache):
    out = tmp_path / "output"
    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", KERAS_MARGINS_CACHE=glyph_cache
    )
    env.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        proc = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, script), "--smoke", "--output", str(out)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{script} --smoke took more than {TIMEOUT_S} s:\n{err.stdout}\n{err.stderr}")
    assert proc.returncode == 0, (
        f"{script} --smoke exited with {proc.returncode}\n"
        f"--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-4000:]}"
    )
    assert "Traceback" not in proc.stderr
    CHECKS[script](str(out), proc.stdout)


# Lines TensorFlow writes when nothing quiets it: absl/C++ log lines ("I0000 00:00:... port.cc"),
# its Python logger, the pre-InitializeLog banner, GPU probing on a CPU machine, retracing notes.
TF_NOISE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|WARNING:tensorflow|WARNING: All log messages|cuInit"
    r"|cuda drivers|oneDNN|cpu_feature_guard|retracing|TF-TRT|absl::",
    flags=re.M,
)


@pytest.mark.slow
def test_quickstart_on_a_fresh_machine_is_quiet_and_uses_matplotlib_fonts(tmp_path):
    """The README's main command where pip installed everything: no system fonts, no Debian
    datasets, an empty home and Keras cache. Font and data discovery point at an empty folder;
    TensorFlow's log level is left to the script."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS_MARGINS"))}
    env.update(
        HOME=str(tmp_path / "home"),
        KERAS_HOME=str(tmp_path / "keras"),
        KERAS_MARGINS_FONT_DIRS=str(empty),
        KERAS_MARGINS_DATA_DIR=str(empty),
        KERAS_MARGINS_CACHE=str(tmp_path / "cache"),
        MPLBACKEND="Agg",
        KERAS_BACKEND="tensorflow",
    )
    out = tmp_path / "output"
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "quickstart.py"), "--smoke", "--output", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout + proc.stderr
    assert "data: glyphs, 16 fonts (matplotlib); training on 92 identities" in proc.stdout
    assert "only matplotlib's" in proc.stdout and "Verdict:" in proc.stdout
    assert re.search(
        r"^\[2/2\] arcface .* \d+ s; held-out verification accuracy", proc.stdout, flags=re.M
    )
    assert not TF_NOISE.search(text), TF_NOISE.findall(text)
    assert proc.stderr.strip() == "", proc.stderr[-2000:]
    _check_quickstart(str(out), proc.stdout)
    saved = _load_json(str(out), "results.json")
    assert saved["font_set"] == "matplotlib" and len(saved["fonts"]) == 16
    assert len(saved["held_out"]) == 40
    for name in ("roc.png", "sphere.png"):
        assert (out / name).stat().st_size > 10_000


def test_fashion_fallback_to_digits_says_why_loudly(monkeypatch, tmp_path, capsys):
    """Without Keras's copy and the Debian package, the examples say they run on digits, and
    why, on stdout and stderr."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("KERAS_MARGINS_DATA_DIR", str(empty))
    monkeypatch.syspath_prepend(EXAMPLES)
    import common

    split, source, (x_train, _), _ = common.load_fashion_open_set(100, 50, allow_download=False)
    assert source == "digits" and x_train.shape[1:] == (8, 8, 1)
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert "Fashion-MNIST is NOT available" in stream
        assert f"debian: FileNotFoundError: '{empty / 'fashion-mnist'}' does not exist" in stream
        assert "keras: not tried" in stream and "apt-get install -y dataset-fashion-mnist" in stream
