"""examples/kaggle_folder.py --smoke: image folder + CSV in, submission CSV and SavedModel out."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "kaggle_folder.py")


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.slow
def test_kaggle_folder_smoke(tmp_path):
    out = tmp_path / "output"
    env = dict(
        os.environ, KERAS_MARGINS_CACHE=str(tmp_path / "glyph_cache"), KERAS_BACKEND="tensorflow"
    )
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the script must silence TensorFlow itself
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--smoke", "--output", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for banner in ("oneDNN custom operations", "cuda drivers", "cuInit"):
        assert banner not in proc.stderr + proc.stdout, banner

    # The dataset on disk: one PNG per CSV row, Shopee's columns.
    data = out / "data"
    train = _rows(data / "train.csv")
    test = _rows(data / "test.csv")
    assert train[0] == ["posting_id", "image", "label_group"]
    assert test[0] == ["posting_id", "image"]
    assert len(os.listdir(data / "train_images")) == len(train) - 1
    assert len(os.listdir(data / "test_images")) == len(test) - 1

    # The submission: every test posting once, itself first, 2..50 matches.
    submission = _rows(out / "submission.csv")
    assert submission[0] == ["posting_id", "matches"]
    assert [r[0] for r in submission[1:]] == [r[0] for r in test[1:]]
    test_ids = {r[0] for r in test[1:]}
    for posting_id, matches in submission[1:]:
        matches = matches.split(" ")
        assert matches[0] == posting_id and 2 <= len(matches) <= 50
        assert set(matches) <= test_ids and len(set(matches)) == len(matches)

    # The reported test F1 is the competition metric of that file (recomputed here).
    truth = {r[0]: r[1] for r in _rows(data / "test_solution.csv")[1:]}
    groups = {}
    for posting_id, group in truth.items():
        groups.setdefault(group, set()).add(posting_id)
    f1 = []
    for posting_id, matches in submission[1:]:
        predicted, actual = set(matches.split(" ")), groups[truth[posting_id]]
        f1.append(2 * len(predicted & actual) / (len(predicted) + len(actual)))
    with open(out / "kaggle_folder.json") as handle:
        summary = json.load(handle)
    assert summary["test_f1"] == pytest.approx(sum(f1) / len(f1), abs=1e-12)
    assert len(summary["val_match_f1_by_epoch"]) == summary["epochs"]
    assert all(0.0 <= v <= 1.0 for v in summary["val_match_f1_by_epoch"])
    assert 0.0 <= summary["threshold"] <= 1.0 and math.isfinite(summary["val_f1"])
    # Training learned something about identities it never saw: better than matching every
    # item with everything (F1 of 1/3 with the 5 validation groups).
    assert summary["val_f1"] > 0.35

    # The checkpoint and the SavedModel, which serves the same embeddings.
    assert (out / "best.keras").is_file()
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert summary["export_max_abs_error"] < 1e-4
    assert "Test F1 of submission.csv" in proc.stdout
