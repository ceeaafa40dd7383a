"""The caption grammar: captions of every template, hard negatives, paraphrases kept out of every text, and
the parser that reads captions back into their scenes."""

import dataclasses

import numpy as np

from mumo.data.shapes import (
    COLOURS,
    SHAPES,
    Scene,
    ShapeObject,
    ShapesConfig,
    ShapesDataset,
    binding_negatives,
    canonical_caption,
    captions,
    class_prompt,
    generate_scene,
    hard_negatives,
    held_out_combinations,
    in_reading_order,
    parse_caption,
    partial_captions,
    place_negatives,
    reading_order,
    render,
    scene_and_caption,
    scene_attributes,
    scene_key,
    wordings,
)
from mumo.data.shapes.language import wording

CFG = ShapesConfig()
SIZE_WORDS = {"small", "large", "little", "big"}


def scenes(split: str, n: int, config: ShapesConfig = CFG) -> list[Scene]:
    return [generate_scene(config, split, i) for i in range(n)]


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


def test_binding_negatives_keep_every_word_and_bind_them_wrongly():
    trio = Scene(
        [
            ShapeObject("square", "red", "small", 0.8, 0.5),
            ShapeObject("circle", "blue", "large", 0.2, 0.5),
            ShapeObject("star", "green", "small", 0.5, 0.2),
        ]
    )
    assert canonical_caption(trio) == (
        "a large blue circle, a small green star and a small red square, from left to right"
    )
    negatives = binding_negatives(trio)
    assert negatives["reverse_order"] == (
        "a small red square, a small green star and a large blue circle, from left to right"
    )
    assert negatives["swap_colours(0,1)"] == (
        "a large red circle, a small green star and a small blue square, from left to right"
    )
    assert negatives["swap_shapes(1,2)"] == (
        "a large blue star, a small green circle and a small red square, from left to right"
    )
    # the red square is a held-out pair: no edit gives the scene away, so all 3 + 3 swaps and the reversal
    assert len(negatives) == 7
    closed = Scene([dataclasses.replace(trio.objects[0], shape="cross"), *trio.objects[1:]])
    # no held-out pair in it: the two swaps that would show a blue star (held out) are left out
    assert set(negatives) - set(binding_negatives(closed)) == {"swap_colours(1,2)", "swap_shapes(1,2)"}
    held = held_out_combinations()
    for scene in scenes("train", 150) + scenes("heldout", 30):
        open_ = any((o.colour, o.shape) in held for o in scene.objects)
        for t, own in enumerate(wordings(scene)):
            for kind, text in binding_negatives(scene, t).items():
                assert text not in wordings(scene), (kind, text)  # none of them true
                if kind.startswith("mirror"):  # only the place changes
                    assert {x for _, x, _ in word_diff(own, text)} <= {"left", "right", "top", "bottom"}
                else:  # the same words: a bag of words cannot tell them apart
                    assert sorted(text.replace(",", "").split()) == sorted(own.replace(",", "").split())
                assert open_ or not any(f"{c} {s}" in text for c, s in held), text
        if len(scene.objects) > 1:
            assert not any(kind.startswith("mirror") for kind in binding_negatives(scene))


def test_a_lone_objects_binding_negatives_are_its_mirrored_places():
    corner = Scene([ShapeObject("circle", "red", "small", 0.1, 0.9)])
    assert binding_negatives(corner) == {
        "mirror_x": "a small red circle in the bottom right",
        "mirror_y": "a small red circle in the top left",
    }
    assert binding_negatives(corner, 4) == {}  # "a red circle": no place to mirror
    assert binding_negatives(corner, 6) == {
        "mirror_x": "a red circle in the bottom right",
        "mirror_y": "a red circle in the top left",
    }
    middle = Scene([ShapeObject("circle", "red", "small", 0.5, 0.1)])
    assert binding_negatives(middle) == {"mirror_y": "a small red circle at the bottom"}


def test_place_negatives_move_a_lone_object_across_its_nearest_grid_line():
    # in the left cell, 0.04 under the line to the bottom left: the bottom left is the nearest other cell
    low_left = Scene([ShapeObject("circle", "red", "small", 0.15, 0.63)])
    assert canonical_caption(low_left) == "a small red circle on the left"
    assert place_negatives(low_left) == {"nearest_cell": "a small red circle in the bottom left"}
    # 0.02 right of the line to the centre: the left cell, across it
    assert place_negatives(Scene([ShapeObject("circle", "red", "small", 0.35, 0.5)])) == {
        "nearest_cell": "a small red circle on the left"
    }
    assert place_negatives(low_left, 4) == {}  # "a red circle": no place to move


def test_place_negatives_swap_two_neighbours_of_three():
    trio = Scene(
        [
            ShapeObject("square", "red", "small", 0.8, 0.5),
            ShapeObject("circle", "blue", "large", 0.2, 0.5),
            ShapeObject("star", "green", "small", 0.5, 0.2),
        ]
    )
    assert place_negatives(trio) == {
        "swap_places(0,1)": (
            "a small green star, a large blue circle and a small red square, from left to right"
        ),
        "swap_places(1,2)": (
            "a large blue circle, a small red square and a small green star, from left to right"
        ),
    }
    for scene in scenes("train", 150):
        for t, own in enumerate(wordings(scene)):
            for kind, text in place_negatives(scene, t).items():
                assert text not in wordings(scene), (kind, text)  # none of them true
                if kind == "nearest_cell":  # the object in a cell next to its own, nothing else changed
                    o = scene.objects[0]
                    col, row = min(int(o.x * 3), 2), min(int(o.y * 3), 2)
                    cells = [(col - 1, row), (col + 1, row), (col, row - 1), (col, row + 1)]
                    next_door = [
                        wording(Scene([dataclasses.replace(o, x=(c + 0.5) / 3, y=(r + 0.5) / 3)]), t)
                        for c, r in cells
                        if 0 <= c < 3 and 0 <= r < 3
                    ]
                    assert text in next_door, (own, text)
                else:  # the same words: a bag of words cannot tell them apart
                    assert sorted(text.replace(",", "").split()) == sorted(own.replace(",", "").split())
        if len(scene.objects) == 2:
            assert place_negatives(scene) == {}  # a pair's places are its relation: reverse_relation


def test_partial_captions_name_less_and_their_negatives_stay_false():
    lone = Scene([ShapeObject("circle", "red", "small", 0.1, 0.1)])
    assert partial_captions(lone) == [
        "a red circle",
        "a small red circle",
        "a red circle in the top left",
    ]
    pair = generate_scene(ShapesConfig(min_objects=2, max_objects=2), "train", 0)
    assert partial_captions(pair) == [] and wordings(pair) == captions(pair)
    assert class_prompt("red", "circle") == partial_captions(lone)[0]  # a class prompt reads as a caption
    negatives = {t: hard_negatives(lone, t) for t in range(4, 7)}  # the three partial wordings
    canonical = hard_negatives(lone)  # the same edits, in the full wording
    colour, shape = canonical["change_colour"].split()[2], canonical["change_shape"].split()[3]
    assert negatives[4] == {"change_colour": f"a {colour} circle", "change_shape": f"a red {shape}"}
    assert negatives[5]["change_size"] == "a large red circle"
    assert set(negatives[6]) == {"change_colour", "change_shape"}  # no size in it: no size to change
    for t, negs in negatives.items():
        assert wordings(lone)[t] not in negs.values()


def test_reading_order_names_the_upper_or_left_object_first_and_stays_true():
    below = Scene(
        [ShapeObject("circle", "red", "small", 0.5, 0.8), ShapeObject("square", "blue", "large", 0.45, 0.2)],
        "below",
    )
    assert reading_order(below) == [
        "a large blue square above a small red circle",
        "there is a large blue square above a small red circle",
        "a big blue square above a little red circle",
    ]
    ordered = in_reading_order(below)
    assert ordered.relation == "above" and ordered.objects == below.objects[::-1]
    assert in_reading_order(ordered) == ordered
    for scene in scenes("train", 60, ShapesConfig(min_objects=2, max_objects=2)):
        first = in_reading_order(scene).objects[0]
        other = in_reading_order(scene).objects[1]
        vertical = scene.relation in ("above", "below")
        assert (first.y < other.y) if vertical else (first.x < other.x)
        np.testing.assert_array_equal(render(scene), render(in_reading_order(scene)))  # the same picture
        texts = reading_order(scene)
        assert len(texts) == 3 and set(texts) <= set(captions(in_reading_order(scene)))
        for text in texts:  # true of the scene, and names the first object first
            assert parse_caption(text).objects[0] == (first.size, first.colour, first.shape)
            assert scene_attributes(scene) in parse_caption(text).readings()
    lone, trio = scenes("train", 1)[0], generate_scene(ShapesConfig(min_objects=3), "train", 0)
    assert reading_order(lone) == [] == reading_order(trio) and in_reading_order(trio) == trio


def test_a_share_of_pairs_is_captioned_in_reading_order_and_the_rest_draw_as_before():
    plain, ordered = ShapesConfig(), ShapesConfig(reading_order=0.5)
    kinds = {"reading": 0, "any": 0}
    for i in range(300):
        scene, caption = scene_and_caption(ordered, "train", i)
        if len(scene.objects) != 2:
            assert (scene, caption) == scene_and_caption(plain, "train", i)  # only pairs change
            continue
        original = scene_and_caption(plain, "train", i)[0]
        assert scene in (original, in_reading_order(original))  # the same objects and picture
        assert caption in wordings(scene)  # hard negatives find the sample's template
        kinds["reading" if caption in reading_order(scene) else "any"] += 1
    # reading order takes half the pairs; a quarter of the rest start with the upper object by chance
    assert kinds["reading"] > 0.45 * sum(kinds.values()) and kinds["any"] > 0.2 * sum(kinds.values())
    every = ShapesConfig(min_objects=2, max_objects=2, reading_order=1.0)
    for i in range(40):
        scene, caption = scene_and_caption(every, "train", i)
        assert scene.relation in ("above", "left of") and caption in reading_order(scene)


def test_a_share_of_lone_objects_gets_partial_captions_and_the_rest_draw_as_before():
    plain, partial = ShapesConfig(), ShapesConfig(partial_captions=0.5)
    kinds = {"full": 0, "partial": 0}
    for i in range(300):
        scene, caption = scene_and_caption(partial, "train", i)
        assert scene == scene_and_caption(plain, "train", i)[0]  # the same scenes
        if len(scene.objects) > 1:
            assert caption == scene_and_caption(plain, "train", i)[1]  # only lone objects change
        else:
            kinds["partial" if caption in partial_captions(scene) else "full"] += 1
            assert caption in wordings(scene)
    assert kinds["partial"] > 0.3 * sum(kinds.values()) and kinds["full"] > 0.3 * sum(kinds.values())


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


# --- reading captions back ----------------------------------------------------------------------------


def test_every_template_parses_back_to_the_attributes_of_its_scene() -> None:
    from mumo.data.shapes import attribute_names, parse_caption, scene_attributes

    for scene in scenes("test", 300) + scenes("heldout", 50):
        truth = scene_attributes(scene)
        assert len(truth) == len(attribute_names(len(scene.objects)))
        for t, text in enumerate(captions(scene)):
            parsed = parse_caption(text)
            assert parsed is not None and len(parsed.objects) == len(scene.objects), text
            # every template but "B is {inv} A" names the pair in scene order, so its first reading is exact
            readings = parsed.readings()
            assert truth in readings, (text, readings)
            assert readings[0] == truth or (len(scene.objects) == 2 and t == 1)


def test_parsed_captions_say_what_the_words_say() -> None:
    from mumo.data.shapes import ParsedCaption, attribute_names, parse_caption, scene_attributes

    assert parse_caption("  A big Red   circle, in the top left ") is None  # no template has this comma
    assert parse_caption("  In the TOP LEFT there is a big red   circle ") == ParsedCaption(
        [("large", "red", "circle")], position="top left"
    )
    below = parse_caption("a small green star is to the right of a large red circle")
    assert below == ParsedCaption(
        [("large", "red", "circle"), ("small", "green", "star")], relation="left of"
    )
    assert below.readings() == [
        ["large", "red", "circle", "small", "green", "star", "left of"],
        ["small", "green", "star", "large", "red", "circle", "right of"],
    ]
    three = parse_caption(
        "from left to right there are a little red circle, a big blue square and a little red star"
    )
    assert three is not None and three.readings() == [
        ["small", "red", "circle", "large", "blue", "square", "small", "red", "star"]
    ]
    assert (
        parse_caption("a large crimson circle in the top left") is None
    )  # a paraphrase is not in the grammar
    assert parse_caption("a large red circle") is None  # no position
    assert parse_caption("") is None
    assert attribute_names(1) == ["size", "colour", "shape", "position"]
    assert attribute_names(2)[-1] == "relation" and len(attribute_names(3)) == 9
    # three objects are listed from left to right whatever order the scene holds them in
    three_scene = Scene(
        [
            ShapeObject("star", "green", "small", 0.8, 0.5),
            ShapeObject("circle", "red", "small", 0.2, 0.5),
            ShapeObject("square", "blue", "large", 0.5, 0.3),
        ]
    )
    assert scene_attributes(three_scene)[::3] == ["small", "large", "small"]
    assert scene_attributes(three_scene)[2::3] == ["circle", "square", "star"]


def test_scenes_no_caption_tells_apart_share_a_key():
    a = ShapeObject("circle", "red", "small", 0.2, 0.5)
    b = ShapeObject("square", "blue", "large", 0.8, 0.5)
    assert scene_key(Scene([a, b], "left of")) == scene_key(Scene([b, a], "right of"))  # one scene, both ways
    assert scene_key(Scene([a, b], "left of")) != scene_key(Scene([a, b], "right of"))
    moved = dataclasses.replace(a, x=0.25, y=0.55)  # the same cell of the grid: the same captions
    assert scene_key(Scene([a])) == scene_key(Scene([moved])) != scene_key(Scene([b]))
