"""One data source per ``data.kind``: what a run reads, built from a :class:`~mumo.data.config.DataConfig`.

    source = data_source(config.data, seed=config.seed, hard_negatives=config.hard_negatives)
    tokenizer = Tokenizer.train(source.tokenizer_texts(), vocab_size=config.data.tokenizer_vocab_size)
    loader = DataLoader(source.train_set(), batch_size=B, collate_fn=source.collate(tokenizer))

Kinds: ``shapes`` (the built-in set, drawn on the fly), ``pairs`` (a CSV / TSV / JSONL file and its
images), ``shards`` (WebDataset ``.tar`` shards, streamed), ``text`` (a UTF-8 corpus for a language model),
and the labelled images ``digits`` (scikit-learn's) and ``imagefolder`` (``ROOT/<class>/<image>``), which
also have named splits (:meth:`DataSource.split`) for fine-tuning a classifier.

Batches (:mod:`mumo.data.collate`, :class:`~mumo.data.text.TokenCollate`):

- image–caption kinds: ``images`` (B, 3, H, W) normalised, ``input_ids`` (B, T), ``attention_mask``
  (B, T), ``skipped`` (unreadable samples), ``num_truncated``; with ``hard_negatives`` (shapes) also
  ``neg_input_ids`` / ``neg_attention_mask`` (M, T) and ``neg_index`` (M,); with ``data.questions`` also
  ``loss_mask`` (B, T); with ``data.class_prompts`` (shapes) also ``class_input_ids`` /
  ``class_attention_mask`` (C, T) and ``class_index`` (B,).
- ``text``: ``input_ids`` (B, T), ``attention_mask`` (B, T) (and an empty ``skipped``, ``num_truncated`` 0).
- labelled kinds: ``images`` (B, 3, H, W) normalised, ``labels`` (B,), ``skipped``.

Where images are normalised is each source's own business: shapes and digits come in [0, 1] and the collate
normalises them with CLIP's statistics (:attr:`DataSource.normalization`); pairs, shards and class folders
are normalised by their transform. Run settings that are not the data's (the run's ``seed``, NegCLIP's
``hard_negatives``) are plain arguments, so this module needs nothing from :mod:`mumo.train`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

from torch.utils.data import Dataset

from mumo._config import _suggest
from mumo.data.collate import ImageTextCollate, LabelCollate
from mumo.data.config import DataConfig
from mumo.data.digits import DIGIT_SPLITS, DigitsDataset
from mumo.data.image_folder import SPLIT_FOLDERS, ImageFolderDataset
from mumo.data.pairs import PairsDataset
from mumo.data.shapes import (
    ShapesConfig,
    ShapesDataset,
    binding_negatives,
    captions,
    class_names,
    class_prompt,
    generate_scene,
    hard_negatives,
    held_out_combinations,
    place_negatives,
    questions,
    scene_image,
    twin_scenes,
    wording,
    wordings,
)
from mumo.data.shards import ShardStream
from mumo.data.text import TextCorpus, TokenCollate
from mumo.data.tokenizer import Tokenizer
from mumo.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform, train_transform
from mumo.errors import ConfigError, DataError

Collate = Callable[[list[Any]], dict[str, Any]]  # samples -> batch
Normalization = tuple[Sequence[float], Sequence[float]]  # per-channel (mean, std)


class DataSource:
    """The data of one ``data.kind``: training set, tokenizer texts and the collate that batches them.

    Args:
        config: the data section of the run.
        seed: the run's seed (``TrainConfig.seed``): the shard order and augmentations of streamed shards.
        hard_negatives: NegCLIP's generated negative captions per sample; only the shapes data makes them.
    """

    kind: ClassVar[str]
    # Per-channel (mean, std) the collate applies to images in [0, 1]; None when the transform normalises.
    normalization: ClassVar[Normalization | None] = None
    splits: ClassVar[tuple[str, ...]] = ()  # named splits of labelled images (see split)

    def __init__(self, config: DataConfig, seed: int = 0, hard_negatives: int = 0) -> None:
        if hard_negatives < 0:
            raise ConfigError(f"hard_negatives must be >= 0, got {hard_negatives}")
        if hard_negatives and self.kind != "shapes":
            raise ConfigError(
                f"hard_negatives needs data.kind=shapes (which generates them), not {self.kind!r}"
            )
        self.config, self.seed, self.hard_negatives = config, seed, hard_negatives
        self._train: Dataset | None = None

    def train_set(self) -> Dataset:
        """The training set; built on the first call, the same object after (a file is read once)."""
        if self._train is None:
            self._train = self._build_train()
        return self._train

    def tokenizer_texts(self) -> list[str]:
        """Texts to learn a tokenizer from (at most ``data.tokenizer_samples`` samples' worth); none for
        labelled images, whose tokenizer comes with the pretrained model."""
        return []

    def collate(self, tokenizer: Tokenizer | None) -> Collate:
        """The batching function for a DataLoader over :meth:`train_set` (batch keys in the module
        docstring), normalising images as this source needs."""
        if tokenizer is None:
            raise ConfigError(f"data.kind={self.kind} batches captions: its collate needs a tokenizer")
        mean, std = self.normalization or (None, None)
        prompts = ClassPrompts() if self.config.class_prompts else None
        c = self.config
        twins = TwinScenes(c.twin_scenes, c.image_size) if c.twin_scenes else None
        return ImageTextCollate(
            tokenizer, mean, std, negatives=self.negatives(), class_prompts=prompts, twins=twins
        )

    def negatives(self) -> HardNegativeCaptions | None:
        """What gives each training sample its generated hard-negative captions (NegCLIP); None without."""
        c = self.config
        return hard_negative_captions(self.hard_negatives, c.binding_negatives, c.place_negatives)

    def split(self, name: str, augment: bool | None = None) -> Dataset:
        """One named split of labelled images; only the labelled kinds (digits, imagefolder) have them."""
        raise DataError(
            f"data.kind={self.kind} has no labelled splits; use data.kind=digits or data.kind=imagefolder"
        )

    def _build_train(self) -> Dataset:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------- shapes


def shapes_config(data: DataConfig) -> ShapesConfig:
    """The shapes generator settings a data config asks for."""
    return ShapesConfig(
        image_size=data.image_size, min_objects=data.min_objects, max_objects=data.max_objects, seed=data.seed
    )


def _template(sample: dict[str, Any]) -> int:
    """The wording a shapes sample's caption is in, an index into its scene's :func:`wordings` (0 for a
    caption in none of them)."""
    texts = wordings(sample["scene"])
    return texts.index(sample["caption"]) if sample["caption"] in texts else 0


class HardNegativeCaptions:
    """For NegCLIP: ``k`` generated hard-negative captions of a shapes sample, chosen by the sample's index
    so that a resumed run sees the same.

    The negatives are worded with the template of the sample's own caption: were they always in the
    canonical wording, a model could learn to reject that wording instead of the false content. With
    ``binding``, the kinds also include :func:`~mumo.data.shapes.binding_negatives` (every colour and shape
    swap, three objects reversed, a lone object mirrored); with ``places``, those of
    :func:`~mumo.data.shapes.place_negatives` (a lone object in the nearest other cell, two neighbours of
    three swapped). With more kinds than ``k``, consecutive samples rotate through them.
    """

    def __init__(self, k: int, binding: bool = False, places: bool = False) -> None:
        self.k, self.binding, self.places = k, binding, places

    def __call__(self, sample: dict[str, Any]) -> list[str]:
        template = _template(sample)
        negatives = hard_negatives(sample["scene"], template)
        extras = [f for f, on in ((binding_negatives, self.binding), (place_negatives, self.places)) if on]
        for more in extras:  # without the captions already held (hard_negatives holds one swap)
            known = set(negatives.values())
            negatives.update(
                {kind: text for kind, text in more(sample["scene"], template).items() if text not in known}
            )
        kinds = sorted(negatives)
        return [negatives[kinds[(sample["index"] + j) % len(kinds)]] for j in range(min(self.k, len(kinds)))]


class ClassPrompts:
    """For the class-prompt loss (``data.class_prompts``; UniCL, Yang et al., 2022, which trains on
    labelled images as captions made of their class names): the position-free prompt of every colour ×
    shape class the training split shows ("a red circle", the wording of a partial caption), and a
    sample's class among them.

    The held-out combinations are left out, so that their names still never reach training.
    """

    def __init__(self) -> None:
        held_out = held_out_combinations()
        self.classes = [cs for cs in class_names() if cs not in held_out]
        self.texts = [class_prompt(colour, shape) for colour, shape in self.classes]
        self._index = {cs: i for i, cs in enumerate(self.classes)}

    def __call__(self, sample: dict[str, Any]) -> int:
        """The row of ``texts`` naming a one-object scene's object; -1 for more objects (or a held-out
        class), which the loss skips."""
        objects = sample["scene"].objects
        return self._index.get((objects[0].colour, objects[0].shape), -1) if len(objects) == 1 else -1


class TwinScenes:
    """For ``data.twin_scenes``: a share of each batch replaced by twins of other samples in it, scenes that
    hold the same objects bound the other way (:func:`~mumo.data.shapes.twin_scenes`: two objects' colours,
    shapes or places traded, a lone object mirrored), each drawn and captioned in its original's wording.

    Why: the text->image half of the contrastive loss sets each caption against the batch's images, random
    scenes that seldom differ from its own in one binding only. The retrieval test's misses are such near
    twins (three objects with two neighbours traded, a pair with its shapes swapped); NegCLIP's hard
    negatives are texts, so they sharpen image->text alone. A twin in the batch is a hard negative image for
    its original's caption, and the original one for the twin's, with as many images and texts per step.

    Args:
        share: the fraction of each batch that becomes twins, in (0, 0.5]: the last ``round(share * B)``
            samples give way to twins of the first ones.
        image_size: side of the drawn images (the data's ``image_size``).
    """

    def __init__(self, share: float, image_size: int) -> None:
        self.share, self.image_size = share, image_size

    def __call__(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The batch with its tail replaced by twins; a sample whose every twin reads as its own caption
        (a lone object captioned without its place, say) gives none, and the next one is tried."""
        m = min(round(self.share * len(samples)), len(samples) // 2)
        twins: list[dict[str, Any]] = []
        for s in samples[: len(samples) - m]:
            if len(twins) == m:
                break
            template = _template(s)
            options = [
                (twin, text)
                for _, twin in sorted(twin_scenes(s["scene"]).items())
                if (text := wording(twin, template)) != s["caption"]
            ]
            if options:
                twin, text = options[s["index"] % len(options)]  # rotates through the kinds, resumably
                image = scene_image(twin, self.image_size)
                twins.append({"image": image, "caption": text, "scene": twin, "index": s["index"]})
        return samples[: len(samples) - len(twins)] + twins


def hard_negative_captions(
    k: int, binding: bool = False, places: bool = False
) -> HardNegativeCaptions | None:
    """:class:`HardNegativeCaptions` for ``k`` > 0 negatives per sample; None for ``k`` == 0 (no NegCLIP)."""
    return HardNegativeCaptions(k, binding, places) if k > 0 else None


class ShapesSource(DataSource):
    """The built-in shapes set: ``data.train_size`` scenes drawn on the fly, images (3, S, S) in [0, 1]."""

    kind = "shapes"
    normalization = (CLIP_MEAN, CLIP_STD)

    def _build_train(self) -> Dataset:
        data = self.config
        # Training only: every evaluation draws the even mix of scenes and captions them in full.
        config = shapes_config(data).replace(
            partial_captions=data.partial_captions,
            object_weights=data.object_weights,
            reading_order=data.reading_order,
        )
        return ShapesDataset(
            "train", data.train_size, config, questions=data.questions, question_weights=data.question_weights
        )

    def tokenizer_texts(self) -> list[str]:
        """Every caption template of the first ``data.tokenizer_samples`` training scenes (and their
        questions with answers, for VQA runs or ``data.tokenizer_questions``)."""
        data, cfg = self.config, shapes_config(self.config)
        texts = []
        for i in range(data.tokenizer_samples):
            scene = generate_scene(cfg, "train", i)
            texts += captions(scene)
            if data.tokenizer_questions or data.questions:
                texts += [f"{q.question} {q.answer}" for q in questions(scene)]
        return texts


# ------------------------------------------------------------------------------- image–caption files


class PairsSource(DataSource):
    """Image–caption pairs of an annotation file (``data.path``), images randomly cropped to (3, S, S)."""

    kind = "pairs"

    def _build_train(self) -> Dataset:
        data = self.config
        return PairsDataset(data.path, data.image_root, transform=train_transform(data.image_size))

    def tokenizer_texts(self) -> list[str]:
        return list(self.train_set().captions[: self.config.tokenizer_samples])


class ShardsSource(DataSource):
    """WebDataset shards in ``data.path``, streamed in an order drawn from the run's ``seed``; the trainer
    calls ``plan`` on the stream with its batch size, ranks and loader workers."""

    kind = "shards"

    def _build_train(self) -> Dataset:
        data = self.config
        return ShardStream(data.path, train_transform(data.image_size), self.seed, data.shuffle_block)

    def tokenizer_texts(self) -> list[str]:
        """The first ``data.tokenizer_samples`` captions in shard order (no image is decoded)."""
        return self.train_set().texts(self.config.tokenizer_samples)


class TextSource(DataSource):
    """A UTF-8 text file, one document per line, packed into windows once a tokenizer is bound
    (``TextCorpus.bind``); ``data.val_size`` windows are held out."""

    kind = "text"

    def _build_train(self) -> Dataset:
        return TextCorpus(self.config.path, "train", val_windows=self.config.val_size)

    def tokenizer_texts(self) -> list[str]:
        return self.train_set().documents[: self.config.tokenizer_samples]

    def collate(self, tokenizer: Tokenizer | None) -> Collate:
        if tokenizer is None:
            raise ConfigError("data.kind=text pads token windows: its collate needs a tokenizer")
        return TokenCollate(tokenizer.pad_id)


# ----------------------------------------------------------------------------------- labelled images


class _LabelledSource(DataSource):
    """Labelled images with named splits; the training set is the ``train`` split."""

    def _build_train(self) -> Dataset:
        return self.split("train")

    def collate(self, tokenizer: Tokenizer | None = None) -> Collate:
        """Stacks images and labels (no text: ``tokenizer`` is not needed)."""
        mean, std = self.normalization or (None, None)
        return LabelCollate(mean, std)


class DigitsSource(_LabelledSource):
    """scikit-learn's handwritten digits, split 60 / 20 / 20 by ``data.seed``; images in [0, 1]."""

    kind = "digits"
    normalization = (CLIP_MEAN, CLIP_STD)
    splits = tuple(DIGIT_SPLITS)

    def split(self, name: str, augment: bool | None = None) -> Dataset:
        """Split ``name`` (train, val or test) as :class:`DigitsDataset`; digits are never augmented."""
        return DigitsDataset(name, self.config.image_size, self.config.seed)


class ImageFolderSource(_LabelledSource):
    """Class folders under ``data.path``; images normalised by their transform."""

    kind = "imagefolder"
    splits = SPLIT_FOLDERS

    def split(self, name: str, augment: bool | None = None) -> Dataset:
        """Split ``name`` (train, val or test); random crops when ``augment``, which defaults to
        ``name == 'train'``, else a centre crop."""
        augment = name == "train" if augment is None else augment
        size = self.config.image_size
        transform = train_transform(size) if augment else eval_transform(size)
        return ImageFolderDataset(self.config.path, name, transform, self.config.seed)


# ---------------------------------------------------------------------------------------- the registry

SOURCES: Mapping[str, type[DataSource]] = MappingProxyType(
    {
        source.kind: source
        for source in (ShapesSource, PairsSource, ShardsSource, TextSource, DigitsSource, ImageFolderSource)
    }
)


def data_source(config: DataConfig, seed: int = 0, hard_negatives: int = 0) -> DataSource:
    """The :class:`DataSource` of ``config.kind``; ``seed`` and ``hard_negatives`` as for
    :class:`DataSource`."""
    source = SOURCES.get(config.kind)
    if source is None:
        raise ConfigError(
            f"unknown data.kind {config.kind!r}; valid kinds: {', '.join(SOURCES)}"
            + _suggest(str(config.kind), SOURCES)
        )
    return source(config, seed=seed, hard_negatives=hard_negatives)
