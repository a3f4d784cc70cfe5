"""A model compiled with each metric-learning function (or class) trains, saves to ``.keras`` and
loads in a fresh Python process after ``import keras_margins`` alone (issue 15)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.siamese import build_siamese_model

B = 8


def _data(rng):
    x = rng.normal(size=(4 * B, 6)).astype("float32")
    y = np.tile(np.array([0, 0, 1, 1, 2, 2, 3, 3]), 4)
    multi = (rng.random((4 * B, 3)) < 0.5).astype("float32")
    multi[:, 0] = 1.0
    pair_y = rng.integers(0, 2, size=4 * B).astype("float32")
    return x, y, multi, pair_y


def _embedding_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])


CASES = {
    "triplet_semihard_loss": km.triplet_semihard_loss,
    "triplet_hard_loss": km.triplet_hard_loss,
    "triplet_loss": km.triplet_loss,
    "lifted_struct_loss": km.lifted_struct_loss,
    "npairs_loss": km.npairs_loss,
    "npairs_multilabel_loss": km.npairs_multilabel_loss,
    "contrastive_loss": km.contrastive_loss,
    "LiftedStructLoss": km.LiftedStructLoss(margin=0.5),
    "NpairsLoss": km.NpairsLoss(),
    "ContrastiveLoss": km.ContrastiveLoss(0.7, "sum"),
}


def _model_and_xy(name, data):
    x, y, multi, pair_y = data
    if "npairs" in name.lower():
        # (B, B) "similarities": B outputs per sample with a fixed batch of B.
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(B)])
        return model, x, multi if "multilabel" in name else y
    if "contrastive" in name.lower():
        model = build_siamese_model(_embedding_model())
        return model, [x, x[::-1].copy()], pair_y
    return _embedding_model(), x, y


@pytest.mark.slow
def test_keras_files_load_in_a_fresh_process(tmp_path, rng):
    data = _data(rng)
    expected = {}
    for name, loss in CASES.items():
        model, x, y = _model_and_xy(name, data)
        model.compile(optimizer="sgd", loss=loss)
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
        expected[name] = float(model.evaluate(x, y, batch_size=B, verbose=0))
        assert np.isfinite(expected[name]), name
        model.save(tmp_path / f"{name}.keras")
    np.savez(tmp_path / "data.npz", *data)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = f"""
import json, sys
sys.path.insert(0, {root!r})
import numpy as np
import keras
import keras_margins  # registers the losses; nothing else is imported or patched
from tests.test_metric_loss_files import CASES, _model_and_xy, B
d = np.load({str(tmp_path / "data.npz")!r})
data = tuple(d[f"arr_{{i}}"] for i in range(4))
out = {{}}
for name in CASES:
    model = keras.saving.load_model({str(tmp_path)!r} + f"/{{name}}.keras")
    _, x, y = _model_and_xy(name, data)
    same = model.loss is getattr(keras_margins, name) if name[0].islower() else (
        type(model.loss) is getattr(keras_margins, name))
    out[name] = [float(model.evaluate(x, y, batch_size=B, verbose=0)), same]
print("RESULT" + json.dumps(out))
"""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    got = json.loads(line[len("RESULT") :])
    for name, value in expected.items():
        np.testing.assert_allclose(got[name][0], value, rtol=1e-5, err_msg=name)
        assert got[name][1], f"{name}: the loaded model's loss is not keras_margins.{name}"
