"""Plots: files are written and the drawn data equal the metrics (Agg backend)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_margins as km  # noqa: E402
from keras_margins.plots import (  # noqa: E402
    plot_cmc,
    plot_features_on_sphere,
    plot_roc,
    plot_score_histogram,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def report(rng):
    labels = np.repeat(np.arange(10), 20)
    x = rng.normal(size=(10, 8))[labels] + 0.9 * rng.normal(size=(200, 8))
    return km.verify_embeddings(x, labels, num_pairs=2000, seed=1)


def test_roc_from_report(report, tmp_path):
    path = tmp_path / "roc.png"
    fig = plot_roc(report, path=str(path))
    assert path.exists() and path.stat().st_size > 1000
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    curve, marks = ax.get_lines()
    keep = report.far > 0  # FAR = 0 cannot sit on a log axis
    np.testing.assert_allclose(curve.get_xdata(), report.far[keep])
    np.testing.assert_allclose(curve.get_ydata(), report.tar[keep])
    np.testing.assert_allclose(marks.get_xdata(), list(report.tar_at_far))
    np.testing.assert_allclose(marks.get_ydata(), list(report.tar_at_far.values()))
    assert curve.get_label() == f"AUC = {report.auc:.4f}"


def test_roc_from_arrays_into_given_axes(rng):
    scores = rng.normal(size=100)
    issame = rng.integers(0, 2, 100).astype(bool)
    far, tar, _ = km.roc_curve(scores, issame)
    fig, ax = plt.subplots()
    out = plot_roc(far, tar, label="model", ax=ax)
    assert out is fig
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), tar[far > 0])


def test_cmc(rng, tmp_path):
    g = rng.normal(size=(6, 4))
    gl = np.arange(6)
    pl = rng.integers(0, 6, 30)
    p = g[pl] + 0.8 * rng.normal(size=(30, 4))
    ranks, cmc = km.cmc_curve(p, pl, g, gl)
    path = tmp_path / "cmc.pdf"
    fig = plot_cmc((ranks, cmc), label="probe set", path=str(path))
    assert path.exists() and path.stat().st_size > 500
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), ranks)
    np.testing.assert_allclose(line.get_ydata(), cmc)


def test_score_histogram(report, tmp_path):
    path = tmp_path / "hist.svg"
    fig = plot_score_histogram(report, bins=20, path=str(path))
    assert path.exists()
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Cosine similarity"
    bars = ax.patches
    assert len(bars) == 40
    edges = np.histogram_bin_edges(report.scores, bins=20)
    gen_density, _ = np.histogram(report.scores[report.issame], bins=edges, density=True)
    imp_density, _ = np.histogram(report.scores[~report.issame], bins=edges, density=True)
    np.testing.assert_allclose([b.get_height() for b in bars[:20]], gen_density)
    np.testing.assert_allclose([b.get_height() for b in bars[20:]], imp_density)
    threshold_line = ax.get_lines()[0]
    assert threshold_line.get_xdata()[0] == pytest.approx(report.best_threshold)


def test_features_on_circle_and_sphere(rng, tmp_path):
    labels = np.repeat(np.arange(3), 15)
    for d in (2, 3):
        centers = rng.normal(size=(3, d))
        x = centers[labels] * rng.uniform(1, 5, size=(45, 1)) + 0.1 * rng.normal(size=(45, d))
        path = tmp_path / f"sphere{d}.png"
        fig = plot_features_on_sphere(x, labels, centers=centers, path=str(path))
        assert path.exists()
        ax = fig.axes[0]
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        scatters = ax.collections[-3:]  # the 3-D wireframe is a collection too
        for c, sc in enumerate(scatters):
            pts = sc.get_offsets() if d == 2 else np.stack(sc._offsets3d, axis=1)
            np.testing.assert_allclose(np.asarray(pts), unit[labels == c])
            np.testing.assert_allclose(np.linalg.norm(unit[labels == c], axis=1), 1.0)
        centre_lines = ax.get_lines()[-3:]
        for c, line in enumerate(centre_lines):
            w = centers[c] / np.linalg.norm(centers[c])
            data = line.get_data_3d() if d == 3 else line.get_data()
            np.testing.assert_allclose([coord[1] for coord in data], w)  # origin -> w
            np.testing.assert_allclose([coord[0] for coord in data], 0.0)
    # Default centres: mean feature direction per class.
    fig = plot_features_on_sphere(x[:, :2], labels)
    assert len(fig.axes[0].get_lines()) == 1 + 3  # unit circle + three centres


def test_errors(report):
    with pytest.raises(ValueError, match="tar"):
        plot_roc(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="same length"):
        plot_roc([0.1, 0.2], [0.5])
    with pytest.raises(ValueError, match="issame"):
        plot_score_histogram([0.1, 0.2])
    with pytest.raises(ValueError, match="embeddings"):
        plot_features_on_sphere(np.ones((4, 5)), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="centers"):
        plot_features_on_sphere(np.ones((4, 2)), [0, 0, 1, 1], centers=np.ones((2, 3)))
    with pytest.raises(ValueError, match="labels"):
        plot_features_on_sphere(np.ones((4, 2)), [0, 0, 1])


def test_sphere_legend_uses_class_names():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.1], [-0.9, -0.1]])
    labels = np.array([2, 2, 0, 1, 1])

    def legend(fig):
        return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]

    assert legend(plot_features_on_sphere(x, labels)) == ["0", "1", "2"]
    names = ("Coat", "Sneaker", "Bag")
    assert legend(plot_features_on_sphere(x, labels, class_names=names)) == list(names)
    mapping = {0: "zero", 1: "one", 2: "two", 7: "unused"}
    assert legend(plot_features_on_sphere(x, labels, class_names=mapping)) == ["zero", "one", "two"]
    with pytest.raises(ValueError, match=r"class_names.*\[2\]"):
        plot_features_on_sphere(x, labels, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"class_names.*\[1\]"):
        plot_features_on_sphere(x, labels, class_names={0: "a", 2: "c"})
    with pytest.raises(ValueError, match="class_names"):
        plot_features_on_sphere(x, labels, class_names="abc")


def test_sphere_negative_labels_never_index_names_from_the_end():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.1]])
    labels = np.array([-1, 0, 1])
    with pytest.raises(ValueError, match=r"`labels` must be >= 0.*Received: labels with \[-1\]"):
        plot_features_on_sphere(x, labels, class_names=["a", "b", "c"])
    # A mapping names negative labels explicitly: that stays allowed.
    fig = plot_features_on_sphere(x, labels, class_names={-1: "unknown", 0: "a", 1: "b"})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["unknown", "a", "b"]


def test_sphere_title_legend_outside_and_three_ticks(rng, tmp_path):
    labels = np.repeat(np.arange(4), 10)
    x = rng.normal(size=(4, 3))[labels] + 0.1 * rng.normal(size=(40, 3))
    fig = plot_features_on_sphere(x, labels)
    ax = fig.axes[0]
    # Without centres the lines are mean directions, and the title says so.
    assert ax.get_title() == "Normalized features and class mean directions"
    centers = rng.normal(size=(4, 3))
    assert (
        plot_features_on_sphere(x, labels, centers=centers).axes[0].get_title()
        == "Normalized features and class centres"
    )
    fig = plot_features_on_sphere(x, labels, title=None, path=str(tmp_path / "s.png"))
    ax = fig.axes[0]
    assert ax.get_title() == "" and not fig.texts
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        np.testing.assert_allclose(axis.get_ticklocs(), [-1.0, 0.0, 1.0])
    # The legend is drawn right of the axes, not over the sphere.
    fig.canvas.draw()
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= ax.get_window_extent().x1 - 1
