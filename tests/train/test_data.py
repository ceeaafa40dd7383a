"""The train.data wrappers (kept for the trainer, evaluation, the CLI and experiments) give exactly what the
data sources give: the same sets, tokenizer texts, normalisation and batches."""

import pytest
import torch
from PIL import Image

from mumo.data.sources import HardNegativeCaptions, data_source
from mumo.data.tokenizer import Tokenizer
from mumo.data.transforms import CLIP_MEAN, CLIP_STD
from mumo.train.config import TrainConfig
from mumo.train.data import (
    build_collate,
    build_train_data,
    labelled_data,
    labelled_split,
    negative_captions,
    shapes_config,
)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    (root / "images").mkdir()
    rows = ["filepath,title"]
    for i in range(4):
        Image.new("RGB", (24, 20), (60 * i, 100, 50)).save(root / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,a picture of {i}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    (root / "corpus.txt").write_text("\n".join(f"line {i} says hello" for i in range(40)) + "\n")
    return {
        "negclip": TrainConfig(
            data={"train_size": 8, "tokenizer_samples": 2, "image_size": 32}, hard_negatives=2
        ),
        "vqa": TrainConfig(
            data={"train_size": 8, "tokenizer_samples": 2, "image_size": 32, "questions": True}
        ),
        "pairs": TrainConfig(data={"kind": "pairs", "path": str(root / "pairs.csv"), "image_size": 16}),
        "text": TrainConfig(data={"kind": "text", "path": str(root / "corpus.txt"), "val_size": 2}),
        "digits": TrainConfig(data={"kind": "digits", "image_size": 16}, init_from="m", objectives=("cls",)),
    }


@pytest.fixture(scope="module")
def tokenizer(runs):
    texts = [t for c in runs.values() for t in build_train_data(c)[1]] + [
        f"a picture of {i}" for i in range(4)
    ]
    return Tokenizer.train(texts, vocab_size=400, context_length=64)


@pytest.mark.parametrize("run", ["negclip", "vqa", "pairs", "text", "digits"])
def test_wrappers_give_the_sources_sets_texts_and_batches(runs, tokenizer, run):
    config = runs[run]
    dataset, texts, mean, std = build_train_data(config)
    source = data_source(config.data, seed=config.seed, hard_negatives=config.hard_negatives)
    assert type(dataset) is type(source.train_set()) and texts == source.tokenizer_texts()
    assert (mean, std) == (source.normalization or (None, None))
    if run == "text":
        dataset.bind(tokenizer, 64)
        source.train_set().bind(tokenizer, 64)
    samples, expected = [], []
    for i in range(3):  # random crops (pairs) drawn alike on both sides
        torch.manual_seed(i)
        samples.append(dataset[i])
        torch.manual_seed(i)
        expected.append(source.train_set()[i])
    batch = build_collate(config, dataset, tokenizer, mean, std)(samples)
    assert _equal(batch, source.collate(tokenizer)(expected))
    assert {"negclip": "neg_index", "vqa": "loss_mask", "digits": "labels"}.get(run, "input_ids") in batch


def test_labelled_and_shapes_helpers_match_the_sources(tmp_path, runs):
    data = runs["digits"].data
    dataset, mean, std = labelled_split(data, "val", augment=False)
    assert (mean, std) == (CLIP_MEAN, CLIP_STD)
    assert torch.equal(dataset[3]["image"], data_source(data).split("val")[3]["image"])
    assert labelled_data("digits", 16) == data
    assert labelled_data(str(tmp_path), 16).kind == "imagefolder"
    assert shapes_config(runs["negclip"].data).image_size == 32
    pick = negative_captions(runs["negclip"])
    assert isinstance(pick, HardNegativeCaptions) and pick.k == 2 and negative_captions(runs["vqa"]) is None
    assert not pick.binding
    binding = runs["negclip"].replace(data=runs["negclip"].data.replace(binding_negatives=True))
    assert negative_captions(binding).binding
