"""Tests of keras_margins.datasets: IDX parsing, Fashion-MNIST sources, splits, rendered glyphs."""

import gzip
import os
import struct

import numpy as np
import pytest

from keras_margins import datasets

DEBIAN_DIR = datasets.DEBIAN_FASHION_MNIST_DIR
DEBIAN_FILES = [
    f"{part}-{kind}-idx{n}-ubyte.gz"
    for part in ("train", "t10k")
    for kind, n in (("images", 3), ("labels", 1))
]
HAS_DEBIAN = all(os.path.exists(os.path.join(DEBIAN_DIR, f)) for f in DEBIAN_FILES)
NEEDS_DEBIAN = pytest.mark.skipif(
    not HAS_DEBIAN,
    reason=f"Debian package dataset-fashion-mnist not installed ({DEBIAN_DIR} missing); "
    "install it with `apt-get install -y dataset-fashion-mnist`",
)

ALL_FONTS = datasets.find_fonts()


def _font(name):
    for path in ALL_FONTS:
        if os.path.basename(path) == name:
            return path
    pytest.skip(f"font {name} not installed (apt-get install -y {datasets.FONT_PACKAGES})")


# ---------------------------------------------------------------- IDX, written byte by byte


def _idx_bytes(code, shape, payload):
    """An IDX file from the format's definition: 0, 0, type code, ndim, big-endian sizes, data."""
    header = bytes([0, 0, code, len(shape)])
    for size in shape:
        header += struct.pack(">I", size)
    return header + payload


def test_read_idx_uint8_images_and_gzip(tmp_path):
    values = [[[0, 1, 2], [3, 4, 255]], [[9, 8, 7], [6, 5, 4]]]
    raw = _idx_bytes(0x08, (2, 2, 3), bytes(v for img in values for row in img for v in row))
    plain = tmp_path / "x-idx3-ubyte"
    plain.write_bytes(raw)
    packed = tmp_path / "x-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(raw))
    for path in (plain, packed):
        got = datasets.read_idx(path)
        assert got.dtype == np.uint8 and got.shape == (2, 2, 3)
        np.testing.assert_array_equal(got, np.array(values))


def test_read_idx_big_endian_int32_and_float64(tmp_path):
    ints = [1, -2, 70000]
    path = tmp_path / "ints.idx"
    path.write_bytes(_idx_bytes(0x0C, (3,), b"".join(struct.pack(">i", v) for v in ints)))
    got = datasets.read_idx(path)
    assert got.dtype == np.int32 and got.dtype.isnative
    assert got.tolist() == ints
    floats = [[0.5, -1.25], [3e10, 0.0]]
    path = tmp_path / "floats.idx"
    path.write_bytes(
        _idx_bytes(0x0E, (2, 2), b"".join(struct.pack(">d", v) for r in floats for v in r))
    )
    np.testing.assert_array_equal(datasets.read_idx(path), np.array(floats))


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "two zero bytes"),
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "two zero bytes"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]), "unknown data type code 0x42"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 2]), "truncated header"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2, 3]), "4 bytes of data"),  # one byte short
        (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "holds 2 bytes"),  # one byte too many
        (gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))[:-6], "gzip"),  # truncated
    ],
)
def test_read_idx_corrupt_file_raises_clear_error(tmp_path, raw, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="Corrupt IDX file") as info:
        datasets.read_idx(path)
    assert message in str(info.value) and "bad.idx" in str(info.value)


# ---------------------------------------------------------------- digits and Fashion-MNIST


def test_load_digits_matches_sklearn_and_is_stratified():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = datasets.load_digits(test_size=0.25, seed=3)
    assert data.source == "digits" and data.num_classes == 10
    assert data.x_train.shape[1:] == (8, 8, 1) and data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    assert len(data.x_train) + len(data.x_test) == len(bunch.images)
    # Every returned image is a sklearn image scaled by 1/16, with its own label.
    lookup = {img.tobytes(): t for img, t in zip((bunch.images / 16.0).astype(np.float32),
                                                 bunch.target)}
    for x, y in zip(data.x_test[..., 0], data.y_test):
        assert lookup[x.tobytes()] == y
    # Stratified: each class's share of the test set matches its share overall.
    np.testing.assert_allclose(
        np.bincount(data.y_test) / len(data.y_test),
        np.bincount(bunch.target) / len(bunch.target),
        atol=0.01,
    )
    flat = datasets.load_digits(flat=True, test_size=0.25, seed=3)
    np.testing.assert_array_equal(flat.x_train, data.x_train.reshape(-1, 64))
    (x_train, _), (x_test, _) = data
    assert x_train is data.x_train and x_test is data.x_test


def _write_fake_fashion(directory, n_train=6, n_test=4, gz=True):
    rng = np.random.default_rng(0)
    arrays = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr, ndim in (("images", x, 3), ("labels", y, 1)):
            raw = _idx_bytes(0x08, arr.shape, arr.tobytes())
            name = f"{part}-{kind}-idx{ndim}-ubyte" + (".gz" if gz else "")
            (directory / name).write_bytes(gzip.compress(raw) if gz else raw)
        arrays[part] = (x, y)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx_folder(tmp_path, gz):
    arrays = _write_fake_fashion(tmp_path, gz=gz)
    data = datasets.load_fashion_mnist(source="debian", data_dir=tmp_path)
    assert data.source == "debian"
    np.testing.assert_allclose(data.x_train[..., 0] * 255.0, arrays["train"][0], atol=1e-4)
    np.testing.assert_array_equal(data.y_test, arrays["t10k"][1])
    assert data.class_names == datasets.FASHION_MNIST_CLASSES


@NEEDS_DEBIAN
def test_fashion_mnist_debian_package():
    data = datasets.load_fashion_mnist(source="debian")
    assert data.source == "debian"
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min() < data.x_train.max() <= 1
    np.testing.assert_array_equal(np.bincount(data.y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(data.y_test), np.full(10, 1000))
    # The published first training labels of Fashion-MNIST: ankle boot, T-shirt, T-shirt, dress.
    assert data.y_train[:4].tolist() == [9, 0, 0, 3]


def test_fallback_order(tmp_path, monkeypatch):
    calls = []

    def offline(timeout):
        calls.append(timeout)
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "_load_fashion_mnist_keras", offline)
    _write_fake_fashion(tmp_path)
    # 1. Keras fails -> the IDX folder.
    data = datasets.load_fashion_mnist(data_dir=tmp_path, download_timeout=3)
    assert data.source == "debian" and calls == [3.0]
    assert "ConnectionError" in data.info["fallback_reasons"]["keras"]
    # 2. Keras and the folder fail -> digits, with both reasons.
    empty = tmp_path / "empty"
    empty.mkdir()
    data = datasets.load_fashion_mnist(data_dir=empty)
    assert data.source == "digits" and data.x_train.shape[1:] == (8, 8, 1)
    assert set(data.info["fallback_reasons"]) == {"keras", "debian"}
    # 3. allow_download=False never calls Keras.
    calls.clear()
    assert datasets.load_fashion_mnist(data_dir=tmp_path, allow_download=False).source == "debian"
    assert calls == []
    # 4. A named source that fails raises instead of falling back.
    with pytest.raises(ConnectionError):
        datasets.load_fashion_mnist(source="keras")
    with pytest.raises(FileNotFoundError):
        datasets.load_fashion_mnist(source="debian", data_dir=empty)
    # 5. A corrupt file in the folder is a fallback reason in "auto", an error when named.
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x00\x00\x99\x01")
    data = datasets.load_fashion_mnist(data_dir=tmp_path, allow_download=False)
    assert data.source == "digits" and "Corrupt IDX" in data.info["fallback_reasons"]["debian"]
    with pytest.raises(ValueError, match="Corrupt IDX"):
        datasets.load_fashion_mnist(source="debian", data_dir=tmp_path)


def test_keras_success_is_used_first(monkeypatch, tmp_path):
    x = np.zeros((3, 28, 28), np.uint8)
    y = np.array([1, 2, 3], np.uint8)
    monkeypatch.setattr(datasets, "_load_fashion_mnist_keras", lambda timeout: ((x, y), (x, y)))
    _write_fake_fashion(tmp_path)
    data = datasets.load_fashion_mnist(data_dir=tmp_path)
    assert data.source == "keras" and data.y_train.tolist() == [1, 2, 3]


# ---------------------------------------------------------------- open-set split


def test_open_set_split_disjoint_complete_and_seeded(rng):
    y = rng.integers(0, 12, size=600)
    x = np.arange(600)[:, None] * np.ones((1, 3))
    split = datasets.open_set_split(x, y, num_held_out=4, seed=7, class_names=list("abcdefghijkl"))
    assert len(split.test_classes) == 4 and len(split.train_classes) == 8
    assert not set(split.train_classes) & set(split.test_classes)
    # Every sample is on exactly one side, with its original label recoverable.
    ids = np.concatenate([split.x_train[:, 0], split.x_test[:, 0]]).astype(int)
    assert sorted(ids) == list(range(600))
    for xs, ys, classes in ((split.x_train, split.y_train, split.train_classes),
                            (split.x_test, split.y_test, split.test_classes)):
        np.testing.assert_array_equal(classes[ys], y[xs[:, 0].astype(int)])
    assert split.y_train.max() == 7 and split.y_test.max() == 3
    assert split.test_names == tuple("abcdefghijkl"[c] for c in split.test_classes)
    again = datasets.open_set_split(x, y, num_held_out=4, seed=7)
    np.testing.assert_array_equal(again.test_classes, split.test_classes)
    held = {tuple(datasets.open_set_split(x, y, 4, seed=s).test_classes) for s in range(10)}
    assert len(held) > 5  # different seeds, different held-out classes


def test_dataset_open_set_pools_train_and_test():
    data = datasets.load_digits()
    split = data.open_set(num_held_out=3, seed=1)
    assert split.source == "digits"
    assert len(split.x_train) + len(split.x_test) == 1797
    assert split.num_test_classes == 3 and split.num_train_classes == 7
    assert set(split.test_names) == {str(c) for c in split.test_classes}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_held_out": 0}, "num_held_out"),
        ({"num_held_out": 10}, "num_held_out"),
        ({"num_held_out": 2.0}, "num_held_out"),
        ({"num_held_out": 2, "seed": -1}, "seed"),
    ],
)
def test_open_set_split_bad_arguments(kwargs, name):
    y = np.arange(10).repeat(3)
    with pytest.raises(ValueError, match=f"`{name}`"):
        datasets.open_set_split(np.zeros((30, 2)), y, **kwargs)


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="`source`.*Received: source='mnist'"):
        datasets.load_fashion_mnist(source="mnist")
    with pytest.raises(ValueError, match="`download_timeout`"):
        datasets.load_fashion_mnist(download_timeout=0)
    with pytest.raises(ValueError, match="`test_size`"):
        datasets.load_digits(test_size=1.0)
    with pytest.raises(ValueError, match="`y`"):
        datasets.open_set_split(np.zeros(4), np.array([0.0, 1.0, 0.0, 1.0]), 1)
    font = [ALL_FONTS[0]] if ALL_FONTS else []
    bad = [
        ({"characters": "AAB"}, "characters"),
        ({"characters": "A"}, "characters"),
        ({"characters": ["AB", "C"]}, "characters"),
        ({"characters": "A B"}, "characters"),
        ({"image_size": 4}, "image_size"),
        ({"samples_per_font": 0}, "samples_per_font"),
        ({"samples_per_font": 2, "augment": False}, "samples_per_font"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"seed": "0"}, "seed"),
        ({"fonts": [str(tmp_path / "nope.ttf")]}, "fonts"),
    ]
    for kwargs, name in bad:
        kwargs = {"characters": "ABC", "fonts": font, "cache_dir": tmp_path, **kwargs}
        with pytest.raises(ValueError, match=f"`{name}`"):
            datasets.load_glyphs(**kwargs)


# ---------------------------------------------------------------- glyphs

SMALL_CHARS = "AaBg\u03a9\u03b6\u0416\u044f"  # Latin, Greek and Cyrillic, with descenders


def test_find_fonts_lists_font_files_only(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.TTF").write_bytes(b"x")
    (tmp_path / "b.otf").write_bytes(b"x")
    (tmp_path / "c.pfb").write_bytes(b"x")
    got = datasets.find_fonts([tmp_path])
    assert sorted(os.path.basename(p) for p in got) == ["a.TTF", "b.otf"]
    assert got == sorted(got)


def test_glyphs_render_small(tmp_path):
    fonts = [_font("DejaVuSans.ttf"), _font("LiberationSerif-Regular.ttf")]
    data = datasets.load_glyphs(
        characters=SMALL_CHARS, fonts=fonts, samples_per_font=3, test_fraction=0.25,
        seed=1, cache_dir=tmp_path,
    )
    assert data.source == "glyphs" and data.info["fonts"] == sorted(fonts)
    assert data.num_train_classes == 6 and data.num_test_classes == 2
    n = len(SMALL_CHARS) * 2 * 3
    assert len(data.x_train) + len(data.x_test) == n
    assert data.x_train.shape[1:] == (32, 32, 1) and data.x_train.dtype == np.float32
    # Each (identity, font) has 3 samples, every image has ink, none touches the border much.
    for x in (data.x_train, data.x_test):
        assert x.min() >= 0 and x.max() <= 1
        ink = x.reshape(len(x), -1).sum(axis=1)
        assert (ink > 5).all()
        assert x[:, [0, -1], :, :].max() < 0.5 and x[:, :, [0, -1], :].max() < 0.5
    counts = np.bincount(data.y_train * 2 + data.info["train_fonts"])
    np.testing.assert_array_equal(counts, np.full(12, 3))
    # Augmented samples of one character in one font differ (the augmentation is applied),
    # yet stay closer to each other than to other characters of the same font (it is light),
    # and the pixel nearest neighbour finds the identity far above chance (1/6).
    x = data.x_train.reshape(len(data.x_train), -1)
    y, f = data.y_train, data.info["train_fonts"]
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    off_diagonal = ~np.eye(len(y), dtype=bool)
    same_font = (f[:, None] == f[None]) & off_diagonal
    same = same_font & (y[:, None] == y[None])
    other = same_font & (y[:, None] != y[None])
    assert (dist[same] > 0.5).all()
    assert dist[same].mean() < dist[other].mean()
    np.fill_diagonal(dist, np.inf)
    assert (y[dist.argmin(axis=1)] == y).mean() >= 0.5


def test_glyphs_case_kept_by_baseline(tmp_path):
    """Glyphs sit on a fixed baseline: 'o' is smaller and lower than 'O', 'g' goes below it."""
    data = datasets.load_glyphs(
        characters="Oog", fonts=[_font("DejaVuSans.ttf")], samples_per_font=1, augment=False,
        test_fraction=0.34, seed=0, use_cache=False,
    )
    images = {}
    for x, y, names in ((data.x_train, data.y_train, data.train_names),
                        (data.x_test, data.y_test, data.test_names)):
        for img, label in zip(x[..., 0], y):
            images[names[label]] = img
    rows = {c: np.where(images[c].max(axis=1) > 0.3)[0] for c in "Oog"}
    assert rows["O"][0] < rows["o"][0] - 3  # capital reaches higher
    assert abs(rows["O"][-1] - rows["o"][-1]) <= 1  # same baseline
    assert rows["g"][-1] > rows["o"][-1] + 3  # descender


def test_missing_glyph_detection_agrees_with_cmap():
    fontTools = pytest.importorskip("fontTools.ttLib")
    chars = "A\u03a9\u0416\u05d0\u0628\u4e2d"  # Latin, Greek, Cyrillic, Hebrew, Arabic, Han
    paths = [_font("DejaVuSans.ttf"), _font("LiberationMono-Regular.ttf"),
             _font("URWGothic-Book.otf")]
    paths += [p for p in ALL_FONTS if "NotoSansHebrew" in p or "NotoSansArabic" in p][:2]
    for path in paths:
        cmap = fontTools.TTFont(path, lazy=True).getBestCmap()
        expected = [c for c in chars if ord(c) not in cmap]
        assert datasets._missing_characters(path, chars) == expected, path
    # U+4E2D is in none of these fonts, so detection must flag at least that one.
    assert all("\u4e2d" in datasets._missing_characters(p, chars) for p in paths)


def test_fonts_lacking_a_glyph_are_skipped(tmp_path):
    hebrew = [p for p in ALL_FONTS if os.path.basename(p).startswith("NotoSansHebrew-")]
    if not hebrew:
        pytest.skip("fonts-noto-core not installed")
    fonts = [_font("DejaVuSans.ttf"), hebrew[0]]
    data = datasets.load_glyphs(characters="AB\u0416", fonts=fonts, test_fraction=0.34,
                                samples_per_font=1, use_cache=False)
    assert data.info["fonts"] == [fonts[0]]
    assert "lacks" in data.info["skipped_fonts"][hebrew[0]]
    assert set(np.unique(data.info["train_fonts"])) == {0}
    with pytest.raises(ValueError, match="apt-get install"):
        datasets.load_glyphs(characters="AB\u0416", fonts=[hebrew[0]], use_cache=False)


def test_no_font_found_gives_apt_command(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "find_fonts", lambda font_dirs=None: [])
    with pytest.raises(FileNotFoundError, match="apt-get install -y fonts-dejavu-core"):
        datasets.load_glyphs(cache_dir=tmp_path)


def test_glyph_cache_hit_is_identical_and_renders_nothing(tmp_path, monkeypatch):
    fonts = [_font("DejaVuSerif.ttf"), _font("FreeSans.ttf")]
    kwargs = dict(characters="xyz\u03bb\u0448", fonts=fonts, test_fraction=0.4, seed=5)
    monkeypatch.setenv("KERAS_MARGINS_CACHE", str(tmp_path / "envcache"))
    first = datasets.load_glyphs(**kwargs)
    assert not first.info["from_cache"]
    path = first.info["cache_path"]
    assert path.startswith(str(tmp_path / "envcache")) and os.path.exists(path)

    def fail(*args, **kwargs):
        raise AssertionError("rendered again despite the cache")

    monkeypatch.setattr(datasets, "_render_glyph_arrays", fail)
    second = datasets.load_glyphs(**kwargs)
    assert second.info["from_cache"] and second.info["cache_path"] == path
    for name in ("x_train", "y_train", "x_test", "y_test", "train_classes", "test_classes"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.info["fonts"] == first.info["fonts"]
    # Another split seed of the same rendering is a different key (seed drives augmentation).
    with pytest.raises(AssertionError, match="rendered again"):
        datasets.load_glyphs(**{**kwargs, "seed": 6})
    # The argument overrides the environment variable.
    monkeypatch.undo()
    other = datasets.load_glyphs(**kwargs, cache_dir=tmp_path / "argcache")
    assert other.info["cache_path"].startswith(str(tmp_path / "argcache"))
    np.testing.assert_array_equal(other.x_train, first.x_train)  # same seed, same pixels


def test_glyph_corrupt_cache_is_rendered_again(tmp_path):
    kwargs = dict(characters="AB\u0416", fonts=[_font("DejaVuSans.ttf")], test_fraction=0.34,
                  cache_dir=tmp_path)
    first = datasets.load_glyphs(**kwargs)
    with open(first.info["cache_path"], "wb") as f:
        f.write(b"not an npz")
    again = datasets.load_glyphs(**kwargs)
    assert not again.info["from_cache"]
    np.testing.assert_array_equal(again.x_train, first.x_train)


def test_glyph_split_is_identity_disjoint_and_seeded(tmp_path):
    fonts = [_font("DejaVuSans.ttf")]
    chars = "ABCDEFGHIJKLMNOPQRST"
    splits = [
        datasets.load_glyphs(characters=chars, fonts=fonts, samples_per_font=1, seed=s,
                             test_fraction=0.25, flat=True, cache_dir=tmp_path)
        for s in (0, 0, 1)
    ]
    for split in splits:
        assert split.x_train.shape[1:] == (32 * 32,)
        assert split.num_test_classes == 5
        assert not set(split.train_names) & set(split.test_names)
        assert set(split.train_names) | set(split.test_names) == set(chars)
    np.testing.assert_array_equal(splits[0].test_classes, splits[1].test_classes)
    np.testing.assert_array_equal(splits[0].x_test, splits[1].x_test)
    assert splits[1].info["from_cache"]
    assert list(splits[0].test_classes) != list(splits[2].test_classes)


def test_default_characters_are_distinct_identities():
    """No two default identities render (nearly) alike in DejaVu Sans: homoglyphs left out."""
    chars = datasets.GLYPH_CHARACTERS
    assert len(set(chars)) == len(chars) >= 130
    data = datasets.load_glyphs(fonts=[_font("DejaVuSans.ttf")], augment=False,
                                samples_per_font=1, test_fraction=0.01, flat=True,
                                use_cache=False)
    x = np.concatenate([data.x_train, data.x_test])
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    assert dist.min() > 1.0


# ---------------------------------------------------------------- a fresh machine


def _fresh_machine(monkeypatch, tmp_path):
    """No system fonts and no Debian datasets: only what the pip dependencies bring."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv(datasets.FONT_DIRS_ENV, str(empty))
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(empty))
    monkeypatch.setenv("KERAS_HOME", str(empty / "keras"))
    return empty


def test_fresh_machine_fonts_are_matplotlibs(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    _fresh_machine(monkeypatch, tmp_path)
    bundled = os.path.realpath(datasets.bundled_font_dir())
    fonts = datasets.find_fonts()
    assert fonts and all(f.startswith(bundled + os.sep) for f in fonts)
    names = {os.path.basename(f) for f in fonts}
    assert {"DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneral.ttf"} <= names
    # An empty variable means "no system folder" too; unset, the system folders come back.
    monkeypatch.setenv(datasets.FONT_DIRS_ENV, "")
    assert datasets.find_fonts() == fonts
    monkeypatch.delenv(datasets.FONT_DIRS_ENV)
    assert set(fonts) <= set(datasets.find_fonts())
    # Explicit folders are searched alone unless bundled=True.
    assert datasets.find_fonts([tmp_path / "empty"]) == []
    assert datasets.find_fonts([tmp_path / "empty"], bundled=True) == fonts


def test_fresh_machine_glyph_benchmark_builds_from_matplotlib_fonts(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    _fresh_machine(monkeypatch, tmp_path)
    data = datasets.load_glyphs(samples_per_font=1, cache_dir=tmp_path / "cache")
    assert data.info["font_set"] == "matplotlib"
    kept = {os.path.basename(f) for f in data.info["fonts"]}
    # DejaVu Sans, Serif and Mono and STIX General, 4 faces each, cover all 132 identities.
    assert len(kept) == 16, sorted(kept)
    assert {"DejaVuSansMono-BoldOblique.ttf", "STIXGeneralBolIta.ttf"} <= kept
    skipped = {os.path.basename(f): why for f, why in data.info["skipped_fonts"].items()}
    # Computer Modern lacks Greek capitals and Cyrillic; LastResort maps every code point to
    # one box per Unicode block, so it is no sample of anything.
    assert skipped["cmr10.ttf"].startswith("lacks")
    assert "identically" in skipped["LastResortHE-Regular.ttf"]
    assert data.num_train_classes + data.num_test_classes == len(datasets.GLYPH_CHARACTERS)
    assert len(data.x_train) + len(data.x_test) == 16 * len(datasets.GLYPH_CHARACTERS)
    # The font set is part of the cache key: the same call with system fonts is another file.
    assert "glyphs-" in data.info["cache_path"]


def test_fallback_font_drawing_one_glyph_for_all_is_detected():
    pytest.importorskip("matplotlib")
    last_resort = os.path.join(datasets.bundled_font_dir(), "LastResortHE-Regular.ttf")
    if not os.path.exists(last_resort):
        pytest.skip("this matplotlib has no LastResortHE font")
    # It "has" every character (no .notdef), yet draws A and B alike.
    assert datasets._missing_characters(last_resort, "AB") == []
    assert datasets._identical_glyphs(last_resort, "AB") == ("A", "B")
    assert datasets._identical_glyphs(_font("DejaVuSans.ttf"), datasets.GLYPH_CHARACTERS) is None


def test_same_font_installed_twice_is_kept_once(tmp_path):
    src = _font("DejaVuSans.ttf")
    copy = tmp_path / "copy-of-dejavu.ttf"
    copy.write_bytes(open(src, "rb").read())
    data = datasets.load_glyphs(characters="AB\u0416", fonts=[src, str(copy)],
                                test_fraction=0.34, samples_per_font=1, use_cache=False)
    assert len(data.info["fonts"]) == 1
    (why,) = data.info["skipped_fonts"].values()
    assert why.startswith("same font (DejaVu Sans Book)")


def test_font_set_names(tmp_path):
    pytest.importorskip("matplotlib")
    mpl = os.path.join(datasets.bundled_font_dir(), "DejaVuSans.ttf")
    other = tmp_path / "x.ttf"
    other.write_bytes(b"x")
    assert datasets.font_set([mpl]) == "matplotlib"
    assert datasets.font_set([mpl, str(other)]) == "matplotlib+system"
    assert datasets.font_set([str(other)]) == "system"


def test_fashion_mnist_data_dir_follows_the_environment(monkeypatch, tmp_path):
    _fresh_machine(monkeypatch, tmp_path)
    data = datasets.load_fashion_mnist(allow_download=False)
    assert data.source == "digits"
    assert str(tmp_path / "empty" / "fashion-mnist") in data.info["fallback_reasons"]["debian"]
