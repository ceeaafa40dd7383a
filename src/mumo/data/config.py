"""What a run reads: the ``data`` section of a training recipe (``data.kind`` and its settings).

:func:`mumo.data.sources.data_source` turns a :class:`DataConfig` into the data itself; the training
config (:class:`mumo.train.config.TrainConfig`) holds one as its ``data`` field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mumo._config import Config, check
from mumo.data.shapes.scene import check_object_weights
from mumo.data.shapes.vqa import check_question_weights
from mumo.errors import DataError

LABELLED_KINDS = ("digits", "imagefolder")  # data of labelled images: a classifier is fine-tuned on them
PATH_KINDS = ("pairs", "shards", "text", "imagefolder")  # kinds read from data.path


@dataclass
class DataConfig(Config):
    """The ``data`` section of a recipe: which kind of data a run reads, and how much of it."""

    # built-in set, CSV/JSONL + images, WebDataset shards, a text file; labelled images: scikit-learn's
    # digits, class folders
    kind: Literal["shapes", "pairs", "shards", "text", "digits", "imagefolder"] = "shapes"
    train_size: int = 100_000  # shapes: distinct training scenes (an epoch); pairs: ignored
    val_size: int = 1000  # shapes: validation scenes for the end-of-run evaluation
    test_size: int = 1000  # shapes: test pairs for retrieval and the compositional probe
    image_size: int = 64  # pixels per side
    min_objects: int = 1  # shapes: fewest objects per scene
    max_objects: int = 3  # shapes: most objects per scene
    seed: int = 0  # seed of the data set itself (scenes, held-out combinations)
    questions: bool = False  # shapes: question-answer texts (VQA) instead of captions
    tokenizer_questions: bool = False  # shapes: the tokenizer also learns the VQA questions and answers
    # shapes with questions, training only: how often each question kind is asked, relative to the others
    # (a kind left out weighs 1; null: all kinds equally; vqa.pick_question)
    question_weights: dict[str, float] | None = None
    # shapes, training only: share of one-object scenes captioned without their size, position or both
    partial_captions: float = 0.0
    # shapes, training only: relative frequency of each object count, min_objects to max_objects (null: even)
    object_weights: tuple[float, ...] | None = None
    # shapes, training only: share of two-object scenes captioned in reading order, the upper (or left)
    # object named first (language.reading_order)
    reading_order: float = 0.0
    # shapes, training only: the hard negatives (hard_negatives > 0) also draw from every colour and shape
    # swap between two objects, three objects' reversed order and a lone object's mirrored place
    # (language.binding_negatives)
    binding_negatives: bool = False
    # shapes, training only: the hard negatives also draw from places next to the objects' own: a lone
    # object in the nearest other cell, two neighbours of three swapped (language.place_negatives)
    place_negatives: bool = False
    # shapes, training only: each batch also holds the position-free prompt of every seen colour x shape
    # class ("a red circle") and each lone object's class among them, for the class-prompt loss (UniCL)
    class_prompts: bool = False
    # shapes, training only: share of each batch replaced by twins of other samples in it, the same objects
    # with two colours, shapes or places traded (a lone object mirrored): hard negative images for the
    # text->image loss (sources.TwinScenes); at most 0.5
    twin_scenes: float = 0.0
    # pairs: annotations (CSV or JSONL); shards: the folder of .tar shards; text: a UTF-8 file;
    # imagefolder: the root of the class folders
    path: str | None = None
    image_root: str | None = None  # pairs: folder the image paths are relative to (default: the file's)
    num_workers: int = 0  # DataLoader worker processes
    shuffle_block: int = 1000  # shards: samples shuffled together (within one reader's share of an epoch)
    tokenizer_vocab_size: int = 1000  # BPE vocabulary learned from training captions
    tokenizer_samples: int = 20_000  # training captions the tokenizer learns from

    def validate(self) -> None:
        check(self.train_size > 0 and self.val_size >= 0 and self.test_size >= 0, "data sizes must be >= 0")
        check(
            1 <= self.min_objects <= self.max_objects <= 3, "need 1 <= data.min_objects <= max_objects <= 3"
        )
        check(
            self.kind not in PATH_KINDS or self.path is not None,
            f"data.kind={self.kind!r} needs data.path="
            + ("FOLDER" if self.kind in ("imagefolder", "shards") else "FILE"),
        )
        check(self.shuffle_block >= 1, "data.shuffle_block must be >= 1 (1: no shuffling within shards)")
        check(self.num_workers >= 0, "data.num_workers must be >= 0")
        check(
            0.0 <= self.partial_captions <= 1.0,
            f"data.partial_captions is a share of one-object scenes in [0, 1], got {self.partial_captions}",
        )
        check(
            self.object_weights is None or self.kind == "shapes",
            "data.object_weights is for the built-in data (kind=shapes)",
        )
        check_object_weights(self.object_weights, self.min_objects, self.max_objects, "data")
        check(
            not self.binding_negatives or (self.kind == "shapes" and not self.questions),
            "data.binding_negatives is for captions of the built-in data (kind=shapes, questions=false)",
        )
        check(
            not self.place_negatives or (self.kind == "shapes" and not self.questions),
            "data.place_negatives is for captions of the built-in data (kind=shapes, questions=false)",
        )
        check(
            self.partial_captions == 0.0 or (self.kind == "shapes" and not self.questions),
            "data.partial_captions is for captions of the built-in data (kind=shapes, questions=false)",
        )
        check(
            not self.class_prompts or (self.kind == "shapes" and not self.questions),
            "data.class_prompts is for captions of the built-in data (kind=shapes, questions=false)",
        )
        check(
            0.0 <= self.twin_scenes <= 0.5,
            f"data.twin_scenes is a share of each batch in [0, 0.5], got {self.twin_scenes}",
        )
        check(
            self.twin_scenes == 0.0 or (self.kind == "shapes" and not self.questions),
            "data.twin_scenes is for captions of the built-in data (kind=shapes, questions=false)",
        )
        check(
            self.question_weights is None or (self.kind == "shapes" and self.questions),
            "data.question_weights is for questions of the built-in data (kind=shapes, questions=true)",
        )
        check_question_weights(self.question_weights, "data.question_weights")
        check(
            0.0 <= self.reading_order <= 1.0,
            f"data.reading_order is a share of two-object scenes in [0, 1], got {self.reading_order}",
        )
        check(
            self.reading_order == 0.0 or (self.kind == "shapes" and not self.questions),
            "data.reading_order is for captions of the built-in data (kind=shapes, questions=false)",
        )


def labelled_data_config(data: str, image_size: int, seed: int = 0) -> DataConfig:
    """The data config of labelled images named on a command line (``--data``): 'digits', or the root of
    class folders (``ROOT/<class>/<image>``)."""
    if data == "digits":
        return DataConfig(kind="digits", image_size=image_size, seed=seed)
    if not Path(data).is_dir():
        raise DataError(f"--data {data!r} is neither 'digits' nor a folder of class folders (ROOT/<class>/…)")
    return DataConfig(kind="imagefolder", path=data, image_size=image_size, seed=seed)
