"""keras_margins.datasets as users import it: every loader names a bad argument."""

import numpy as np
import pytest

from keras_margins import datasets
from tests.datasets_support import ALL_FONTS


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
