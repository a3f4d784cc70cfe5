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
    train_model, embed_model = km.build_models(
        backbone, km.ArcFace(num_classes=7, scale=16.0, margin=0.3)
    )
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
    for key in (
        "val_verification_accuracy",
        "val_verification_accuracy_std",
        "val_verification_auc",
        "val_verification_eer",
        "val_verification_tar_at_far_1e-01",
        "val_verification_tar_at_far_1e-02",
    ):
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
    cb = EmbeddingEvaluation(x_new, y_new, embed_model, num_pairs=400, every_n_epochs=2, verbose=0)
    history = train_model.fit([x, y], y, epochs=4, batch_size=128, callbacks=[cb], verbose=0)
    assert len(history.history["val_verification_auc"]) == 2  # epochs 2 and 4 only
    assert set(cb.reports) == {1, 3}

    # EarlyStopping monitoring the callback's metric: with an impossible min_delta nothing
    # counts as an improvement, so patience=1 stops training after the second epoch.
    train_model, embed_model = make_models(seed=1)
    cb = EmbeddingEvaluation(x_new, y_new, embed_model, num_pairs=400, verbose=0)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_verification_auc", mode="max", min_delta=2.0, patience=1
    )
    path = os.path.join(str(tmp_path), "best.keras")
    ckpt = keras.callbacks.ModelCheckpoint(
        path, monitor="val_verification_auc", mode="max", save_best_only=True
    )
    history = train_model.fit(
        [x, y], y, epochs=10, batch_size=128, callbacks=[cb, stop, ckpt], verbose=0
    )
    assert len(history.epoch) == 2
    assert stop.stopped_epoch == 1
    assert os.path.exists(path)


def test_retrieval_task(digits, capsys):
    x, y, x_new, y_new = digits
    train_model, embed_model = make_models()
    half = len(x_new) // 2
    cb = EmbeddingEvaluation(
        x_new[:half],
        y_new[:half],
        embed_model,
        task="retrieval",
        gallery_x=x_new[half:],
        gallery_y=y_new[half:],
        ks=(1, 5),
        batch_size=8,
        verbose=1,
    )
    history = train_model.fit([x, y], y, epochs=1, batch_size=64, callbacks=[cb], verbose=0)
    h = history.history
    emb = embed_model.predict(x_new, verbose=0)
    ref = km.retrieval_metrics(emb[:half], y_new[:half], emb[half:], y_new[half:], ks=(1, 5))
    for name, key in (
        ("precision@1", "precision_at_1"),
        ("recall@5", "recall_at_5"),
        ("map@r", "map_at_r"),
        ("map@5", "map_at_5"),
    ):
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
    broken = keras.Sequential(
        [keras.Input((64,)), keras.layers.Lambda(lambda t: keras.ops.log(-1.0 - keras.ops.abs(t)))]
    )
    cb.embedding_model = broken
    logs = {}
    with pytest.warns(UserWarning, match="NaN or infinite embeddings"):
        cb.on_epoch_end(1, logs)
    assert set(logs) >= {"val_verification_auc", "val_verification_accuracy"}
    assert all(np.isnan(v) for v in logs.values())


# --------------------------------------------------------------------------------------------
# Streamed validation data, match_f1, new_label, collapse warning, argument checks (issues 16, 12)
# --------------------------------------------------------------------------------------------


class _DigitBatches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[s], self.y[s]


def _streams(x, y):
    import tensorflow as tf

    return {
        "tf_data_pairs": (tf.data.Dataset.from_tensor_slices((x, y)).batch(37), None),
        "tf_data_triples": (
            tf.data.Dataset.from_tensor_slices((x, y, np.ones(len(y), "float32"))).batch(50),
            None,
        ),
        "tf_data_one_hot": (
            tf.data.Dataset.from_tensor_slices((x, np.eye(10, dtype="float32")[y])).batch(64),
            None,
        ),
        "tf_data_inputs_only": (tf.data.Dataset.from_tensor_slices(x).batch(20), y),
        "py_dataset": (_DigitBatches(x, y, 33), None),
        "generator_function": (
            lambda: ((x[i : i + 25], y[i : i + 25]) for i in range(0, len(x), 25)),
            None,
        ),
    }


@pytest.mark.parametrize("task", ["verification", "retrieval", "match_f1"])
def test_streamed_inputs_give_the_array_results(digits, task):
    _, _, x_new, y_new = digits
    _, embed_model = make_models()
    kwargs = dict(embedding_model=embed_model, task=task, verbose=0)
    if task == "verification":
        kwargs.update(num_pairs=400, n_folds=5)
    reference, _ = EmbeddingEvaluation(x_new, y_new, **kwargs).evaluate()
    for name, (stream, labels) in _streams(x_new, y_new).items():
        cb = EmbeddingEvaluation(stream, labels, **kwargs)
        for _ in range(2):  # re-iterated at every evaluation
            scalars, _ = cb.evaluate()
            assert scalars.keys() == reference.keys(), name
            for key, value in reference.items():
                assert scalars[key] == pytest.approx(value, abs=1e-6), (name, key)


def test_stream_inside_fit_and_as_gallery(digits):
    import tensorflow as tf

    x, y, x_new, y_new = digits
    train_model, embed_model = make_models()
    half = len(x_new) // 2
    queries = tf.data.Dataset.from_tensor_slices((x_new[:half], y_new[:half])).batch(16)
    gallery = tf.data.Dataset.from_tensor_slices((x_new[half:], y_new[half:])).batch(16)
    cb = EmbeddingEvaluation(
        queries, embedding_model=embed_model, task="retrieval", gallery_x=gallery, verbose=0
    )
    history = train_model.fit([x, y], y, epochs=2, batch_size=64, callbacks=[cb], verbose=0)
    emb = embed_model.predict(x_new, verbose=0)
    ref = km.retrieval_metrics(emb[:half], y_new[:half], emb[half:], y_new[half:], ks=(1, 5))
    assert history.history["val_retrieval_map_at_r"][-1] == pytest.approx(ref["map@r"], abs=1e-6)


def test_shuffled_stream_is_refused_for_verification(digits):
    import tensorflow as tf

    _, _, x_new, y_new = digits
    _, embed_model = make_models()
    ds = tf.data.Dataset.from_tensor_slices((x_new, y_new)).shuffle(1000, seed=None).batch(64)
    cb = EmbeddingEvaluation(ds, embedding_model=embed_model, num_pairs=200, verbose=0)
    cb.evaluate()
    with pytest.raises(ValueError, match="different order"):
        for _ in range(3):  # a reshuffle giving the same order three times is ~impossible
            cb.evaluate()


def test_match_f1_and_new_label_tasks_match_offline(digits):
    _, _, x_new, y_new = digits
    _, embed_model = make_models()
    emb = embed_model.predict(x_new, verbose=0)
    cb = EmbeddingEvaluation(
        x_new, y_new, embed_model, task="match_f1", thresholds=np.linspace(0, 1, 21), verbose=0
    )
    logs = {}
    cb.on_epoch_end(0, logs)
    ref = km.match_f1_sweep(emb, y_new, thresholds=np.linspace(0, 1, 21))
    assert logs["val_match_f1_best_f1"] == pytest.approx(ref["best_f1"], abs=1e-9)
    assert logs["val_match_f1_best_threshold"] == pytest.approx(ref["best_threshold"])
    # Happywhale MAP@5: queries of identity 9 are absent from the gallery -> "new".
    gallery_mask = (y_new != 9) & (np.arange(len(y_new)) % 2 == 0)
    query_mask = ~gallery_mask
    cb = EmbeddingEvaluation(
        x_new[query_mask],
        y_new[query_mask],
        embed_model,
        task="retrieval",
        gallery_x=x_new[gallery_mask],
        gallery_y=y_new[gallery_mask],
        new_label=-1,
        new_threshold=0.5,
        verbose=0,
    )
    scalars, _ = cb.evaluate()
    ref = km.retrieval_metrics(
        emb[query_mask],
        y_new[query_mask],
        emb[gallery_mask],
        y_new[gallery_mask],
        ks=(1, 5),
        new_label=-1,
        new_threshold=0.5,
    )
    assert scalars["map@5"] == pytest.approx(ref["map@5"], abs=1e-12)
    no_new = km.retrieval_metrics(
        emb[query_mask], y_new[query_mask], emb[gallery_mask], y_new[gallery_mask], ks=(1, 5)
    )
    assert scalars["map@5"] != no_new["map@5"]  # the "new" guess changed the score


def test_collapse_warning(digits):
    import warnings

    _, _, x_new, y_new = digits
    # Every embedding is the same direction up to a tiny perturbation.
    collapsed = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(
                8,
                kernel_initializer=keras.initializers.RandomNormal(stddev=1e-4),
                bias_initializer="ones",
            ),
        ]
    )
    cb = EmbeddingEvaluation(x_new, y_new, collapsed, num_pairs=200, verbose=0)
    with pytest.warns(UserWarning, match="collapsed"):
        cb.on_epoch_end(0, {})
    assert cb.inter_class_cosine[0] > 0.999
    # A trained model does not warn, and the statistic matches a brute-force pair average.
    train_model, embed_model = make_models()
    x, y = digits[0], digits[1]
    train_model.fit([x, y], y, epochs=2, batch_size=64, verbose=0)
    cb = EmbeddingEvaluation(x_new, y_new, embed_model, num_pairs=200, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cb.on_epoch_end(0, {})
    emb = embed_model.predict(x_new, verbose=0).astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb @ emb.T
    different = y_new[:, None] != y_new[None, :]
    assert cb.inter_class_cosine[0] == pytest.approx(sims[different].mean(), abs=1e-9)
    assert cb.inter_class_cosine[0] < 0.95
    # Disabled with None.
    cb = EmbeddingEvaluation(
        x_new, y_new, collapsed, num_pairs=200, collapse_threshold=None, verbose=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cb.on_epoch_end(0, {})


def test_arguments_checked_at_construction(digits):
    _, _, x_new, y_new = digits
    bad = [
        (dict(task="retrieval", ks=(1.5,)), "ks"),
        (dict(task="retrieval", ks=()), "ks"),
        (dict(task="retrieval", ks=5), "ks"),
        (dict(task="retrieval", ks=(True,)), "ks"),
        (dict(task="retrieval", ks=(0,)), "ks"),
        (dict(task="retrieval", ks=(10_000,)), "ks"),
        (dict(far_targets=(2.0,)), "far_targets"),
        (dict(far_targets=()), "far_targets"),
        (dict(far_targets="0.1"), "far_targets"),
        (dict(prefix=3), "prefix"),
        (dict(task="retrieval", new_threshold=0.5), "new_label"),
        (dict(new_label="new"), "new_label"),
        (dict(thresholds=[0.5]), "thresholds"),
        (dict(task="match_f1", thresholds=[]), "thresholds"),
        (dict(task="match_f1", thresholds=[np.nan]), "thresholds"),
        (dict(collapse_threshold=0.0), "collapse_threshold"),
        (dict(collapse_threshold="yes"), "collapse_threshold"),
        (dict(verbose=True), "verbose"),
        (dict(task="verification", gallery_x=x_new, gallery_y=y_new), "gallery_x"),
        (dict(n_folds=500, num_pairs=200), "n_folds"),
    ]
    for kwargs, name in bad:
        with pytest.raises(ValueError, match=name):
            EmbeddingEvaluation(x_new, y_new, **kwargs)
    with pytest.raises(ValueError, match="one-shot generator"):
        EmbeddingEvaluation(b for b in [(x_new, y_new)])
    with pytest.raises(ValueError, match="`x`"):
        EmbeddingEvaluation("images/")
    with pytest.raises(ValueError, match="`y`"):
        EmbeddingEvaluation(x_new)
    import tensorflow as tf

    with pytest.raises(ValueError, match="`y` must be None"):
        EmbeddingEvaluation(tf.data.Dataset.from_tensor_slices((x_new, y_new)).batch(8), y_new)
    with pytest.raises(ValueError, match="inputs only"):
        EmbeddingEvaluation(tf.data.Dataset.from_tensor_slices(x_new).batch(8))
