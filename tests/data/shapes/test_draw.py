"""Drawing scenes: every shape fits its disc, colours are exact, and what is drawn agrees with the scene's
relation and the caption's positions."""

import numpy as np

from mumo.data.shapes import (
    BACKGROUND,
    COLOURS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    ShapesConfig,
    canonical_caption,
    draw,
    generate_scene,
    position_word,
    render,
)

CFG = ShapesConfig()


def scenes(split: str, n: int, config: ShapesConfig = CFG) -> list[Scene]:
    return [generate_scene(config, split, i) for i in range(n)]


def foreground(image: np.ndarray) -> np.ndarray:
    return (image != np.array(BACKGROUND, dtype=np.uint8)).any(-1)  # (H, W) bool


def centroid(obj: ShapeObject, size: int = 64) -> np.ndarray:
    ys, xs = np.nonzero(foreground(render(Scene([obj]), size)))
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / size


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
    assert tuple(draw.SDFS) == SHAPES
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
