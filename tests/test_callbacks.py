"""The evaluation callback inside a real ``model.fit`` on digits, with held-out classes."""

import os

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.callbacks import EmbeddingEvaluation
from tests.helpers import load_digits_split


@pytest.fixture(scope="module")
def digits():
    x_train, x_test, y_train, y_test = load_digits_split(test_size=0.3, seed=0)
    x = np.concatenate([x_train, x_test])
    y = np.concatenate([y_train, y_test])
    seen = y < 7  # train on digits 0-6; 7, 8, 9 are identities never seen in training
    return x[seen], y[seen], x[~seen], y[~seen]


def make_models(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(16)]
    )
    train_model, embed_model = km.build_models(backbone, km.ArcFace(num_classes=7, scale=16.0,
                                                                    margin=0.3))
    train_model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return train_model, embed_model


def test_metrics_land_in_history_and_match_offline_evaluation(digits):
    x, y, x_new, y_new = digits
    train_model, embed_model = make_models()
    cb = EmbeddingEvaluation(x_new, y_new, embed_model, num_pairs=1000, n_folds=10, verbose=0)
    before = km.evaluate_verification(
        *(embed_model.predict(x_new, verbose=0)[i] for i in cb.pairs[:2]), cb.pairs[2]
    )
    history = train_model.fit([x, y], y, epochs=3, batch_size=64, callbacks=[cb], verbose=0)
    h = history.history
    for key in ("val_verification_accuracy", "val_verification_accuracy_std",
                "val_verification_auc", "val_verification_eer",
                "val_verification_tar_at_far_1e-01", "val_verification_tar_at_far_1e-02"):
        assert len(h[key]) == 3, key
    assert "val_verification_tar_at_far_1e-03" not in h  # 500 impostors cannot resolve 1e-3
    # The last logged numbers are exactly an offline evaluation of the trained model.
    emb = embed_model.predict(x_new, verbose=0)
    a, b, issame = cb.pairs
    report = km.evaluate_verification(emb[a], emb[b], issame)
    assert h["val_verification_accuracy"][-1] == pytest.approx(report.accuracy, abs=1e-6)
    assert h["val_verification_auc"][-1] == pytest.approx(report.auc, abs=1e-6)
    assert set(cb.reports) == {0, 1, 2}
    # Unseen digits stay well above chance (measured: AUC 0.65 after 3 epochs; the untrained
    # net gives 0.76 here, so 7 training classes do not transfer well to 3 new ones).
    assert report.auc > 0.55 and report.accuracy > 0.55
    assert before.auc != report.auc  # the callback saw the weights change
    assert len(set(h["val_verification_auc"])) > 1


def test_every_n_epochs_and_early_stopping(digits, tmp_path):
    x, y, x_new, y_new = digits
    train_model, embed_model = make_models()
    cb = EmbeddingEvaluation(x_new, y_new, embed_model, num_pairs=400, every_n_epochs=2,
                             verbose=0)
    history = train_model.fit([x, y], y, epochs=4, batch_size=128, callbacks=[cb], verbose=0)
    assert len(history.history["val_verification_auc"]) == 2  # epochs 2 and 4 only
    assert set(cb.reports) == {1, 3}

    # EarlyStopping monitoring the callback's metric: with an impossible min_delta nothing
    # counts as an improvement, so patience=1 stops training after the second epoch.
    train_model, embed_model = make_models(seed=1)
    cb = EmbeddingEvaluation(x_new, y_new, embed_model, num_pairs=400, verbose=0)
    stop = keras.callbacks.EarlyStopping(monitor="val_verification_auc", mode="max",
                                         min_delta=2.0, patience=1)
    path = os.path.join(str(tmp_path), "best.keras")
    ckpt = keras.callbacks.ModelCheckpoint(path, monitor="val_verification_auc", mode="max",
                                           save_best_only=True)
    history = train_model.fit([x, y], y, epochs=10, batch_size=128, callbacks=[cb, stop, ckpt],
                              verbose=0)
    assert len(history.epoch) == 2
    assert stop.stopped_epoch == 1
    assert os.path.exists(path)


def test_retrieval_task(digits, capsys):
    x, y, x_new, y_new = digits
    train_model, embed_model = make_models()
    half = len(x_new) // 2
    cb = EmbeddingEvaluation(x_new[:half], y_new[:half], embed_model, task="retrieval",
                             gallery_x=x_new[half:], gallery_y=y_new[half:], ks=(1, 5),
                             batch_size=8, verbose=1)
    history = train_model.fit([x, y], y, epochs=1, batch_size=64, callbacks=[cb], verbose=0)
    h = history.history
    emb = embed_model.predict(x_new, verbose=0)
    ref = km.retrieval_metrics(emb[:half], y_new[:half], emb[half:], y_new[half:], ks=(1, 5))
    for name, key in (("precision@1", "precision_at_1"), ("recall@5", "recall_at_5"),
                      ("map@r", "map_at_r"), ("map@5", "map_at_5")):
        assert h[f"val_retrieval_{key}"][0] == pytest.approx(ref[name], abs=1e-6)
    assert h["val_retrieval_precision_at_1"][0] > 0.6  # 3 unseen classes: chance is 1/3
    out = capsys.readouterr().out
    assert "Epoch 1 evaluation" in out and "val_retrieval_map_at_r" in out


def test_errors(digits):
    _, _, x_new, y_new = digits
    with pytest.raises(ValueError, match="task"):
        EmbeddingEvaluation(x_new, y_new, task="clustering")
    with pytest.raises(ValueError, match="every_n_epochs"):
        EmbeddingEvaluation(x_new, y_new, every_n_epochs=0)
    with pytest.raises(ValueError, match="`y`"):
        EmbeddingEvaluation(x_new, y_new[:-1])
    with pytest.raises(ValueError, match="num_pairs"):
        EmbeddingEvaluation(x_new, y_new, num_pairs=10**7)
    with pytest.raises(ValueError, match="gallery"):
        EmbeddingEvaluation(x_new, y_new, task="retrieval", gallery_x=x_new)
    with pytest.raises(ValueError, match="embedding_model"):
        EmbeddingEvaluation(x_new, y_new, embedding_model="model")
    with pytest.raises(ValueError, match="verbose"):
        EmbeddingEvaluation(x_new, y_new, verbose=2)


def test_non_finite_embeddings_are_logged_as_nan(digits):
    _, _, x_new, y_new = digits
    train_model, embed_model = make_models()
    cb = EmbeddingEvaluation(x_new, y_new, embed_model, num_pairs=200, verbose=0)
    logs = {}
    cb.on_epoch_end(0, logs)  # a healthy evaluation first
    assert 0.0 <= logs["val_verification_auc"] <= 1.0
    # A real model whose output is NaN (log of a negative number), as after divergence.
    broken = keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda t: keras.ops.log(
        -1.0 - keras.ops.abs(t)))])
    cb.embedding_model = broken
    logs = {}
    with pytest.warns(UserWarning, match="NaN or infinite embeddings"):
        cb.on_epoch_end(1, logs)
    assert set(logs) >= {"val_verification_auc", "val_verification_accuracy"}
    assert all(np.isnan(v) for v in logs.values())
