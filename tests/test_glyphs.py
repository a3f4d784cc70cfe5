"""keras_margins.datasets.glyphs: font discovery, glyph rendering, the cache, a fresh machine."""

import os

import numpy as np
import pytest

from keras_margins import datasets
from keras_margins.datasets import glyphs
from tests.datasets_support import ALL_FONTS, _font, _fresh_machine

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
        characters=SMALL_CHARS,
        fonts=fonts,
        samples_per_font=3,
        test_fraction=0.25,
        seed=1,
        cache_dir=tmp_path,
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
        characters="Oog",
        fonts=[_font("DejaVuSans.ttf")],
        samples_per_font=1,
        augment=False,
        test_fraction=0.34,
        seed=0,
        use_cache=False,
    )
    images = {}
    for x, y, names in (
        (data.x_train, data.y_train, data.train_names),
        (data.x_test, data.y_test, data.test_names),
    ):
        for img, label in zip(x[..., 0], y):
            images[names[label]] = img
    rows = {c: np.where(images[c].max(axis=1) > 0.3)[0] for c in "Oog"}
    assert rows["O"][0] < rows["o"][0] - 3  # capital reaches higher
    assert abs(rows["O"][-1] - rows["o"][-1]) <= 1  # same baseline
    assert rows["g"][-1] > rows["o"][-1] + 3  # descender


def test_missing_glyph_detection_agrees_with_cmap():
    fontTools = pytest.importorskip("fontTools.ttLib")
    chars = "A\u03a9\u0416\u05d0\u0628\u4e2d"  # Latin, Greek, Cyrillic, Hebrew, Arabic, Han
    paths = [
        _font("DejaVuSans.ttf"),
        _font("LiberationMono-Regular.ttf"),
        _font("URWGothic-Book.otf"),
    ]
    paths += [p for p in ALL_FONTS if "NotoSansHebrew" in p or "NotoSansArabic" in p][:2]
    for path in paths:
        cmap = fontTools.TTFont(path, lazy=True).getBestCmap()
        expected = [c for c in chars if ord(c) not in cmap]
        assert glyphs._missing_characters(path, chars) == expected, path
    # U+4E2D is in none of these fonts, so detection must flag at least that one.
    assert all("\u4e2d" in glyphs._missing_characters(p, chars) for p in paths)


def test_fonts_lacking_a_glyph_are_skipped(tmp_path):
    hebrew = [p for p in ALL_FONTS if os.path.basename(p).startswith("NotoSansHebrew-")]
    if not hebrew:
        pytest.skip("fonts-noto-core not installed")
    fonts = [_font("DejaVuSans.ttf"), hebrew[0]]
    data = datasets.load_glyphs(
        characters="AB\u0416", fonts=fonts, test_fraction=0.34, samples_per_font=1, use_cache=False
    )
    assert data.info["fonts"] == [fonts[0]]
    assert "lacks" in data.info["skipped_fonts"][hebrew[0]]
    assert set(np.unique(data.info["train_fonts"])) == {0}
    with pytest.raises(ValueError, match="apt-get install"):
        datasets.load_glyphs(characters="AB\u0416", fonts=[hebrew[0]], use_cache=False)


def test_no_font_found_gives_apt_command(tmp_path, monkeypatch):
    monkeypatch.setattr(glyphs, "find_fonts", lambda font_dirs=None: [])
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

    monkeypatch.setattr(glyphs, "_render_glyph_arrays", fail)
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
    kwargs = dict(
        characters="AB\u0416",
        fonts=[_font("DejaVuSans.ttf")],
        test_fraction=0.34,
        cache_dir=tmp_path,
    )
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
        datasets.load_glyphs(
            characters=chars,
            fonts=fonts,
            samples_per_font=1,
            seed=s,
            test_fraction=0.25,
            flat=True,
            cache_dir=tmp_path,
        )
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
    data = datasets.load_glyphs(
        fonts=[_font("DejaVuSans.ttf")],
        augment=False,
        samples_per_font=1,
        test_fraction=0.01,
        flat=True,
        use_cache=False,
    )
    x = np.concatenate([data.x_train, data.x_test])
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    assert dist.min() > 1.0


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
    assert glyphs._missing_characters(last_resort, "AB") == []
    assert glyphs._identical_glyphs(last_resort, "AB") == ("A", "B")
    assert glyphs._identical_glyphs(_font("DejaVuSans.ttf"), datasets.GLYPH_CHARACTERS) is None


def test_same_font_installed_twice_is_kept_once(tmp_path):
    src = _font("DejaVuSans.ttf")
    copy = tmp_path / "copy-of-dejavu.ttf"
    copy.write_bytes(open(src, "rb").read())
    data = datasets.load_glyphs(
        characters="AB\u0416",
        fonts=[src, str(copy)],
        test_fraction=0.34,
        samples_per_font=1,
        use_cache=False,
    )
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
