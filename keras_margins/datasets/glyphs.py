"""The glyph benchmark: an open-set dataset with many identities, from the machine's fonts.

Each character is an identity and each font a sample: :func:`find_fonts` lists the fonts
(matplotlib's bundled ones, the system's, or ``$KERAS_MARGINS_FONT_DIRS``), fonts that lack a
character or draw two characters alike are left out, and :func:`load_glyphs` renders, caches and
splits the images.
"""

import hashlib
import json
import os
import shutil
import subprocess
import time

import numpy as np

from keras_margins._validation import check_float, check_int
from keras_margins.datasets.splits import as_images, open_set_split

__all__ = ["GLYPH_CHARACTERS", "bundled_font_dir", "find_fonts", "font_set", "load_glyphs"]

FONT_PACKAGES = (
    "fonts-dejavu-core fonts-noto-core fonts-urw-base35 fonts-liberation fonts-freefont-ttf"
)
_APT_HINT = f"sudo apt-get update && sudo apt-get install -y {FONT_PACKAGES}"

# Default identities of the glyph benchmark: Latin letters and digits, then the Greek and
# Cyrillic letters that do not look like one of the characters already in the set (Greek
# Alpha, Cyrillic A and Latin A would be three labels for one image). Left out on purpose:
# Latin l (= I in sans-serif fonts); Greek A B E Z H I K M N O P T Y X o nu; Cyrillic A B
# G(=Gamma) E K M N O P(=Pi) R S T U F(=Phi) X Ze(=3), a e o p s u x k(=kappa) ze(=3-like), and
# i pe te, whose italic forms are Latin u n m in a quarter of the fonts.
GLYPH_CHARACTERS = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "abcdefghijkmnopqrstuvwxyz"  # no "l": it is "I" in sans-serif fonts
    "0123456789"
    "\u0393\u0394\u0398\u039b\u039e\u03a0\u03a3\u03a6\u03a8\u03a9"  # Greek capitals
    "\u03b1\u03b2\u03b3\u03b4\u03b5\u03b6\u03b7\u03b8\u03b9\u03ba\u03bb\u03bc\u03be"
    "\u03c0\u03c1\u03c2\u03c3\u03c4\u03c5\u03c6\u03c7\u03c8\u03c9"  # Greek small
    "\u0411\u0414\u0401\u0416\u0418\u0419\u041b\u0426\u0427\u0428\u0429\u042a\u042b"
    "\u042c\u042d\u042e\u042f"  # Cyrillic capitals
    "\u0431\u0432\u0433\u0434\u0451\u0436\u0439\u043b\u043c\u043d"
    "\u0444\u0446\u0447\u0448\u0449\u044a\u044b\u044c\u044d\u044e\u044f"  # Cyrillic small
)

# Code points that no text font maps: an unassigned Greek code point and a plane-16 private-use
# one. A font renders them with its ".notdef" glyph (a box, or nothing), which is what it would
# draw for any character it lacks.
_ABSENT_CODE_POINTS = ("\u0378", "\U0010fffd")
_GLYPH_CACHE_VERSION = 2
# Light augmentation: rotation in degrees, relative scale change, shift as a fraction of the side.
_MAX_ROTATION, _MAX_SCALE, _MAX_SHIFT = 5.0, 0.06, 0.04
_FONT_EXTENSIONS = (".ttf", ".otf")


FONT_DIRS_ENV = "KERAS_MARGINS_FONT_DIRS"
SYSTEM_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
)


def bundled_font_dir():
    """The folder of the fonts that matplotlib ships (DejaVu, STIX, Computer Modern), or None.

    Found from the installed package without importing it; ``None`` when matplotlib is not
    installed.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "mpl-data", "fonts", "ttf")
    return path if os.path.isdir(path) else None


def _system_font_dirs():
    env = os.environ.get(FONT_DIRS_ENV)
    if env is not None:
        return [d for d in env.split(os.pathsep) if d], False
    return [os.path.expanduser(d) for d in SYSTEM_FONT_DIRS], True


def find_fonts(font_dirs=None, bundled=None):
    """List the TrueType/OpenType font files of the machine, sorted.

    Args:
        font_dirs: Folders searched recursively. Defaults to ``None``: the system font folders
            (``/usr/share/fonts``, ``/usr/local/share/fonts``, ``~/.local/share/fonts``,
            ``~/.fonts``) plus whatever ``fc-list`` reports when fontconfig is installed --
            or, when the environment variable ``KERAS_MARGINS_FONT_DIRS`` is set, only the
            folders it lists (separated by ``os.pathsep``; empty: no system folder), which
            simulates a machine without font packages.
        bundled: Also list the fonts that ship with matplotlib (`bundled_font_dir`), so a
            machine with only the pip dependencies has fonts. Defaults to ``None``: ``True``
            when ``font_dirs`` is ``None``, else ``False``.

    Returns:
        A sorted list of unique real paths of ``.ttf`` and ``.otf`` files.

    Examples:

        >>> fonts = find_fonts()
        >>> all(f.endswith((".ttf", ".otf")) for f in fonts)
        True
    """
    found = set()
    use_fc_list = False
    if font_dirs is None:
        dirs, use_fc_list = _system_font_dirs()
    else:
        dirs = [os.fspath(d) for d in font_dirs]
    if bundled is None:
        bundled = font_dirs is None
    if bundled and bundled_font_dir() is not None:
        dirs = [bundled_font_dir(), *dirs]
    for directory in dirs:
        for root, _, files in os.walk(directory):
            for name in files:
                if name.lower().endswith(_FONT_EXTENSIONS):
                    found.add(os.path.realpath(os.path.join(root, name)))
    if use_fc_list and shutil.which("fc-list"):
        try:
            out = subprocess.run(
                ["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            if line.lower().endswith(_FONT_EXTENSIONS) and os.path.isfile(line):
                found.add(os.path.realpath(line))
    return sorted(found)


def font_set(fonts):
    """Name the font set of a list of font paths: where the fonts come from.

    ``"matplotlib"`` when every font is one that matplotlib ships (what a machine with only
    the pip dependencies has), ``"system"`` when none is, ``"matplotlib+system"`` otherwise.
    """
    base = bundled_font_dir()
    base = os.path.realpath(base) + os.sep if base else None
    ours = [base is not None and os.path.realpath(f).startswith(base) for f in fonts]
    if ours and all(ours):
        return "matplotlib"
    return "matplotlib+system" if any(ours) else "system"


def _render_small(font, char, size):
    from PIL import Image, ImageDraw

    image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(image).text((size // 4, size // 4), char, fill=255, font=font)
    return np.asarray(image)


def _missing_characters(path, characters, first_only=False):
    """Characters that the font at ``path`` lacks (drawn as its .notdef glyph, or as nothing)."""
    from PIL import ImageFont

    font = ImageFont.truetype(path, 24, layout_engine=ImageFont.Layout.BASIC)
    size = 64
    absent = [_render_small(font, c, size) for c in _ABSENT_CODE_POINTS]
    missing = []
    for char in characters:
        image = _render_small(font, char, size)
        if not image.any() or any(np.array_equal(image, ref) for ref in absent):
            missing.append(char)
            if first_only:
                break
    return missing


def _identical_glyphs(path, characters):
    """The first two characters that the font at ``path`` draws identically, or ``None``.

    A fallback font such as matplotlib's LastResortHE maps every code point but draws one
    glyph per Unicode block: its characters cannot be told apart, so it cannot be a sample.
    """
    from PIL import ImageFont

    font = ImageFont.truetype(path, 24, layout_engine=ImageFont.Layout.BASIC)
    seen = {}
    for char in characters:
        digest = hashlib.sha256(_render_small(font, char, 64).tobytes()).hexdigest()
        if digest in seen:
            return seen[digest], char
        seen[digest] = char
    return None


def _font_name(path):
    from PIL import ImageFont

    family, style = ImageFont.truetype(path, 12).getname()
    return f"{family} {style}"


def _render_glyph(font, char, canvas, baseline, transform):
    """Draw ``char`` centred horizontally on the baseline, then apply an affine transform."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    left, _, right, _ = draw.textbbox((0, baseline), char, font=font, anchor="ls")
    x = canvas / 2.0 - (left + right) / 2.0
    draw.text((x, baseline), char, fill=255, font=font, anchor="ls")
    if transform is not None:
        image = image.transform(
            (canvas, canvas), Image.Transform.AFFINE, transform, resample=Image.Resampling.BILINEAR
        )
    return image


def _affine(rng, canvas, max_rotation, max_scale, max_shift):
    """Inverse affine coefficients (output -> input pixel) of a random rotation/scale/shift."""
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    scale = np.exp(rng.uniform(np.log(1.0 - max_scale), np.log(1.0 + max_scale)))
    shift = rng.uniform(-max_shift, max_shift, size=2) * canvas
    centre = canvas / 2.0
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # input = R(-angle)/scale @ (output - centre - shift) + centre
    ox, oy = centre + shift[0], centre + shift[1]
    a, b = cos, sin
    d, e = -sin, cos
    c = centre - a * ox - b * oy
    f = centre - d * ox - e * oy
    return (a, b, c, d, e, f)


def _pillow_version():
    import PIL

    return PIL.__version__


def _cache_dir(cache_dir):
    if cache_dir is not None:
        return os.fspath(cache_dir)
    env = os.environ.get("KERAS_MARGINS_CACHE")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "keras_margins")


def _render_glyph_arrays(fonts, characters, image_size, samples_per_font, augment, seed):
    """Render every (character, font, sample); return images, labels, font ids, kept fonts."""
    from PIL import Image, ImageFont

    supersample = 4
    canvas = image_size * supersample
    font_size = int(round(0.68 * canvas))
    baseline = int(round(0.75 * canvas))
    # Cheap first: a Latin, a Greek and a Cyrillic letter reject most fonts of other scripts.
    canaries = [c for c in ("A", "\u03a9", "\u0416") if c in characters]
    kept, skipped, names = [], {}, {}
    # matplotlib's copies first, so that a font installed twice (DejaVu from matplotlib and
    # from fonts-dejavu-core) is the same file whatever else the machine has.
    bundled = font_set
    for path in sorted(fonts, key=lambda f: (bundled([f]) != "matplotlib", f)):
        try:
            missing = _missing_characters(path, canaries, first_only=True) or (
                _missing_characters(path, characters, first_only=True)
            )
            same = None if missing else _identical_glyphs(path, characters)
            name = _font_name(path)
        except OSError as err:
            skipped[path] = f"cannot be loaded ({err})"
            continue
        if missing:
            skipped[path] = f"lacks {missing[0]!r} (U+{ord(missing[0]):04X})"
        elif same:
            skipped[path] = (
                f"draws {same[0]!r} and {same[1]!r} identically "
                "(a fallback font: one glyph for many characters)"
            )
        elif name in names:
            skipped[path] = f"same font ({name}) as {names[name]}"
        else:
            names[name] = path
            kept.append(path)
    kept.sort()
    if not kept:
        raise ValueError(
            f"None of the {len(fonts)} fonts has a glyph for every requested character "
            f"(for example: {next(iter(skipped.values()), 'no fonts')}). Install fonts that "
            f"cover Latin, Greek and Cyrillic: `{_APT_HINT}`, or pass fewer `characters`."
        )
    rng = np.random.default_rng(seed)
    count = len(characters) * len(kept) * samples_per_font
    images = np.empty((count, image_size, image_size), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int32)
    font_ids = np.empty(count, dtype=np.int32)
    i = 0
    for f, path in enumerate(kept):
        font = ImageFont.truetype(path, font_size, layout_engine=ImageFont.Layout.BASIC)
        for c, char in enumerate(characters):
            for _ in range(samples_per_font):
                transform = None
                if augment:
                    transform = _affine(rng, canvas, _MAX_ROTATION, _MAX_SCALE, _MAX_SHIFT)
                image = _render_glyph(font, char, canvas, baseline, transform)
                image = image.resize((image_size, image_size), Image.Resampling.BOX)
                images[i], labels[i], font_ids[i] = np.asarray(image), c, f
                i += 1
    return images, labels, font_ids, kept, skipped


def load_glyphs(
    characters=None,
    fonts=None,
    image_size=32,
    samples_per_font=2,
    augment=True,
    test_fraction=0.3,
    seed=0,
    flat=False,
    cache_dir=None,
    use_cache=True,
):
    """An open-set benchmark with many identities: characters rendered from fonts.

    Each character is an identity and each font a "photo" of it: for every font that has a
    glyph for *all* the requested characters, every character is drawn ``samples_per_font``
    times on a baseline, centred horizontally, with light seeded augmentation (rotation up to
    5 degrees, scale within 6 %, shift up to 4 % of the side), rendered 4x larger and
    box-downsampled to ``image_size``. A font lacking a glyph is skipped: Pillow draws a
    missing character with the font's ``.notdef`` glyph, so a character whose rendering equals
    that of code points no font maps (U+0378, U+10FFFD), or is blank, counts as missing. A
    font that draws two of the characters identically (a fallback font such as LastResort) is
    skipped too, and so is a second copy of a font already kept (same family and style;
    matplotlib's copy is preferred).
    Identities are then split at random (seeded) into training and test identities, disjoint.

    The rendered arrays are cached as a compressed ``.npz`` in ``cache_dir`` (default: the
    environment variable ``KERAS_MARGINS_CACHE``, else ``~/.cache/keras_margins``), keyed by
    the rendering parameters and the list of candidate fonts (paths and sizes), so a second
    call renders nothing. The split is computed after loading and is not part of the key.

    matplotlib's fonts alone (a machine without font packages) give 16 fonts for the 132
    default characters (`GLYPH_CHARACTERS`): DejaVu Sans, Sans Mono and Serif and STIX General,
    four faces each. The Debian packages ``fonts-dejavu-core fonts-noto-core fonts-urw-base35
    fonts-liberation fonts-freefont-ttf`` add about 85 more. See ``docs/datasets.md`` for sizes
    and limits.

    Args:
        characters: The identities, a string or sequence of distinct single characters.
            Defaults to ``None``: `GLYPH_CHARACTERS` (Latin letters and digits, plus the
            Greek and Cyrillic letters that do not look like one of those).
        fonts: Font files to use. Defaults to ``None``: every font `find_fonts` lists
            (matplotlib's, and the system's or those of ``KERAS_MARGINS_FONT_DIRS``).
        image_size: Side of the square images, in pixels, ``>= 8``. Defaults to ``32``.
        samples_per_font: Samples per (character, font), ``>= 1``; must be ``1`` when
            ``augment=False`` (copies would be identical). Defaults to ``2``.
        augment: Apply the random rotation/scale/shift. Defaults to ``True``.
        test_fraction: Fraction of the identities held out for testing, in ``(0, 1)``; at least
            one identity on each side. Defaults to ``0.3``.
        seed: Seed of the augmentation and of the identity split. Defaults to ``0``.
        flat: Return ``(N, image_size**2)`` vectors instead of ``(N, H, W, 1)`` images.
            Defaults to ``False``.
        cache_dir: Cache folder. Defaults to ``None`` (see above).
        use_cache: Read and write the cache. Defaults to ``True``.

    Returns:
        An `OpenSetSplit` with ``source="glyphs"``; ``train_names``/``test_names`` are the
        characters, and ``info`` holds ``font_set`` (`font_set` of the kept fonts:
        ``"matplotlib"``, ``"matplotlib+system"`` or ``"system"``), ``fonts`` (kept font
        paths), ``skipped_fonts``
        (path -> reason), ``train_fonts``/``test_fonts`` (font index of each sample),
        ``from_cache``, ``cache_path`` and ``render_seconds``.

    Raises:
        FileNotFoundError: If no font file is found (the message gives the apt command).
        ValueError: For a bad argument, or if no font covers all the characters.

    Examples:

        >>> fonts = [f for f in find_fonts() if "DejaVu" in f]
        >>> data = load_glyphs(characters="ABCDEF", fonts=fonts, use_cache=False)
        >>> data.x_train.shape[1:], data.num_train_classes + data.num_test_classes
        ((32, 32, 1), 6)
    """
    if characters is None:
        characters = GLYPH_CHARACTERS
    if isinstance(characters, str):
        characters = list(characters)
    characters = list(characters)
    if not all(isinstance(c, str) and len(c) == 1 and not c.isspace() for c in characters):
        raise ValueError(
            "`characters` must be single non-space characters. "
            f"Received: characters={''.join(map(str, characters))[:80]!r}"
        )
    if len(set(characters)) != len(characters) or len(characters) < 2:
        raise ValueError(
            "`characters` must hold at least 2 distinct characters, without repeats. "
            f"Received: characters={''.join(characters)[:80]!r}"
        )
    image_size = check_int("image_size", image_size, minimum=8, maximum=512)
    samples_per_font = check_int("samples_per_font", samples_per_font, minimum=1)
    augment = bool(augment)
    if not augment and samples_per_font != 1:
        raise ValueError(
            "`samples_per_font` must be 1 when `augment=False` (the copies would be identical). "
            f"Received: samples_per_font={samples_per_font}"
        )
    test_fraction = check_float("test_fraction", test_fraction, 0.0, 1.0, True, True)
    seed = check_int("seed", seed, minimum=0)
    flat = bool(flat)
    if fonts is None:
        fonts = find_fonts()
        if not fonts:
            raise FileNotFoundError(
                "No font file (.ttf/.otf) was found: neither matplotlib's fonts (`pip install "
                f"matplotlib`) nor system fonts. Install some with: `{_APT_HINT}`"
            )
    else:
        if isinstance(fonts, (str, os.PathLike)):
            fonts = [fonts]
        fonts = [os.path.realpath(os.fspath(f)) for f in fonts]
        absent = [f for f in fonts if not os.path.isfile(f)]
        if absent or not fonts:
            raise ValueError(
                f"`fonts` must be existing font files. Received: fonts={absent or fonts}"
            )
        fonts = sorted(set(fonts))

    key = json.dumps(
        {
            "version": _GLYPH_CACHE_VERSION,
            "characters": "".join(characters),
            "fonts": [[f, os.path.getsize(f)] for f in fonts],
            "image_size": image_size,
            "samples_per_font": samples_per_font,
            "augment": augment,
            "augmentation": [_MAX_ROTATION, _MAX_SCALE, _MAX_SHIFT],
            "pillow": _pillow_version(),
            "seed": seed,
            "font_set": font_set(fonts),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    cache_path = os.path.join(_cache_dir(cache_dir), f"glyphs-{digest}.npz")
    start = time.perf_counter()
    from_cache = False
    if use_cache and os.path.exists(cache_path):
        try:
            with np.load(cache_path, allow_pickle=False) as stored:
                if str(stored["key"]) != key:
                    raise ValueError("key mismatch")
                images, labels, font_ids = stored["images"], stored["labels"], stored["font_ids"]
                kept = [str(f) for f in stored["fonts"]]
                skipped = json.loads(str(stored["skipped"]))
            from_cache = True
        except (OSError, KeyError, ValueError):  # unreadable or foreign file: render again
            from_cache = False
    if not from_cache:
        images, labels, font_ids, kept, skipped = _render_glyph_arrays(
            fonts, characters, image_size, samples_per_font, augment, seed
        )
        if use_cache:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            tmp = f"{cache_path}.{os.getpid()}.tmp.npz"
            np.savez_compressed(
                tmp,
                images=images,
                labels=labels,
                font_ids=font_ids,
                fonts=np.array(kept),
                skipped=np.array(json.dumps(skipped)),
                key=np.array(key),
            )
            os.replace(tmp, cache_path)
    elapsed = time.perf_counter() - start

    num_test = min(max(1, int(round(test_fraction * len(characters)))), len(characters) - 1)
    split = open_set_split(images, labels, num_held_out=num_test, seed=seed, class_names=characters)
    is_test = np.isin(labels, split.test_classes)
    split.x_train = as_images(split.x_train / np.float32(255.0), flat)
    split.x_test = as_images(split.x_test / np.float32(255.0), flat)
    split.source = "glyphs"
    split.info = {
        "font_set": font_set(kept),
        "fonts": kept,
        "skipped_fonts": skipped,
        "train_fonts": font_ids[~is_test],
        "test_fonts": font_ids[is_test],
        "from_cache": from_cache,
        "cache_path": cache_path if use_cache else None,
        "render_seconds": None if from_cache else elapsed,
        "load_seconds": elapsed,
    }
    return split
