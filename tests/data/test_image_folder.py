"""Class-folder data: class names from folders, stratified or given splits, unreadable files skipped."""

import pytest
import torch
from PIL import Image

from mumo.data.image_folder import ImageFolderDataset
from mumo.data.pairs import Skipped
from mumo.data.transforms import eval_transform
from mumo.errors import DataError


def _tree(root, classes=("cat", "red_car"), per_class=10):
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (20, 16), (40 * c, 10 * i, 0)).save(folder / f"{i:02d}.png")
    return root


def test_splits_are_disjoint_stratified_and_cover_everything(tmp_path):
    root = _tree(tmp_path)
    splits = {s: ImageFolderDataset(root, s, eval_transform(16)) for s in ("train", "val", "test")}
    assert splits["train"].class_names == ("cat", "red car")
    paths = [set(map(str, d.paths)) for d in splits.values()]
    assert sum(map(len, paths)) == 20 and len(set.union(*paths)) == 20
    assert [d.labels.count(0) for d in splits.values()] == [6, 2, 2]
    sample = splits["train"][0]
    assert sample["image"].shape == (3, 16, 16) and sample["label"] in (0, 1)


def test_given_split_folders_are_used_as_they_are(tmp_path):
    _tree(tmp_path / "train", per_class=3)
    _tree(tmp_path / "val", per_class=2)
    val = ImageFolderDataset(tmp_path, "val", eval_transform(16))
    assert len(val) == 4 and val.class_names == ("cat", "red car")
    with pytest.raises(DataError, match="no test/ folder"):
        ImageFolderDataset(tmp_path, "test", eval_transform(16))


def test_unreadable_files_come_back_as_skipped_records(tmp_path):
    root = _tree(tmp_path, per_class=5)
    (root / "cat" / "broken.jpg").write_bytes(b"<html>not an image</html>")
    splits = [ImageFolderDataset(root, s, eval_transform(16)) for s in ("train", "val", "test")]
    items = [d[i] for d in splits for i in range(len(d))]
    skipped = [x for x in items if isinstance(x, Skipped)]
    assert len(items) == 11 and len(skipped) == 1
    assert skipped[0].reason == "not a decodable image" and skipped[0].path.endswith("broken.jpg")
    assert all(isinstance(x["image"], torch.Tensor) for x in items if not isinstance(x, Skipped))


def test_a_tree_without_classes_is_an_error(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="two class folders"):
        ImageFolderDataset(tmp_path, "train", eval_transform(16))
    with pytest.raises(DataError, match="not found"):
        ImageFolderDataset(tmp_path / "missing", "train", eval_transform(16))
