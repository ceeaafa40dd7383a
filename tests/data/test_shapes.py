import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from mumo.data import (
    COLOURS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    ShapesConfig,
    ShapesDataset,
    _render,
    canonical_caption,
    captions,
    class_index,
    class_names,
    generate_scene,
    hard_negatives,
    held_out_combinations,
    render,
    write_shapes,
)
from mumo.data.shapes import BACKGROUND, position_word
from mumo.errors import ConfigError

CFG = ShapesConfig()
SIZE_WORDS = {"small", "large", "little", "big"}


def scenes(split: str, n: int, config: ShapesConfig = CFG) -> list[Scene]:
    return [generate_scene(config, split, i) for i in range(n)]


def foreground(image: np.ndarray) -> np.ndarray:
    return (image != np.array(BACKGROUND, dtype=np.uint8)).any(-1)  # (H, W) bool


def centroid(obj: ShapeObject, size: int = 64) -> np.ndarray:
    ys, xs = np.nonzero(foreground(render(Scene([obj]), size)))
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / size


# --- determinism ------------------------------------------------------------------------------------------


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


def test_different_seeds_differ() -> None:
    s0, s1 = scenes("train", 30), scenes("train", 30, ShapesConfig(seed=1))
    same = sum(np.array_equal(render(a), render(b)) for a, b in zip(s0, s1, strict=True))
    assert same == 0


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


# --- splits -----------------------------------------------------------------------------------------------


def test_held_out_combinations_form_a_latin_diagonal() -> None:
    held = held_out_combinations()
    assert len(held) == 6
    assert sorted(c for c, _ in held) == sorted(COLOURS) and sorted(s for _, s in held) == sorted(SHAPES)
    assert held == held_out_combinations()


def test_held_out_pairs_never_in_train_val_test_and_always_in_heldout() -> None:
    held = held_out_combinations()
    seen = set()
    for split in ("train", "val", "test"):
        for scene in scenes(split, 300):
            pairs = {(o.colour, o.shape) for o in scene.objects}
            assert not pairs & held, (split, scene)
            if split == "train":
                seen |= pairs
    assert seen == set(class_names()) - held  # every colour and shape still trains with 5 partners
    for scene in scenes("heldout", 200):
        assert any((o.colour, o.shape) in held for o in scene.objects), scene


def test_splits_are_disjoint_samples() -> None:
    images = {split: [render(s).tobytes() for s in scenes(split, 50)] for split in ("train", "val", "test")}
    assert not set(images["train"]) & set(images["val"])
    assert not set(images["train"]) & set(images["test"])
    assert not set(images["val"]) & set(images["test"])


def test_object_count_range_and_sizes() -> None:
    counts = {len(s.objects) for s in scenes("train", 100)}
    assert counts == {1, 2, 3}
    assert {len(s.objects) for s in scenes("train", 30, ShapesConfig(min_objects=2, max_objects=2))} == {2}
    assert SIZES["large"] >= 1.4 * SIZES["small"]


# --- geometry ---------------------------------------------------------------------------------------------


def test_relations_hold_for_rendered_positions_and_objects_do_not_overlap() -> None:
    config = ShapesConfig(min_objects=2, max_objects=2)
    relations = set()
    for scene in scenes("train", 60, config):
        a, b = scene.objects
        masks = [foreground(render(Scene([o]))) for o in (a, b)]
        assert not (masks[0] & masks[1]).any()
        dx, dy = centroid(a) - centroid(b)
        expected = {"left of": dx < 0, "right of": dx > 0, "above": dy < 0, "below": dy > 0}[scene.relation]
        horizontal = scene.relation in ("left of", "right of")
        assert expected and (abs(dx) > 1.5 * abs(dy) if horizontal else abs(dy) > 1.5 * abs(dx))
        relations.add(scene.relation)
    assert relations == {"left of", "right of", "above", "below"}


def test_three_objects_listed_left_to_right_and_single_position_word_true() -> None:
    for scene in scenes("train", 40, ShapesConfig(min_objects=3, max_objects=3)):
        text = canonical_caption(scene)
        by_x = sorted(scene.objects, key=lambda o: centroid(o)[0])
        listed = text.removesuffix(", from left to right").replace(" and ", ", ").split(", ")
        assert listed == [f"a {o.size} {o.colour} {o.shape}" for o in by_x], text
    for scene in scenes("train", 40, ShapesConfig(min_objects=1, max_objects=1)):
        cx, cy = centroid(scene.objects[0])
        assert position_word(cx, cy) == position_word(scene.objects[0].x, scene.objects[0].y)
        assert position_word(cx, cy).split()[-1] in canonical_caption(scene)


def test_shapes_fit_their_disc_and_differ() -> None:
    assert tuple(_render.SDFS) == SHAPES
    masks = []
    for shape in SHAPES:
        for size in ("small", "large"):
            mask = foreground(render(Scene([ShapeObject(shape, "red", size, 0.5, 0.5)])))
            ys, xs = np.nonzero(mask)
            radius = np.hypot(xs + 0.5 - 32, ys + 0.5 - 32).max()
            assert radius <= SIZES[size] * 64 + 1.0, (shape, size)
            masks.append(mask)
        assert masks[-1].sum() > 2 * masks[-2].sum()  # large clearly bigger
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] != masks[j]).sum() > 5


def test_render_colours_and_dtype() -> None:
    image = render(Scene([ShapeObject("square", "blue", "large", 0.5, 0.5)]), 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert tuple(image[24, 24]) == COLOURS["blue"] and tuple(image[0, 0]) == BACKGROUND


# --- text -------------------------------------------------------------------------------------------------


def test_captions_describe_every_object() -> None:
    ds, templates_used = ShapesDataset("train", 150), set()
    for i in range(len(ds)):
        item = ds[i]
        scene, texts = item["scene"], captions(item["scene"])
        assert len(set(texts)) == len(texts) >= 4
        for text in texts:
            for o in scene.objects:
                assert f"{o.colour} {o.shape}" in text, text
            sizes = [w for w in text.replace(",", "").split() if w in SIZE_WORDS]
            assert len(sizes) == len(scene.objects), text
        templates_used.add(texts.index(item["caption"]))
    assert len(templates_used) >= 3


def test_caption_examples() -> None:
    one = Scene([ShapeObject("circle", "red", "large", 0.2, 0.2)])
    assert captions(one) == [
        "a large red circle in the top left",
        "a red circle that is big, in the top left",
        "there is a large red circle in the top left",
        "in the top left there is a big red circle",
    ]
    two = Scene(
        [ShapeObject("circle", "red", "large", 0.2, 0.5), ShapeObject("star", "green", "small", 0.7, 0.5)],
        "left of",
    )
    assert canonical_caption(two) == "a large red circle to the left of a small green star"
    assert captions(two)[1] == "a small green star is to the right of a large red circle"
    three = Scene(
        [
            ShapeObject("star", "green", "small", 0.8, 0.5),
            ShapeObject("circle", "red", "small", 0.2, 0.5),
            ShapeObject("square", "blue", "large", 0.5, 0.3),
        ]
    )
    assert (
        canonical_caption(three)
        == "a small red circle, a large blue square and a small green star, from left to right"
    )
    negatives = hard_negatives(two)
    assert negatives["swap_colours"] == "a large green circle to the left of a small red star"
    assert negatives["reverse_relation"] == "a large red circle to the right of a small green star"


def word_diff(a: str, b: str) -> list[tuple[int, str, str]]:
    wa, wb = a.replace(",", "").split(), b.replace(",", "").split()
    assert len(wa) == len(wb), (a, b)
    return [(k, x, y) for k, (x, y) in enumerate(zip(wa, wb, strict=True)) if x != y]


def test_hard_negatives_are_false_and_of_their_kind() -> None:
    held = held_out_combinations()
    vocab = {"change_colour": set(COLOURS), "change_shape": set(SHAPES), "change_size": {"small", "large"}}
    for scene in scenes("train", 200) + scenes("heldout", 30):
        positive, negatives = canonical_caption(scene), hard_negatives(scene)
        assert negatives == hard_negatives(dataclasses.replace(scene, objects=list(scene.objects)))
        assert ("reverse_relation" in negatives) == (len(scene.objects) == 2)
        assert ("swap_colours" in negatives) == (len({o.colour for o in scene.objects}) > 1)
        for kind, text in negatives.items():
            assert text not in captions(scene), (kind, text)
            diff = [(x, y) for _, x, y in word_diff(positive, text)]
            if kind == "swap_colours":
                assert len(diff) == 2 and diff[0] == diff[1][::-1] and set(diff[0]) <= set(COLOURS), diff
            elif kind == "reverse_relation":
                assert diff in (
                    [("left", "right")],
                    [("right", "left")],
                    [("above", "below")],
                    [("below", "above")],
                )
            else:
                assert len(diff) == 1 and {diff[0][0], diff[0][1]} <= vocab[kind], (kind, diff)
            if kind == "change_colour" and not any((o.colour, o.shape) in held for o in scene.objects):
                (k, _, new), words = word_diff(positive, text)[0], text.replace(",", "").split()
                assert (new, words[k + 1]) not in held  # no unseen pair gives the negative away


# --- files, data set, config ------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"image_size": 16}, "image_size"),
        ({"min_objects": 0}, "min_objects"),
        ({"max_objects": 4}, "max_objects"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ShapesConfig(**overrides)


def test_class_names_and_index() -> None:
    names = class_names()
    assert len(names) == len(set(names)) == 36
    for scene in scenes("train", 20, ShapesConfig(min_objects=1, max_objects=1)):
        o = scene.objects[0]
        assert names[class_index(scene)] == (o.colour, o.shape)
    with pytest.raises(ConfigError, match="one-object"):
        class_index(generate_scene(ShapesConfig(min_objects=2, max_objects=2), "train", 0))


def test_hard_negatives_follow_the_wording_of_any_template():
    config = ShapesConfig()
    for i in range(40):
        scene = generate_scene(config, "train", i)
        texts = captions(scene)
        canonical = hard_negatives(scene)
        for t, text in enumerate(texts):
            negatives = hard_negatives(scene, t)
            assert negatives.keys() == canonical.keys() and text not in negatives.values()
            for kind, negative in negatives.items():
                # the same edit: the negative scene's caption in this template is never a true caption
                assert negative not in texts
                if t == 0:
                    assert negative == canonical[kind]


def test_every_question_is_answered_by_the_scene_and_names_one_object():
    from mumo.data.shapes import NUMBER_WORDS, QUESTION_KINDS, SIZES, questions

    config = ShapesConfig()
    kinds = set()
    for i in range(300):
        scene = generate_scene(config, "test", i)
        objs = scene.objects
        for q in questions(scene):
            kinds.add(q.kind)
            if q.kind == "count":
                shape = next(s for s in SHAPES if f" {s}" in q.question)
                assert q.answer == NUMBER_WORDS[sum(o.shape == shape for o in objs)]
                continue
            if q.kind == "relation":
                assert q.answer in ("yes", "no")
                continue
            if q.kind == "where":
                assert q.answer in ("left", "right", "above", "below")
                continue
            ref = q.question.rsplit(" the ", 1)[1].rstrip("?").removesuffix(" object").split()
            named = [o for o in objs if all(w in (o.size, o.colour, o.shape) for w in ref)]
            assert len(named) == 1, q  # the reference is unique ...
            if q.kind == "position":  # ... and its centre is well inside the cell the answer names
                o = named[0]
                assert q.answer == position_word(o.x, o.y)
                assert all(abs(v - line) >= 0.03 for v in (o.x, o.y) for line in (1 / 3, 2 / 3))
                continue
            attribute = {"colour": "colour", "shape": "shape", "size": "size"}[q.kind]
            assert attribute not in [a for a in ("size", "colour", "shape") if getattr(named[0], a) in ref]
            assert q.answer == getattr(named[0], attribute)  # ... and the answer true
            assert q.answer in (*COLOURS, *SHAPES, *SIZES)
    assert kinds == set(QUESTION_KINDS)


def test_a_lone_object_is_always_asked_where_it_is():
    from mumo.data.shapes import questions

    for i in range(100):
        scene = generate_scene(ShapesConfig(min_objects=1, max_objects=1), "test", i)
        (q,) = [q for q in questions(scene) if q.kind == "position"]
        o = scene.objects[0]
        assert q.question == f"where in the picture is the {o.shape}?"
        assert q.answer == position_word(o.x, o.y)


def test_relation_questions_come_in_true_and_false_pairs_that_match_the_geometry():
    from mumo.data.shapes import questions

    phrases = {"to the left of": (0, -1), "to the right of": (0, 1), "above": (1, -1), "below": (1, 1)}
    for i in range(200):
        scene = generate_scene(ShapesConfig(min_objects=2, max_objects=2), "test", i)
        rel = [q for q in questions(scene) if q.kind == "relation"]
        assert len(rel) in (0, 4)  # objects 0 -> 1, then 1 -> 0, each asked true then false
        where = [q for q in questions(scene) if q.kind == "where"]
        opposite = {"left": "right", "right": "left", "above": "below", "below": "above"}
        if where:  # and where each is relative to the other, in one word
            assert where[0].answer == scene.relation.split()[0]
            assert where[1].answer == opposite[where[0].answer]
        for (first, second), q in zip([(0, 1), (0, 1), (1, 0), (1, 0)], rel, strict=False):
            axis, sign = next(v for k, v in phrases.items() if f" {k} " in q.question)
            a, b = scene.objects[first], scene.objects[second]
            delta = (a.x - b.x, a.y - b.y)[axis]
            holds = delta * sign > 0 and abs(delta) > abs((a.x - b.x, a.y - b.y)[1 - axis])
            assert (q.answer == "yes") == holds, (q, scene)


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


def test_paraphrases_are_never_in_training_texts_or_prompts() -> None:
    # Zero-shot with paraphrased class names (LiT with a pretrained text tower) is only meaningful if no
    # caption, hard negative, question or prompt ever uses these words.
    import re

    from mumo.data.shapes import COLOURS, PARAPHRASES, SHAPES, generate_scene, hard_negatives, questions
    from mumo.inference import ZERO_SHOT_TEMPLATES

    assert PARAPHRASES == {
        "red": "crimson",
        "green": "emerald",
        "blue": "azure",
        "yellow": "golden",
        "purple": "violet",
        "cyan": "turquoise",
        "circle": "ring",
        "square": "box",
        "triangle": "pyramid",
        "star": "pentagram",
        "cross": "plus sign",
        "diamond": "rhombus",
    }
    assert set(PARAPHRASES) == set(COLOURS) | set(SHAPES)
    texts = list(ZERO_SHOT_TEMPLATES)
    config = ShapesConfig()
    for split in ("train", "heldout"):
        for i in range(1500):
            scene = generate_scene(config, split, i)
            texts += captions(scene) + list(hard_negatives(scene).values())
            texts += [f"{q.question} {q.answer}" for q in questions(scene)]
    words = set(re.findall(r"[a-z]+", " ".join(texts).lower()))
    used = {w for p in PARAPHRASES.values() for w in p.split()} & words
    assert not used, used
