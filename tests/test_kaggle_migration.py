"""Porting a Kaggle notebook's ArcMarginProduct head into keras_margins (docs/guides/kaggle.md).

The notebook layer below is written here from its formula (PAPERS.md section 11): cosine of the
L2-normalized embeddings and kernel columns, ``phi = cos(theta + m)`` through the
``cos*cos(m) - sin*sin(m)`` identity, the ``cos > cos(pi - m)`` fallback ``cos - m sin(m)``
(or ``cos > 0`` with ``easy_margin``), an ``ls_eps``-mixed one-hot, and the scale ``s``.
"""

import math

import h5py
import keras
import numpy as np
import pytest

import keras_margins as km


class ArcMarginProduct(keras.layers.Layer):
    def __init__(self, n_classes, s=30.0, m=0.50, easy_margin=False, ls_eps=0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_classes, self.s, self.m = n_classes, s, m
        self.easy_margin, self.ls_eps = easy_margin, ls_eps

    def build(self, input_shape):
        self.W = self.add_weight(
            name="W", shape=(int(input_shape[0][-1]), self.n_classes), initializer="glorot_uniform"
        )

    def call(self, inputs):
        x, y = inputs
        ops = keras.ops
        x = x / ops.sqrt(ops.sum(x * x, axis=1, keepdims=True))
        w = self.W / ops.sqrt(ops.sum(self.W * self.W, axis=0, keepdims=True))
        cosine = ops.matmul(x, w)
        sine = ops.sqrt(1.0 - cosine * cosine)
        phi = cosine * math.cos(self.m) - sine * math.sin(self.m)
        if self.easy_margin:
            phi = ops.where(cosine > 0, phi, cosine)
        else:
            phi = ops.where(
                cosine > math.cos(math.pi - self.m),
                phi,
                cosine - math.sin(math.pi - self.m) * self.m,
            )
        one_hot = ops.one_hot(ops.cast(y, "int32"), self.n_classes)
        if self.ls_eps > 0:
            one_hot = (1 - self.ls_eps) * one_hot + self.ls_eps / self.n_classes
        return self.s * (one_hot * phi + (1.0 - one_hot) * cosine)


def notebook_model(n_classes, dim, **kwargs):
    emb = keras.Input((dim,))
    labels = keras.Input((), dtype="int32")
    head = ArcMarginProduct(n_classes, name="arc_margin_product", **kwargs)
    return keras.Model([emb, labels], head([emb, labels])), head


@pytest.mark.parametrize("easy_margin", [False, True])
@pytest.mark.parametrize("m", [0.5, 0.3])
def test_ported_kernel_gives_the_notebook_logits(rng, easy_margin, m):
    n_classes, dim = 11, 16
    model, nb_head = notebook_model(n_classes, dim, s=30.0, m=m, easy_margin=easy_margin)
    x = rng.normal(size=(64, dim)).astype("float32")
    y = rng.integers(0, n_classes, size=64)
    # Notebook name -> keras_margins argument: n_classes -> num_classes, s -> scale,
    # m -> margin, easy_margin -> easy_margin. The kernel has the same (D, C) layout.
    head = km.ArcMarginLayer(num_classes=n_classes, scale=30.0, margin=m, easy_margin=easy_margin)
    head.build([(None, dim), (None,)])
    head.set_weights(nb_head.get_weights())
    ours = keras.ops.convert_to_numpy(head([x, y]))
    theirs = keras.ops.convert_to_numpy(model([x, y]))
    np.testing.assert_allclose(ours, theirs, atol=3e-4, rtol=0)  # 1e-5 relative to s = 30
    # Without labels (inference) both are s * cos.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(head(x)),
        keras.ops.convert_to_numpy(model([x, np.full(64, -1)])),
        atol=3e-4,
        rtol=0,
    )


def test_port_from_a_notebook_weights_file(rng, tmp_path):
    # A notebook saved only `model.save_weights("head.weights.h5")`: read the kernel with h5py.
    model, nb_head = notebook_model(7, 8)
    path = str(tmp_path / "notebook.weights.h5")
    model.save_weights(path)
    found = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None
        )
        assert len(found) == 1 and found[0].endswith("arc_margin_product/vars/0"), found
        kernel = f[found[0]][()]
    head = km.ArcMarginLayer(num_classes=7, scale=30.0, margin=0.5)
    head.build([(None, 8), (None,)])
    head.set_weights([kernel])
    x, y = rng.normal(size=(5, 8)).astype("float32"), np.arange(5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(head([x, y])),
        keras.ops.convert_to_numpy(model([x, y])),
        atol=3e-4,
    )


def test_ls_eps_is_not_label_smoothing(rng):
    # ls_eps spreads the margin over the classes inside the logits (PAPERS.md section 11);
    # keras_margins has no equivalent, and loss-side label smoothing is a different function.
    n, dim, eps = 5, 8, 0.1
    model, nb_head = notebook_model(n, dim, s=30.0, m=0.5, ls_eps=eps)
    x = rng.normal(size=(32, dim)).astype("float32")
    y = rng.integers(0, n, size=32)
    head = km.ArcMarginLayer(num_classes=n, scale=30.0, margin=0.5)
    head.build([(None, dim), (None,)])
    head.set_weights(nb_head.get_weights())
    ours = keras.ops.convert_to_numpy(head([x, y])).astype(np.float64)
    theirs = keras.ops.convert_to_numpy(model([x, y])).astype(np.float64)
    cos = keras.ops.convert_to_numpy(head(x)).astype(np.float64)  # s * cos
    onehot = np.eye(n)[y]
    # Target logits get only a (1 - eps + eps/C) share of the margin...
    share = (theirs - cos) / np.where(ours - cos == 0, 1, ours - cos)
    np.testing.assert_allclose(share[onehot == 1], 1 - eps + eps / n, rtol=2e-3)
    # ...and every non-target logit is moved by eps/C of its own margin.
    assert np.all(np.abs(theirs - cos)[onehot == 0] > 0)
    # Label smoothing in the loss leaves the logits alone: no setting of ours reproduces them.
    assert np.max(np.abs(ours - theirs)) > 0.1
