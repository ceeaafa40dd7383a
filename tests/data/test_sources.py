"""Data sources: one per data.kind, each building its training set, tokenizer texts and a collate whose
batches have the documented keys and shapes; the registry refuses an unknown kind in one line."""

import typing

import pytest
import torch
from PIL import Image

from mumo.data.config import DataConfig
from mumo.data.digits import DigitsDataset
from mumo.data.image_folder import ImageFolderDataset
from mumo.data.pairs import PairsDataset
from mumo.data.shapes import (
    ShapesConfig,
    ShapesDataset,
    binding_negatives,
    captions,
    class_names,
    generate_scene,
    hard_negatives,
    held_out_combinations,
    partial_captions,
    place_negatives,
    questions,
    reading_order,
    scene_and_caption,
    scene_image,
    twin_scenes,
    wordings,
)
from mumo.data.shard_writer import pairs_from_shapes, write_shards
from mumo.data.shards import ShardStream
from mumo.data.sources import (
    SOURCES,
    ClassPrompts,
    HardNegativeCaptions,
    ShapesSource,
    TwinScenes,
    data_source,
    hard_negative_captions,
    shapes_config,
)
from mumo.data.text import TextCorpus
from mumo.data.tokenizer import Tokenizer
from mumo.data.transforms import CLIP_MEAN, CLIP_STD
from mumo.errors import ConfigError, DataError

MEAN, STD = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A pairs CSV with 6 images, 16 shapes scenes in shards of 5, a text corpus, a tree of 2 classes."""
    root = tmp_path_factory.mktemp("sources")
    (root / "images").mkdir()
    rows = ["filepath,title"]
    for i in range(6):
        Image.new("RGB", (24, 20), (40 * i, 100, 200 - 30 * i)).save(root / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,picture number {i}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    write_shards(pairs_from_shapes(16), root / "shards", shard_size=5)
    lines = [f"line {i} says {'hello ' * (i % 5)}world" for i in range(60)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    for c, name in enumerate(("cat", "dog")):
        (root / "tree" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (20, 16), (120 * c, 20 * i, 50)).save(root / "tree" / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tokenizer():
    texts = [c for i in range(30) for c in captions(generate_scene(shapes_config(DataConfig()), "train", i))]
    texts += [f"picture number {i}" for i in range(6)] + [f"line {i} says hello world" for i in range(60)]
    return Tokenizer.train(texts, vocab_size=300, context_length=24)


def _configs(files) -> dict[str, DataConfig]:
    return {
        "shapes": DataConfig(train_size=12, tokenizer_samples=3, image_size=32),
        "pairs": DataConfig(kind="pairs", path=str(files / "pairs.csv"), image_size=16, tokenizer_samples=4),
        "shards": DataConfig(kind="shards", path=str(files / "shards"), image_size=32, tokenizer_samples=7),
        "text": DataConfig(kind="text", path=str(files / "corpus.txt"), val_size=2, tokenizer_samples=9),
        "digits": DataConfig(kind="digits", image_size=16),
        "imagefolder": DataConfig(kind="imagefolder", path=str(files / "tree"), image_size=16),
    }


def _assert_text_batch(batch, b, t):
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (b, t)
    assert batch["input_ids"].dtype == torch.long


# --- the registry -----------------------------------------------------------------------------------------


def test_one_source_per_kind_and_the_registry_refuses_others(files):
    kinds = typing.get_args(typing.get_type_hints(DataConfig)["kind"])
    assert tuple(SOURCES) == kinds == ("shapes", "pairs", "shards", "text", "digits", "imagefolder")
    for kind, config in _configs(files).items():
        source = data_source(config)
        assert type(source) is SOURCES[kind] and source.kind == kind and source.config is config
    config = DataConfig()
    config.kind = "shape"  # past DataConfig's own check, as a hand-edited config object could be
    with pytest.raises(ConfigError) as e:
        data_source(config)
    assert str(e.value) == (
        "unknown data.kind 'shape'; valid kinds: shapes, pairs, shards, text, digits, imagefolder"
        " — did you mean 'shapes', 'shards'?"
    )
    with pytest.raises(TypeError):
        SOURCES["video"] = ShapesSource  # the registry is read-only: no hidden state to mutate


def test_run_settings_are_refused_where_they_make_no_sense(files):
    configs = _configs(files)
    with pytest.raises(ConfigError, match=r"^hard_negatives needs data.kind=shapes .*not 'pairs'$"):
        data_source(configs["pairs"], hard_negatives=1)
    with pytest.raises(ConfigError, match="hard_negatives must be >= 0"):
        data_source(configs["shapes"], hard_negatives=-1)
    with pytest.raises(DataError, match="^data.kind=shapes has no labelled splits; use data.kind=digits"):
        data_source(configs["shapes"]).split("train")
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        data_source(configs["pairs"]).collate(None)


# --- image-caption kinds ----------------------------------------------------------------------------------


def test_shapes_batches_normalise_images_and_carry_hard_negatives(files, tokenizer):
    config = _configs(files)["shapes"]
    source = data_source(config, hard_negatives=2)
    train = source.train_set()
    assert isinstance(train, ShapesDataset) and len(train) == 12 and source.train_set() is train
    scenes = [generate_scene(shapes_config(config), "train", i) for i in range(3)]
    assert source.tokenizer_texts() == [c for s in scenes for c in captions(s)]  # 4 templates each
    assert source.normalization == (CLIP_MEAN, CLIP_STD)
    samples = [train[i] for i in range(4)]
    batch = source.collate(tokenizer)(samples)
    raw = torch.stack([s["image"] for s in samples])  # (4, 3, 32, 32) in [0, 1]
    torch.testing.assert_close(batch["images"], (raw - MEAN) / STD)
    _assert_text_batch(batch, 4, 24)
    assert batch["skipped"] == [] and "loss_mask" not in batch
    # every scene has at least change_colour / change_shape / change_size: two negatives each
    assert batch["neg_input_ids"].shape == batch["neg_attention_mask"].shape == (8, 24)
    assert batch["neg_index"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # worded in the template of the sample's own caption, chosen by its index
    scene, caption = samples[1]["scene"], samples[1]["caption"]
    negatives = hard_negatives(scene, captions(scene).index(caption))
    kinds = sorted(negatives)
    assert HardNegativeCaptions(2)(samples[1]) == [negatives[kinds[1 % len(kinds)]], negatives[kinds[2]]]
    assert hard_negative_captions(0) is None
    assert "neg_index" not in data_source(config).collate(tokenizer)(samples)


def test_partial_captions_reach_training_only_with_negatives_in_their_wording(files):
    config = _configs(files)["shapes"].replace(partial_captions=1.0, min_objects=1, max_objects=1)
    train = data_source(config, hard_negatives=3).train_set()
    for i in range(6):
        sample = train[i]
        scene = sample["scene"]
        assert sample["caption"] in partial_captions(scene)
        template = wordings(scene).index(sample["caption"])
        assert set(HardNegativeCaptions(3)(sample)) <= set(hard_negatives(scene, template).values())
    assert shapes_config(config).partial_captions == 0.0  # evaluations caption in full
    with pytest.raises(ConfigError, match="partial_captions is a share"):
        config.replace(partial_captions=1.5)
    with pytest.raises(ConfigError, match="partial_captions is for captions of the built-in data"):
        config.replace(questions=True)


def test_reading_order_reaches_training_only(files):
    config = _configs(files)["shapes"].replace(reading_order=1.0, min_objects=2, max_objects=2)
    train = data_source(config, hard_negatives=3).train_set()
    for i in range(6):
        sample = train[i]
        assert sample["caption"] in reading_order(sample["scene"])
        template = wordings(sample["scene"]).index(sample["caption"])
        assert set(HardNegativeCaptions(3)(sample)) <= set(hard_negatives(sample["scene"], template).values())
    assert shapes_config(config).reading_order == 0.0  # evaluations caption as before
    with pytest.raises(ConfigError, match="reading_order is a share"):
        config.replace(reading_order=-0.5)
    with pytest.raises(ConfigError, match="reading_order is for captions of the built-in data"):
        config.replace(questions=True)


def test_question_weights_reach_the_training_questions(files):
    config = _configs(files)["shapes"].replace(questions=True, question_weights={"where": 1, "colour": 0})
    config = config.replace(min_objects=2, max_objects=2, train_size=40)
    train = data_source(config).train_set()
    kinds = {train[i]["kind"] for i in range(40)}
    assert "where" in kinds and "colour" not in kinds
    with pytest.raises(ConfigError, match="question_weights: unknown question kind"):
        config.replace(question_weights={"colours": 1})
    with pytest.raises(ConfigError, match="question_weights is for questions of the built-in data"):
        config.replace(questions=False)


def test_binding_negatives_join_the_kinds_each_sample_rotates_through(files, tokenizer):
    config = _configs(files)["shapes"].replace(min_objects=3, max_objects=3, binding_negatives=True)
    train = data_source(config, hard_negatives=20).train_set()
    for i in range(6):
        sample = train[i]
        scene, template = sample["scene"], wordings(sample["scene"]).index(sample["caption"])
        plain, extra = hard_negatives(scene, template), binding_negatives(scene, template)
        every = HardNegativeCaptions(20, binding=True)(sample)  # more than there are kinds: all of them
        assert sorted(every) == sorted(set(plain.values()) | set(extra.values()))  # each once
        assert len(extra) > 1 and len(every) > len(plain)
        assert set(HardNegativeCaptions(20)(sample)) == set(plain.values())  # without: as before
        two = HardNegativeCaptions(2, binding=True)(sample)
        assert len(two) == 2 and set(two) <= set(every)
    batch = data_source(config, hard_negatives=20).collate(tokenizer)([train[0], train[1]])
    assert batch["neg_index"].shape[0] == sum(len(HardNegativeCaptions(20, True)(train[i])) for i in (0, 1))


def test_place_negatives_join_the_kinds_and_reach_the_batch(files, tokenizer):
    config = _configs(files)["shapes"].replace(binding_negatives=True, place_negatives=True, train_size=40)
    train = data_source(config, hard_negatives=20).train_set()
    seen = 0
    for i in range(40):
        sample = train[i]
        scene, template = sample["scene"], wordings(sample["scene"]).index(sample["caption"])
        places = set(place_negatives(scene, template).values())
        every = HardNegativeCaptions(20, binding=True, places=True)(sample)
        assert set(every) == set(HardNegativeCaptions(20, binding=True)(sample)) | places
        seen += bool(places)
    assert seen > 10  # lone objects with a position and trios have some
    negatives = data_source(config, hard_negatives=5).collate(tokenizer).negatives
    assert isinstance(negatives, HardNegativeCaptions) and negatives.places


def test_class_prompts_name_every_seen_class_and_label_each_lone_object(files, tokenizer):
    prompts = ClassPrompts()
    held_out = held_out_combinations()
    assert len(prompts.texts) == len(class_names()) - len(held_out) == 30
    assert not any(f"{colour} {shape}" in text for colour, shape in held_out for text in prompts.texts)
    config = _configs(files)["shapes"].replace(class_prompts=True, train_size=40)
    train = data_source(config, hard_negatives=2).train_set()
    samples = [train[i] for i in range(40)]
    batch = data_source(config, hard_negatives=2).collate(tokenizer)(samples)
    labels = batch["class_index"].tolist()
    assert len(labels) == 40 and -1 in labels and any(label >= 0 for label in labels)  # 1 to 3 objects
    for sample, label in zip(samples, labels, strict=True):
        objects = sample["scene"].objects
        if len(objects) > 1:
            assert label == -1
        else:
            assert prompts.texts[label] == f"a {objects[0].colour} {objects[0].shape}"
    assert batch["class_input_ids"].shape == batch["class_attention_mask"].shape == (30, 24)
    assert tokenizer.decode(batch["class_input_ids"][3].tolist()) == prompts.texts[3]
    assert "neg_index" in batch and "class_index" not in data_source(_configs(files)["shapes"]).collate(
        tokenizer
    )(samples[:2])
    with pytest.raises(ConfigError, match="class_prompts is for captions of the built-in data"):
        config.replace(questions=True)


def test_twin_scenes_replace_the_batch_tail_with_twins_of_its_head(files, tokenizer):
    config = _configs(files)["shapes"].replace(train_size=64, object_weights=(1, 2, 1), twin_scenes=0.25)
    train = data_source(config, hard_negatives=2).train_set()
    samples = [train[i] for i in range(32)]
    twinned = TwinScenes(0.25, 32)(samples)
    assert len(twinned) == 32 and twinned[:24] == samples[:24]
    for twin in twinned[24:]:
        source = next(s for s in samples[:24] if s["index"] == twin["index"])
        assert twin["scene"] in twin_scenes(source["scene"]).values()
        template = wordings(source["scene"]).index(source["caption"])
        assert twin["caption"] == wordings(twin["scene"])[template] != source["caption"]  # its wording
        assert torch.equal(twin["image"], scene_image(twin["scene"], 32))
        assert not torch.equal(twin["image"], source["image"])
    again = TwinScenes(0.25, 32)(samples)  # drawn from the samples alone: a resumed run gets the same
    assert [(t["caption"], t["scene"]) for t in again] == [(t["caption"], t["scene"]) for t in twinned]
    batch = data_source(config, hard_negatives=2).collate(tokenizer)(samples)
    assert batch["images"].shape == (32, 3, 32, 32) and batch["input_ids"].shape[0] == 32
    assert torch.allclose(batch["images"][31], (twinned[31]["image"] - MEAN[0]) / STD[0])
    assert batch["neg_index"].max().item() == 31  # the twins get hard negatives of their own
    assert data_source(_configs(files)["shapes"]).collate(tokenizer).twins is None
    for bad in (-0.1, 0.6):
        with pytest.raises(ConfigError, match="twin_scenes is a share of each batch"):
            config.replace(twin_scenes=bad)
    with pytest.raises(ConfigError, match="twin_scenes is for captions of the built-in data"):
        config.replace(questions=True)


def test_a_lone_object_captioned_without_its_place_gives_no_twin():
    from mumo.data.shapes import Scene, ShapeObject

    scene = Scene([ShapeObject("circle", "red", "small", 0.2, 0.2)])
    image = scene_image(scene, 32)
    partial = {"image": image, "caption": "a red circle", "scene": scene, "index": 0}
    placed = {**partial, "caption": wordings(scene)[0], "index": 1}
    out = TwinScenes(0.5, 32)([partial, placed, dict(partial, index=2), dict(partial, index=3)])
    assert out[:3] == [partial, placed, dict(partial, index=2)]  # only the captioned place has a twin
    assert out[3]["index"] == 1 and out[3]["caption"] != placed["caption"]


def test_shapes_questions_reach_the_tokenizer_and_mask_the_prompt(files):
    config = DataConfig(train_size=6, tokenizer_samples=2, image_size=32, questions=True)
    source = data_source(config)
    scenes = [generate_scene(shapes_config(config), "train", i) for i in range(2)]
    expected = []
    for s in scenes:
        expected += captions(s) + [f"{q.question} {q.answer}" for q in questions(s)]
    assert source.tokenizer_texts() == expected
    tok = Tokenizer.train(expected * 3, vocab_size=300, context_length=32)
    samples = [source.train_set()[i] for i in range(3)]
    batch = source.collate(tok)(samples)
    _assert_text_batch(batch, 3, 32)
    assert batch["loss_mask"].shape == (3, 32)
    assert (batch["loss_mask"].sum(1) < batch["attention_mask"].sum(1)).all()  # the prompt is not predicted


def test_pairs_are_cropped_and_normalised_by_their_transform(files, tokenizer):
    source = data_source(_configs(files)["pairs"])
    train = source.train_set()
    assert isinstance(train, PairsDataset) and len(train) == 6 and source.normalization is None
    assert source.tokenizer_texts() == [f"picture number {i}" for i in range(4)]
    batch = source.collate(tokenizer)([train[i] for i in range(5)])
    assert batch["images"].shape == (5, 3, 16, 16) and batch["images"].min() < 0  # normalised already
    _assert_text_batch(batch, 5, 24)
    assert "neg_input_ids" not in batch


def test_shards_stream_in_the_run_seed_order(files, tokenizer):
    config = _configs(files)["shards"]
    source = data_source(config, seed=5)
    stream = source.train_set()
    assert isinstance(stream, ShardStream) and stream.seed == 5 and stream.total == 16
    # the first captions in shard order, as the writer stored them
    assert source.tokenizer_texts() == [scene_and_caption(ShapesConfig(), "train", i)[1] for i in range(7)]
    stream.plan(batch_size=4)
    it = iter(stream)
    samples = [next(it) for _ in range(4)]
    batch = source.collate(tokenizer)(samples)
    assert batch["images"].shape == (4, 3, 32, 32)
    _assert_text_batch(batch, 4, 24)

    def epoch(seed):
        it = iter(data_source(config, seed=seed).train_set().plan(batch_size=4))
        return [next(it)["key"] for _ in range(16)]

    assert epoch(5) == epoch(5) != epoch(6) and sorted(epoch(5)) == sorted(epoch(6))


def test_text_batches_are_packed_token_windows(files, tokenizer):
    source = data_source(_configs(files)["text"])
    corpus = source.train_set()
    assert isinstance(corpus, TextCorpus) and corpus.val_windows == 2
    assert source.tokenizer_texts() == corpus.documents[:9] and len(corpus.documents) == 60
    assert source.normalization is None
    corpus.bind(tokenizer, 24)
    batch = source.collate(tokenizer)([corpus[0], corpus[1], corpus[2]])
    _assert_text_batch(batch, 3, 24)
    assert batch["input_ids"][0, 0] == tokenizer.bos_id


# --- labelled kinds ---------------------------------------------------------------------------------------


def test_digits_have_named_splits_and_a_normalising_collate(files):
    source = data_source(_configs(files)["digits"])
    assert source.splits == ("train", "val", "test") and source.tokenizer_texts() == []
    val = source.split("val")
    assert isinstance(val, DigitsDataset) and isinstance(source.train_set(), DigitsDataset)
    assert len(source.train_set()) + len(val) + len(source.split("test")) == 1797
    samples = [val[i] for i in range(6)]
    batch = source.collate(None)(samples)
    assert batch["images"].shape == (6, 3, 16, 16) and batch["labels"].shape == (6,)
    raw = torch.stack([s["image"] for s in samples])
    torch.testing.assert_close(batch["images"], (raw - MEAN) / STD)
    assert batch["labels"].tolist() == [s["label"] for s in samples] and batch["skipped"] == []


def test_class_folders_augment_the_train_split_only(files):
    source = data_source(_configs(files)["imagefolder"])
    assert source.splits == ("train", "val", "test") and source.normalization is None
    train, plain = source.train_set(), source.split("train", augment=False)
    assert isinstance(train, ImageFolderDataset) and train.class_names == ("cat", "dog") and len(train) == 12
    assert train.paths == plain.paths
    assert "RandomResizedCrop" in repr(train.transform) and "CenterCrop" in repr(
        source.split("test").transform
    )
    batch = source.collate()([plain[i] for i in range(4)])
    assert batch["images"].shape == (4, 3, 16, 16) and batch["labels"].shape == (4,)
    assert batch["images"].min() < 0  # normalised by the transform, not again by the collate
