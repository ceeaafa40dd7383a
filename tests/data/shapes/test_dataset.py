"""ShapesDataset and the writers: same pixels and text in any order and any worker, items, files on disk."""

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from mumo.data.shapes import (
    COLOURS,
    SHAPES,
    Scene,
    ShapeObject,
    ShapesConfig,
    ShapesDataset,
    captions,
    generate_scene,
    hard_negatives,
    render,
    write_shapes,
)
from mumo.errors import ConfigError


def test_same_seed_same_pixels_and_captions_in_any_order() -> None:
    a = ShapesDataset("train", 40, ShapesConfig(seed=3))
    b = ShapesDataset("train", 40, ShapesConfig(seed=3))
    order = list(range(40))
    random.Random(0).shuffle(order)
    first = {i: a[i] for i in range(40)}
    for i in order:
        item = b[i]
        assert torch.equal(item["image"], first[i]["image"])
        assert item["caption"] == first[i]["caption"]
        assert item["scene"] == first[i]["scene"]
        assert item["index"] == i


def test_dataloader_workers_match_direct_access() -> None:
    ds = ShapesDataset("val", 12)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=4,
        num_workers=2,
        collate_fn=lambda items: [(it["index"], it["image"], it["caption"]) for it in items],
    )
    for batch in loader:
        for i, image, caption in batch:
            direct = ds[i]
            assert torch.equal(image, direct["image"]) and caption == direct["caption"]


def test_write_shapes_round_trip(tmp_path) -> None:
    out = write_shapes(tmp_path / "shapes", 6, split="test", config=ShapesConfig(image_size=40, seed=7))
    pngs = sorted((out / "images").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(6)]
    lines = (out / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 6
    ds = ShapesDataset("test", 6, ShapesConfig(image_size=40, seed=7))
    for i, line in enumerate(lines):
        record = json.loads(line)
        scene = generate_scene(ShapesConfig(image_size=40, seed=7), "test", i)
        assert record["image"] == f"images/{i:06d}.png"
        assert np.array_equal(np.asarray(Image.open(out / record["image"])), render(scene, 40))
        rebuilt = Scene([ShapeObject(**o) for o in record["objects"]], record["relation"])
        assert rebuilt == scene and np.array_equal(render(rebuilt, 40), render(scene, 40))
        assert record["captions"] == captions(scene) and record["caption"] == ds[i]["caption"]
        assert record["negatives"] == hard_negatives(scene)


def test_dataset_items() -> None:
    item = ShapesDataset("train", 5)[4]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["caption"] in captions(item["scene"]) and item["index"] == 4
    ds = ShapesDataset("heldout", 3, ShapesConfig(image_size=32), transform=lambda im: np.asarray(im).shape)
    assert len(ds) == 3 and ds[0]["image"] == (32, 32, 3)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ConfigError, match="train, val, test, heldout"):
        ShapesDataset("trian", 3)


def test_question_samples_are_deterministic_and_prompt_their_answer():
    ds = ShapesDataset("train", 50, questions=True)
    again = ShapesDataset("train", 50, questions=True)
    kinds = set()
    for i in range(50):
        item, same = ds[i], again[i]
        assert torch.equal(item["image"], same["image"]) and item["caption"] == same["caption"]
        assert item["caption"].startswith(item["prompt"] + " ")
        assert item["caption"].split()[-1] in (
            *COLOURS,
            *SHAPES,
            "small",
            "large",
            "yes",
            "no",
            "zero",
            "one",
            "two",
            "three",
            "left",
            "right",
            "above",
            "below",
            "top",
            "center",
            "bottom",
        )
        kinds.add(item["kind"])
    assert len(kinds) >= 4  # kinds are drawn evenly, not in proportion to how many questions each has
