"""What a training run reads and how it is evaluated, by ``data.kind``: the built-in shapes data drawn
on the fly, image-caption pairs from a CSV / JSONL file and an image folder or from WebDataset shards
(streamed), a text corpus, or labelled
images (scikit-learn's digits, class folders) for fine-tuning a classifier."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mumo.data.collate import ImageTextCollate, LabelCollate
from mumo.data.digits import DigitsDataset
from mumo.data.image_folder import ImageFolderDataset
from mumo.data.pairs import PairsDataset
from mumo.data.shapes import (
    ShapesConfig,
    ShapesDataset,
    captions,
    generate_scene,
    hard_negatives,
    questions,
)
from mumo.data.shards import ShardStream
from mumo.data.text import TextCorpus, TokenCollate
from mumo.data.tokenizer import Tokenizer
from mumo.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform, train_transform
from mumo.errors import DataError
from mumo.train.config import LABELLED_KINDS, DataConfig, TrainConfig


def shapes_config(data: DataConfig) -> ShapesConfig:
    """The shapes generator settings a data config asks for."""
    return ShapesConfig(
        image_size=data.image_size, min_objects=data.min_objects, max_objects=data.max_objects, seed=data.seed
    )


def build_train_data(config: TrainConfig) -> tuple[Dataset, list[str], Any, Any]:
    """(training set, texts to learn the tokenizer from, image mean, image std).

    Shapes images come in [0, 1] and are normalised in the collate (mean, std returned); pair images are
    normalised by their transform (None, None returned); a text corpus has no images (None, None).
    """
    data = config.data
    if data.kind == "shapes":
        cfg = shapes_config(data)
        texts = []
        for i in range(data.tokenizer_samples):
            scene = generate_scene(cfg, "train", i)
            texts += captions(scene)
            if data.tokenizer_questions or data.questions:
                texts += [f"{q.question} {q.answer}" for q in questions(scene)]
        dataset = ShapesDataset("train", data.train_size, cfg, questions=data.questions)
        return dataset, texts, CLIP_MEAN, CLIP_STD
    if data.kind in LABELLED_KINDS:  # the tokenizer comes with the pretrained model (init_from)
        dataset, mean, std = labelled_split(data, "train")
        return dataset, [], mean, std
    if data.kind == "shards":
        stream = ShardStream(data.path, train_transform(data.image_size), config.seed, data.shuffle_block)
        return stream, stream.texts(data.tokenizer_samples), None, None
    if data.kind == "text":
        corpus = TextCorpus(data.path, "train", val_windows=data.val_size)
        return corpus, corpus.documents[: data.tokenizer_samples], None, None
    dataset = PairsDataset(data.path, data.image_root, transform=train_transform(data.image_size))
    return dataset, list(dataset.captions[: data.tokenizer_samples]), None, None


def labelled_split(data: DataConfig, split: str, augment: bool | None = None) -> tuple[Dataset, Any, Any]:
    """(dataset, image mean, image std) of one split of labelled images: digits come in [0, 1] and are
    normalised by the collate; class-folder images by their transform (random crops when ``augment``,
    which defaults to ``split == 'train'``)."""
    if data.kind == "digits":
        return DigitsDataset(split, data.image_size, data.seed), CLIP_MEAN, CLIP_STD
    augment = split == "train" if augment is None else augment
    transform = train_transform(data.image_size) if augment else eval_transform(data.image_size)
    return ImageFolderDataset(data.path, split, transform, data.seed), None, None


def labelled_data(data: str, image_size: int, seed: int = 0) -> DataConfig:
    """The data config of labelled images named on a command line: 'digits', or a class-folder root."""
    if data == "digits":
        return DataConfig(kind="digits", image_size=image_size, seed=seed)
    if not Path(data).is_dir():
        raise DataError(f"--data {data!r} is neither 'digits' nor a folder of class folders (ROOT/<class>/…)")
    return DataConfig(kind="imagefolder", path=data, image_size=image_size, seed=seed)


def negative_captions(config: TrainConfig) -> Callable[[dict[str, Any]], list[str]] | None:
    """For NegCLIP runs (``hard_negatives`` > 0), a function giving each training sample that many of its
    generated hard-negative captions, chosen by the sample's index so that a resumed run sees the same.

    The negatives are worded with the template of the sample's own caption: were they always in the
    canonical wording, a model could learn to reject that wording instead of the false content."""
    k = config.hard_negatives
    if k == 0:
        return None

    def pick(sample: dict[str, Any]) -> list[str]:
        texts = captions(sample["scene"])
        template = texts.index(sample["caption"]) if sample["caption"] in texts else 0
        negatives = hard_negatives(sample["scene"], template)
        kinds = sorted(negatives)
        return [negatives[kinds[(sample["index"] + j) % len(kinds)]] for j in range(min(k, len(kinds)))]

    return pick


def build_collate(config: TrainConfig, dataset: Dataset, tokenizer: Tokenizer, mean: Any, std: Any) -> Any:
    """The collate function for the run's data: packed token windows, or images with their texts."""
    if isinstance(dataset, TextCorpus):
        return TokenCollate(tokenizer.pad_id)
    if config.data.kind in LABELLED_KINDS:
        return LabelCollate(mean, std)
    return ImageTextCollate(tokenizer, mean, std, negatives=negative_captions(config))
