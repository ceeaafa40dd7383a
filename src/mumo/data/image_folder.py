"""Labelled images in class folders, as torchvision's ``ImageFolder`` lays them out:
``ROOT/<class>/<image>``. The class names are the folder names (``_`` read as a space), sorted.

Splits: when ROOT holds ``train/`` (and ``val/``, ``test/``) folders, each is its own split; otherwise every
class is shuffled with a seed and cut 60 / 20 / 20, as the digits are. Unreadable files never stop a run:
they come back as :class:`~mumo.data.pairs.Skipped` records, which the trainer counts and lists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from mumo.data.digits import split_indices
from mumo.data.pairs import Skipped, load_rgb
from mumo.errors import DataError

SPLIT_FOLDERS = ("train", "val", "test")


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise DataError(
            f"{root} needs at least two class folders (ROOT/<class>/<image>), found {len(folders)}"
        )
    return folders


def _images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


class ImageFolderDataset(Dataset):
    """One split of a class-folder tree as samples ``{"image": (3, S, S), "label": int, "index": int}``.

    Args:
        root: the tree's root folder.
        split: 'train', 'val' or 'test'.
        transform: RGB PIL image -> (3, S, S) tensor (e.g. :func:`mumo.data.transforms.train_transform`).
        seed: the shuffle of the 60 / 20 / 20 split when ROOT has no split folders.
    """

    def __init__(
        self, root: str | Path, split: str, transform: Callable[[Image.Image], Tensor], seed: int = 0
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder {str(root)!r} not found")
        if split not in SPLIT_FOLDERS:
            raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLIT_FOLDERS)}")
        self.transform = transform
        presplit = (root / "train").is_dir()
        base = root / split if presplit else root
        if presplit and not base.is_dir():
            raise DataError(f"{root} has a train/ folder but no {split}/ folder")
        # Class names come from the training folders, so every split numbers the classes alike.
        folders = _class_folders(root / "train" if presplit else root)
        self.class_names = tuple(f.name.replace("_", " ") for f in folders)
        paths, labels = [], []
        for label, folder in enumerate(folders):
            found = _images_of(base / folder.name)
            paths += found
            labels += [label] * len(found)
        if not paths:
            raise DataError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {base}")
        if not presplit:
            keep = split_indices(torch.tensor(labels), split, seed).tolist()
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, object] | Skipped:
        image = load_rgb(self.paths[index])
        if isinstance(image, str):
            return Skipped(path=str(self.paths[index]), reason=image, index=index)
        return {"image": self.transform(image), "label": self.labels[index], "index": index}
