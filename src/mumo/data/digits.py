"""scikit-learn's handwritten digits as images: 1,797 real 8×8 scans of digits written by 43 people (UCI
optical recognition data set), shipped inside scikit-learn, so no download.

Each scan (16 grey levels) becomes a white-on-black RGB image upsampled to the model's size. The splits are
stratified and fixed by a seed: 60 % train, 20 % val, 20 % test of every digit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mumo.errors import ConfigError, DataError

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_SPLITS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}


def _load_arrays() -> tuple[Tensor, Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the digits data set ships with scikit-learn: pip install scikit-learn") from e
    bunch = load_digits()
    return torch.as_tensor(bunch.images, dtype=torch.float32), torch.as_tensor(bunch.target, dtype=torch.long)


def split_indices(labels: Tensor, split: str, seed: int = 0) -> Tensor:
    """Indices (M,) of ``split`` in a stratified split of ``labels`` (N,): each class is shuffled with
    ``seed`` and cut at the split's fractions, so every class keeps its share in every split."""
    if split not in DIGIT_SPLITS:
        raise ConfigError(f"unknown digits split {split!r}; valid: {', '.join(DIGIT_SPLITS)}")
    lo, hi = DIGIT_SPLITS[split]
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in range(int(labels.max()) + 1):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        n = len(members)
        out.append(members[round(lo * n) : round(hi * n)])
    return torch.cat(out).sort().values


def load_digits_splits(
    splits: tuple[str, ...] = ("train", "val", "test"), image_size: int = 64, seed: int = 0
) -> list[tuple[Tensor, Tensor]]:
    """Per split, images (M, 3, image_size, image_size) in [0, 1] and labels (M,); the data is read once.

    Args:
        splits: names among 'train', 'val' and 'test'.
        image_size: pixels per side; the 8×8 scans are upsampled bilinearly.
        seed: the stratified split's shuffle.
    """
    if image_size < 8:
        raise ConfigError(f"image_size must be >= 8 (the scans are 8×8), got {image_size}")
    scans, labels = _load_arrays()
    out = []
    for split in splits:
        idx = split_indices(labels, split, seed)
        x = (scans[idx] / 16.0)[:, None]  # (M, 1, 8, 8), grey levels 0..16
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        out.append((x.clamp(0, 1).expand(-1, 3, -1, -1).contiguous(), labels[idx]))
    return out


def load_digits_split(split: str, image_size: int = 64, seed: int = 0) -> tuple[Tensor, Tensor]:
    """One split of :func:`load_digits_splits`."""
    return load_digits_splits((split,), image_size, seed)[0]


class DigitsDataset(Dataset):
    """One split of the digits as labelled samples ``{"image": (3, S, S) in [0, 1], "label": int, "index":
    int}``, for fine-tuning through the trainer (images are normalised by the collate, as shapes are).

    Args:
        split: 'train', 'val' or 'test'.
        image_size: pixels per side.
        seed: the stratified split's shuffle.
    """

    class_names = DIGIT_NAMES

    def __init__(self, split: str, image_size: int = 64, seed: int = 0) -> None:
        self.images, self.labels = load_digits_split(split, image_size, seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, object]:
        return {"image": self.images[index], "label": int(self.labels[index]), "index": index}
