"""Scenes of the built-in shapes set: seeds, splits and held-out pairs, object counts, config, classes."""

import numpy as np
import pytest

from mumo.data.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    Scene,
    ShapesConfig,
    class_index,
    class_names,
    generate_scene,
    held_out_combinations,
    render,
    twin_scenes,
)
from mumo.data.shapes.scene import _fits
from mumo.errors import ConfigError

CFG = ShapesConfig()


def scenes(split: str, n: int, config: ShapesConfig = CFG) -> list[Scene]:
    return [generate_scene(config, split, i) for i in range(n)]


def test_different_seeds_differ() -> None:
    s0, s1 = scenes("train", 30), scenes("train", 30, ShapesConfig(seed=1))
    same = sum(np.array_equal(render(a), render(b)) for a, b in zip(s0, s1, strict=True))
    assert same == 0


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


def test_object_weights_set_how_often_each_count_comes() -> None:
    weighted = [len(s.objects) for s in scenes("train", 600, ShapesConfig(object_weights=(1, 4, 0)))]
    assert 3 not in weighted and 0.7 < weighted.count(2) / 600 < 0.9  # 4 in 5 expected
    pairs_only = ShapesConfig(min_objects=2, max_objects=3, object_weights=(1, 0))
    assert {len(s.objects) for s in scenes("train", 30, pairs_only)} == {2}


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"image_size": 16}, "image_size"),
        ({"min_objects": 0}, "min_objects"),
        ({"max_objects": 4}, "max_objects"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects"),
        ({"seed": -1}, "seed"),
        ({"object_weights": (1, 2)}, "object_weights"),
        ({"object_weights": (0, 0, 0)}, "object_weights"),
        ({"partial_captions": -0.1}, "partial_captions"),
        ({"reading_order": 1.5}, "reading_order"),
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


def test_twin_scenes_bind_the_same_objects_the_other_way_and_still_fit() -> None:
    held = held_out_combinations()
    kinds, lonely = set(), 0
    for scene in scenes("train", 300, ShapesConfig(object_weights=(1, 2, 1))):
        assert _fits(scene.objects)  # the check twins are held to passes every drawn scene
        twins = twin_scenes(scene)
        lonely += not twins  # trades that all show a held-out pair or leave the image
        for kind, twin in twins.items():
            kinds.add(kind.split("(")[0])
            assert twin.objects != scene.objects and _fits(twin.objects)
            assert not any((o.colour, o.shape) in held for o in twin.objects)  # training scenes stay closed
            assert sorted(o.colour for o in twin.objects) == sorted(o.colour for o in scene.objects)
            assert sorted(o.shape for o in twin.objects) == sorted(o.shape for o in scene.objects)
            if kind.startswith("swap_places"):  # the same places, taken by the other object
                assert sorted((o.x, o.y) for o in twin.objects) == sorted((o.x, o.y) for o in scene.objects)
                assert twin.relation != scene.relation or scene.relation is None
            if kind == "mirror_x":
                assert twin.objects[0].x == pytest.approx(1.0 - scene.objects[0].x)
    assert kinds == {"swap_colours", "swap_shapes", "swap_places", "mirror_x", "mirror_y"}
    assert lonely < 15


def test_a_pair_twin_trades_places_and_reverses_its_relation() -> None:
    from mumo.data.shapes import ShapeObject

    a = ShapeObject("circle", "green", "small", 0.2, 0.5)
    b = ShapeObject("square", "blue", "large", 0.7, 0.5)
    twins = twin_scenes(Scene([a, b], "left of"))
    placed = twins["swap_places(0,1)"]
    assert placed.relation == "right of" and (placed.objects[0].x, placed.objects[1].x) == (0.7, 0.2)
    assert twins["swap_colours(0,1)"].objects[0].colour == "blue"
    edge = ShapeObject("square", "blue", "large", 0.8, 0.5)  # a large disc here fits, a small one's place…
    squeezed = ShapeObject("circle", "red", "small", 0.14, 0.5)  # …by the border does not fit a large one
    assert "swap_places(0,1)" not in twin_scenes(Scene([squeezed, edge], "left of"))
