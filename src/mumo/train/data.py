"""What a training run reads, by ``data.kind``: thin wrappers over :mod:`mumo.data.sources`, kept with
their signatures for the trainer, the end-of-run evaluation, the CLI and the experiments until they build
their data with :func:`mumo.data.sources.data_source` themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from mumo.data.config import DataConfig, labelled_data_config
from mumo.data.sources import DataSource, data_source
from mumo.data.sources import shapes_config as shapes_config  # re-exported: evaluate and compare use it
from mumo.data.tokenizer import Tokenizer
from mumo.train.config import TrainConfig


def _source(config: TrainConfig) -> DataSource:
    return data_source(config.data, seed=config.seed, hard_negatives=config.hard_negatives)


def build_train_data(config: TrainConfig) -> tuple[Dataset, list[str], Any, Any]:
    """(training set, texts to learn the tokenizer from, image mean, image std).

    Shapes images come in [0, 1] and are normalised in the collate (mean, std returned); pair images are
    normalised by their transform (None, None returned); a text corpus has no images (None, None).
    """
    source = _source(config)
    mean, std = source.normalization or (None, None)
    return source.train_set(), source.tokenizer_texts(), mean, std


def labelled_split(data: DataConfig, split: str, augment: bool | None = None) -> tuple[Dataset, Any, Any]:
    """(dataset, image mean, image std) of one split of labelled images: digits come in [0, 1] and are
    normalised by the collate; class-folder images by their transform (random crops when ``augment``,
    which defaults to ``split == 'train'``)."""
    source = data_source(data)
    mean, std = source.normalization or (None, None)
    return source.split(split, augment), mean, std


def labelled_data(data: str, image_size: int, seed: int = 0) -> DataConfig:
    """The data config of labelled images named on a command line: 'digits', or a class-folder root
    (:func:`mumo.data.config.labelled_data_config`)."""
    return labelled_data_config(data, image_size, seed)


def negative_captions(config: TrainConfig) -> Callable[[dict[str, Any]], list[str]] | None:
    """For NegCLIP runs (``hard_negatives`` > 0), a function giving each training sample that many of its
    generated hard-negative captions (:class:`mumo.data.sources.HardNegativeCaptions`)."""
    return _source(config).negatives()


def build_collate(config: TrainConfig, dataset: Dataset, tokenizer: Tokenizer, mean: Any, std: Any) -> Any:
    """The collate function for the run's data: packed token windows, or images with their texts.

    ``dataset``, ``mean`` and ``std`` are what :func:`build_train_data` gave for ``config``; the source of
    ``config.data`` knows them itself, so they are no longer read.
    """
    return _source(config).collate(tokenizer)
