"""Scenes of the built-in shapes set: the vocabulary, the splits and held-out pairs, and where objects go.

Each scene holds 1–3 objects, each a shape (6), colour (6), size (small / large) and position, on a dark
background. Sample ``i`` of a split depends only on ``(seed, split, i)``, so any worker in any order draws
the same scene. Six colour–shape combinations (:func:`held_out_combinations`) never appear in the train,
val and test splits; every scene of the ``heldout`` split has at least one, to measure compositional
generalisation.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from mumo._config import Config, _suggest, check
from mumo.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "green": (45, 190, 60),
    "blue": (45, 95, 240),
    "yellow": (235, 215, 45),
    "purple": (160, 65, 220),
    "cyan": (45, 215, 225),
}
SIZES: dict[str, float] = {"small": 0.11, "large": 0.17}  # radius of the bounding disc / image side
BACKGROUND = (20, 20, 26)
SPLITS = ("train", "val", "test", "heldout")
RELATIONS = ("left of", "right of", "above", "below")  # of the first object relative to the second
POSITIONS = (  # 3×3 grid, row-major from the top left
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right",
)  # fmt: skip
# A relation read the other way round: "A above B" says what "B below A" says.
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# Placement, in units of the image side. Gaps leave a couple of pixels between discs at 64 px; a pair's
# offset along its relation's axis is at least twice the other offset, so the relation is unambiguous.
_EDGE = 0.02  # least distance from a disc to the image border
_GAP = 0.03  # least distance between two discs
_CELL_MARGIN = 0.03  # a lone object's centre keeps this far from the 3×3 grid lines
_DOMINANCE = 2.0
_X_GAP = 0.1  # least x distance between neighbours in a triple, so "from left to right" is clear
_CANDIDATES = 32  # positions drawn per rejection round, vectorised


@functools.cache  # frozen, and asked for by every sample's negatives
def held_out_combinations() -> frozenset[tuple[str, str]]:
    """The six (colour, shape) pairs kept out of train/val/test.

    A Latin-square diagonal: colour ``i`` with shape ``i + 1 (mod 6)``, so each colour and each shape is
    held out exactly once and still appears in training with its five other partners.
    """
    colours = list(COLOURS)
    return frozenset((colours[i], SHAPES[(i + 1) % len(SHAPES)]) for i in range(len(colours)))


_HELD_OUT = tuple(sorted(held_out_combinations()))
_ALL = tuple((c, s) for c in COLOURS for s in SHAPES)
_SEEN = tuple(cs for cs in _ALL if cs not in held_out_combinations())


# A synonym of every colour and shape word that no caption, question or prompt uses. Zero-shot with them
# asks whether a text tower knows language beyond its training captions (LiT with a pretrained tower).
PARAPHRASES: dict[str, str] = {
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


def class_names() -> list[tuple[str, str]]:
    """All 36 (colour, shape) classes in a fixed order (colours outer, shapes inner), for zero-shot."""
    return list(_ALL)


def check_object_weights(weights: tuple[float, ...] | None, lo: int, hi: int, where: str) -> None:
    """Refuse object-count weights that are not one weight >= 0 per count from ``lo`` to ``hi``, not all 0."""
    counts = hi - lo + 1
    check(
        weights is None or (len(weights) == counts and min(weights) >= 0 < sum(weights)),
        f"{where}.object_weights needs {counts} weights >= 0, not all 0, one per object count from {lo} to "
        f"{hi}; got {weights}",
    )


@dataclass
class ShapesConfig(Config):
    """How scenes are drawn."""

    image_size: int = 64  # side of the square RGB image in pixels
    min_objects: int = 1  # fewest objects per scene
    max_objects: int = 3  # most objects per scene (at most 3)
    seed: int = 0  # with (split, index) fixes every sample
    # Share of one-object scenes captioned with a partial description (no size, no position, or neither:
    # see language.partial_captions), so that a text naming fewer attributes still finds its image.
    partial_captions: float = 0.0
    # Relative frequency of each object count from min_objects to max_objects (None: equally often); more
    # two-object scenes, say, give more relations to learn from.
    object_weights: tuple[float, ...] | None = None
    # Share of two-object scenes captioned in reading order: the upper (or left) object named first, so that
    # which object a caption starts with says where it is (see language.reading_order).
    reading_order: float = 0.0

    def validate(self) -> None:
        check(self.image_size >= 32, f"ShapesConfig.image_size must be >= 32, got {self.image_size}")
        check(
            1 <= self.min_objects <= self.max_objects <= 3,
            f"ShapesConfig.min_objects and max_objects need 1 <= min_objects <= max_objects <= 3, "
            f"got min_objects={self.min_objects}, max_objects={self.max_objects}",
        )
        check(self.seed >= 0, f"ShapesConfig.seed must be >= 0, got {self.seed}")
        check_object_weights(self.object_weights, self.min_objects, self.max_objects, "ShapesConfig")
        check(
            0.0 <= self.partial_captions <= 1.0,
            f"ShapesConfig.partial_captions is a share in [0, 1], got {self.partial_captions}",
        )
        check(
            0.0 <= self.reading_order <= 1.0,
            f"ShapesConfig.reading_order is a share in [0, 1], got {self.reading_order}",
        )


@dataclass(frozen=True)
class ShapeObject:
    """One object: ``shape`` in SHAPES, ``colour`` in COLOURS, ``size`` in SIZES, centre ``(x, y)`` in
    [0, 1] with y pointing down."""

    shape: str
    colour: str
    size: str
    x: float
    y: float


@dataclass
class Scene:
    """Objects in drawing order; ``relation`` (two objects only) is objects[0] relative to objects[1]."""

    objects: list[ShapeObject]
    relation: str | None = None


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise ConfigError(
            f"unknown split {split!r}{_suggest(split, SPLITS)}; valid splits: {', '.join(SPLITS)}"
        )
    return SPLITS.index(split)


def _place(rng: np.random.Generator, radii: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Centres (n, 2) that keep discs apart and inside the image, and the pair's relation if n == 2."""
    n = len(radii)
    lo, hi = _EDGE + radii, 1.0 - _EDGE - radii  # (n,)
    if n == 1:  # uniform over the 9 grid cells, then inside the cell away from its borders
        row, col = divmod(int(rng.integers(9)), 3)
        cells = np.array([col, row]) / 3.0
        lo1 = np.maximum(lo[0], cells + _CELL_MARGIN)
        hi1 = np.minimum(hi[0], cells + 1.0 / 3.0 - _CELL_MARGIN)
        return rng.uniform(lo1, hi1)[None], None
    for _ in range(1000):
        p = rng.uniform(lo[None, :, None], hi[None, :, None], size=(_CANDIDATES, n, 2))  # (K, n, 2)
        if n == 2:
            d = p[:, 0] - p[:, 1]  # (K, 2)
            adx, ady = np.abs(d[:, 0]), np.abs(d[:, 1])
            apart = np.hypot(d[:, 0], d[:, 1]) >= radii[0] + radii[1] + _GAP
            ok = apart & ((adx >= _DOMINANCE * ady) | (ady >= _DOMINANCE * adx))
        else:
            ok = np.ones(_CANDIDATES, dtype=bool)
            for i, j in ((0, 1), (0, 2), (1, 2)):
                d = p[:, i] - p[:, j]
                ok &= np.hypot(d[:, 0], d[:, 1]) >= radii[i] + radii[j] + _GAP
            ok &= np.diff(np.sort(p[:, :, 0], axis=1), axis=1).min(axis=1) >= _X_GAP
        if ok.any():
            k = int(np.flatnonzero(ok)[0])
            if n == 2:
                dx, dy = p[k, 0] - p[k, 1]
                rel = (
                    ("left of" if dx < 0 else "right of")
                    if abs(dx) > abs(dy)
                    else ("above" if dy < 0 else "below")
                )
                return p[k], rel
            return p[k], None
    raise RuntimeError(f"could not place {n} objects without overlap")  # unreachable with SIZES as set


def _sample(config: ShapesConfig, split_id: int, index: int) -> tuple[Scene, float]:
    """The scene of sample ``index`` and a uniform number in [0, 1) that picks its caption template."""
    if index < 0:
        raise ConfigError(f"sample index must be >= 0, got {index}")
    rng = np.random.default_rng([config.seed, split_id, index])
    if config.object_weights is None:
        n = int(rng.integers(config.min_objects, config.max_objects + 1))
    else:
        cumulative = np.cumsum(config.object_weights) / sum(config.object_weights)
        n = config.min_objects + int(np.searchsorted(cumulative, rng.random(), side="right"))
    pool = _SEEN if split_id != SPLITS.index("heldout") else _ALL
    combos = [pool[k] for k in rng.integers(len(pool), size=n)]
    if split_id == SPLITS.index("heldout"):  # one object, at random, is forced to a held-out pair
        combos[int(rng.integers(n))] = _HELD_OUT[int(rng.integers(len(_HELD_OUT)))]
    sizes = ["large" if b else "small" for b in rng.integers(2, size=n)]
    centres, relation = _place(rng, np.array([SIZES[s] for s in sizes]))
    objects = [
        ShapeObject(shape, colour, size, float(x), float(y))
        for (colour, shape), size, (x, y) in zip(combos, sizes, centres, strict=True)
    ]
    return Scene(objects, relation), float(rng.random())


def generate_scene(config: ShapesConfig, split: str, index: int) -> Scene:
    """Sample ``index`` of ``split``; a pure function of ``(config, split, index)``."""
    return _sample(config, _split_id(split), index)[0]


def position_word(x: float, y: float) -> str:
    """The cell of the 3×3 grid that holds the point ``(x, y)``, e.g. ``"top left"``."""
    col, row = min(int(x * 3), 2), min(int(y * 3), 2)
    return POSITIONS[3 * row + col]


def class_index(scene: Scene) -> int:
    """Label of a one-object scene in :func:`class_names` order."""
    if len(scene.objects) != 1:
        raise ConfigError(
            f"class_index needs a one-object scene, got {len(scene.objects)} objects; "
            "draw with ShapesConfig(min_objects=1, max_objects=1)"
        )
    o = scene.objects[0]
    return _ALL.index((o.colour, o.shape))


def _fits(objects: list[ShapeObject]) -> bool:
    """Whether every disc lies inside the image and apart from the others, as :func:`_place` keeps them."""
    for k, o in enumerate(objects):
        r = SIZES[o.size]
        if not (_EDGE + r <= o.x <= 1.0 - _EDGE - r and _EDGE + r <= o.y <= 1.0 - _EDGE - r):
            return False
        for p in objects[k + 1 :]:
            if np.hypot(o.x - p.x, o.y - p.y) < r + SIZES[p.size] + _GAP:
                return False
    return True


def attribute_swaps(scene: Scene) -> dict[str, Scene]:
    """The scene with two objects' colours, or two objects' shapes, traded: every such swap, keyed
    ``swap_colours(i,j)`` or ``swap_shapes(i,j)`` (``i`` < ``j`` index ``scene.objects``, where the two
    differ), less those that would show a held-out colour-shape pair in a scene without one."""
    objs, held = scene.objects, held_out_combinations()
    closed = not any((o.colour, o.shape) in held for o in objs)
    out: dict[str, Scene] = {}
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            for attribute in ("colour", "shape"):
                a, b = getattr(objs[i], attribute), getattr(objs[j], attribute)
                if a != b:
                    new = list(objs)
                    new[i] = dataclasses.replace(objs[i], **{attribute: b})
                    new[j] = dataclasses.replace(objs[j], **{attribute: a})
                    if not closed or not any((o.colour, o.shape) in held for o in new):
                        out[f"swap_{attribute}s({i},{j})"] = Scene(new, scene.relation)
    return out


def lone_mirrors(scene: Scene) -> dict[str, Scene]:
    """A lone object in its mirrored place, left for right (``mirror_x``) and top for bottom (``mirror_y``);
    none for scenes of more objects."""
    if len(scene.objects) != 1:
        return {}
    o = scene.objects[0]
    return {
        "mirror_x": Scene([dataclasses.replace(o, x=1.0 - o.x)]),
        "mirror_y": Scene([dataclasses.replace(o, y=1.0 - o.y)]),
    }


def twin_scenes(scene: Scene) -> dict[str, Scene]:
    """Scenes that hold what ``scene`` holds, bound the other way: two objects' colours, shapes or places
    traded, a lone object in its mirrored place.

    Set beside its twin in a batch, an image is the hard negative of the other's caption, one that differs
    only in what goes where: the text->image direction otherwise meets few near misses among random
    scenes (:class:`mumo.data.sources.TwinScenes`). Keys: ``swap_colours(i,j)``, ``swap_shapes(i,j)``
    (``i`` < ``j`` index ``scene.objects``, where the two differ), ``swap_places(i,j)`` (two objects
    trade centres; for three, neighbours from left to right only, where both still fit), ``mirror_x``,
    ``mirror_y`` (a lone object). A trade that would show a held-out colour-shape pair in a scene without
    one is left out. Some twins read as the scene itself in a caption that omits what changed.
    """
    objs = scene.objects
    out = attribute_swaps(scene)
    order = sorted(range(len(objs)), key=lambda k: objs[k].x)  # neighbours from left to right
    for i, j in zip(order, order[1:], strict=False):
        new = list(objs)
        new[i] = dataclasses.replace(objs[i], x=objs[j].x, y=objs[j].y)
        new[j] = dataclasses.replace(objs[j], x=objs[i].x, y=objs[i].y)
        if _fits(new):
            relation = None if scene.relation is None else _OPPOSITE[scene.relation]
            out[f"swap_places({min(i, j)},{max(i, j)})"] = Scene(new, relation)
    return out | lone_mirrors(scene)
