"""scikit-learn's digits as images: fixed stratified splits that partition the data, images in [0, 1]."""

import pytest
import torch

from mumo.data.digits import DIGIT_NAMES, load_digits_split, split_indices
from mumo.errors import ConfigError


def test_splits_partition_the_data_and_keep_every_class_share():
    labels = torch.arange(1797) % 10
    parts = [split_indices(labels, s, seed=0) for s in ("train", "val", "test")]
    every = torch.cat(parts).sort().values
    assert torch.equal(every, torch.arange(1797))  # disjoint and complete
    for part, share in zip(parts, (0.6, 0.2, 0.2), strict=True):
        fraction = labels[part].bincount(minlength=10).double() / labels.bincount().double()
        assert torch.allclose(fraction, torch.full((10,), share, dtype=torch.float64), atol=0.01)
    assert not torch.equal(split_indices(labels, "test", seed=1), parts[2])  # the seed moves it


def test_images_are_white_on_black_rgb_in_unit_range_and_deterministic():
    x, y = load_digits_split("val", image_size=32)
    assert x.shape == (len(y), 3, 32, 32) and len(DIGIT_NAMES) == 10
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(x.mean()) < 0.5
    assert torch.equal(x[:, 0], x[:, 2])  # grey
    again, same = load_digits_split("val", image_size=32)
    assert torch.equal(x, again) and torch.equal(y, same)


def test_bad_split_and_size_are_refused():
    with pytest.raises(ConfigError, match="unknown digits split"):
        load_digits_split("dev")
    with pytest.raises(ConfigError, match="image_size"):
        load_digits_split("train", image_size=4)
