"""A built-in compositional data set in the spirit of ShapeWorld and CLEVR: coloured shapes and captions.

Each scene holds 1–3 objects, each a shape (6), colour (6), size (small / large) and position, on a dark
background. Captions describe every object: its position on a 3×3 grid when alone, the spatial relation
of the first to the second in a pair, the left-to-right order in a triple. Sample ``i`` of a split depends
only on ``(seed, split, i)``, so any worker in any order draws the same pixels and text.

Six colour–shape combinations (:func:`held_out_combinations`) never appear in the train, val and test
splits; every scene of the ``heldout`` split has at least one, to measure compositional generalisation.
:func:`hard_negatives` gives, per scene, captions that differ from :func:`canonical_caption` in only the
words that make them false (swapped colours, reversed relation, one changed attribute).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mumo._config import Config, _suggest, check
from mumo.data import _render
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

_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_REL_PHRASE = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
_WHERE = {  # position word -> phrase
    **{p: f"in the {p}" for p in POSITIONS},
    **{"top": "at the top", "bottom": "at the bottom", "left": "on the left", "right": "on the right"},
}
_ALT_SIZE = {"small": "little", "large": "big"}
_PRED_SIZE = {"small": "small", "large": "big"}
_ONE = (
    "a {size} {colour} {shape} {where}",
    "a {colour} {shape} that is {pred}, {where}",
    "there is a {size} {colour} {shape} {where}",
    "{where} there is a {alt} {colour} {shape}",
)
_TWO = ("{a} {rel} {b}", "{b} is {inv} {a}", "there is {a} {rel} {b}", "{a_alt} {rel} {b_alt}")
_THREE = (
    "{a}, {b} and {c}, from left to right",
    "from left to right: {a}, {b} and {c}",
    "{a} on the left, {b} in the middle and {c} on the right",
    "from left to right there are {a_alt}, {b_alt} and {c_alt}",
)
# Placement, in units of the image side. Gaps leave a couple of pixels between discs at 64 px; a pair's
# offset along its relation's axis is at least twice the other offset, so the relation is unambiguous.
_EDGE = 0.02  # least distance from a disc to the image border
_GAP = 0.03  # least distance between two discs
_CELL_MARGIN = 0.03  # a lone object's centre keeps this far from the 3×3 grid lines
_DOMINANCE = 2.0
_X_GAP = 0.1  # least x distance between neighbours in a triple, so "from left to right" is clear
_CANDIDATES = 32  # positions drawn per rejection round, vectorised


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


@dataclass
class ShapesConfig(Config):
    """How scenes are drawn."""

    image_size: int = 64  # side of the square RGB image in pixels
    min_objects: int = 1  # fewest objects per scene
    max_objects: int = 3  # most objects per scene (at most 3)
    seed: int = 0  # with (split, index) fixes every sample

    def validate(self) -> None:
        check(self.image_size >= 32, f"ShapesConfig.image_size must be >= 32, got {self.image_size}")
        check(
            1 <= self.min_objects <= self.max_objects <= 3,
            f"ShapesConfig.min_objects and max_objects need 1 <= min_objects <= max_objects <= 3, "
            f"got min_objects={self.min_objects}, max_objects={self.max_objects}",
        )
        check(self.seed >= 0, f"ShapesConfig.seed must be >= 0, got {self.seed}")


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
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
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


def _captioned(config: ShapesConfig, split_id: int, index: int) -> tuple[Scene, list[str], str]:
    """Scene ``index``, all its captions, and the one a sample of it is given (its template drawn by
    :func:`_sample`)."""
    scene, u = _sample(config, split_id, index)
    texts = captions(scene)
    return scene, texts, texts[int(u * len(texts))]


def scene_and_caption(config: ShapesConfig, split: str, index: int) -> tuple[Scene, str]:
    """Sample ``index`` of ``split`` and its caption, as :class:`ShapesDataset` gives them."""
    scene, _, caption = _captioned(config, _split_id(split), index)
    return scene, caption


def generate_scene(config: ShapesConfig, split: str, index: int) -> Scene:
    """Sample ``index`` of ``split``; a pure function of ``(config, split, index)``."""
    return _sample(config, _split_id(split), index)[0]


def render(scene: Scene, image_size: int = 64) -> np.ndarray:
    """Draw a scene; returns (H, W, 3) uint8 with H = W = ``image_size``."""
    canvas = np.empty((image_size, image_size, 3), dtype=np.float32)
    canvas[:] = BACKGROUND
    for o in scene.objects:
        rgb = np.asarray(COLOURS[o.colour], dtype=np.float32)
        _render.paint(canvas, o.shape, rgb, o.x * image_size, o.y * image_size, SIZES[o.size] * image_size)
    return (canvas + 0.5).astype(np.uint8)


def position_word(x: float, y: float) -> str:
    """The cell of the 3×3 grid that holds the point ``(x, y)``, e.g. ``"top left"``."""
    col, row = min(int(x * 3), 2), min(int(y * 3), 2)
    return POSITIONS[3 * row + col]


def _phrase(o: ShapeObject, sizes: dict[str, str] | None = None) -> str:
    return f"a {(sizes or {}).get(o.size, o.size)} {o.colour} {o.shape}"


def _fill(scene: Scene, templates: tuple[str, ...]) -> list[str]:
    objs = scene.objects
    if len(objs) == 1:
        o = objs[0]
        where = _WHERE[position_word(o.x, o.y)]
        words = dict(size=o.size, colour=o.colour, shape=o.shape, where=where)
        return [t.format(**words, pred=_PRED_SIZE[o.size], alt=_ALT_SIZE[o.size]) for t in templates]
    if len(objs) == 2:
        if scene.relation not in _OPPOSITE:
            raise ConfigError(f"a two-object scene needs a relation in {RELATIONS}, got {scene.relation!r}")
        a, b = objs
        words = dict(a=_phrase(a), b=_phrase(b), a_alt=_phrase(a, _ALT_SIZE), b_alt=_phrase(b, _ALT_SIZE))
        rel, inv = _REL_PHRASE[scene.relation], _REL_PHRASE[_OPPOSITE[scene.relation]]
        return [t.format(**words, rel=rel, inv=inv) for t in templates]
    if len(objs) == 3:
        a, b, c = sorted(objs, key=lambda o: o.x)
        words = dict(a=_phrase(a), b=_phrase(b), c=_phrase(c))
        alt = dict(a_alt=_phrase(a, _ALT_SIZE), b_alt=_phrase(b, _ALT_SIZE), c_alt=_phrase(c, _ALT_SIZE))
        return [t.format(**words, **alt) for t in templates]
    raise ConfigError(f"scenes hold 1 to 3 objects, got {len(objs)}")


def captions(scene: Scene) -> list[str]:
    """Every template's caption of the scene (4 each for 1, 2 and 3 objects); [0] is canonical."""
    return _fill(scene, {1: _ONE, 2: _TWO, 3: _THREE}.get(len(scene.objects), ()))


def canonical_caption(scene: Scene) -> str:
    """Template 0: the positive that :func:`hard_negatives` edits."""
    return captions(scene)[0]


def hard_negatives(scene: Scene, template: int = 0) -> dict[str, str]:
    """False captions that differ from the scene's caption of ``template`` (0: :func:`canonical_caption`)
    only in the words that make them false.

    Keys, for each that applies: ``swap_colours`` (two objects of different colours swap them),
    ``reverse_relation`` (two objects), ``change_colour``, ``change_shape``, ``change_size`` (one object,
    one attribute). The choice of object and new value is seeded by the scene's canonical caption, so it
    is deterministic. In a scene without held-out pairs, edits avoid creating one where possible, so a
    model cannot reject a negative merely for showing an unseen pair. The edits do not depend on
    ``template``; training uses the template of each sample's own caption, so that wording never tells a
    negative from a positive.
    """
    positive = canonical_caption(scene)
    rng = np.random.default_rng(zlib.crc32(positive.encode()))
    objs, held = scene.objects, held_out_combinations()
    closed = not any((o.colour, o.shape) in held for o in objs)

    def allowed(*pairs: tuple[str, str]) -> bool:
        return not closed or not any(p in held for p in pairs)

    def caption_of(s: Scene) -> str:
        return captions(s)[template]

    def edit(i: int, **change: str) -> str:
        new = list(objs)
        new[i] = dataclasses.replace(objs[i], **change)
        return caption_of(Scene(new, scene.relation))

    def pick(options: list) -> Any:
        return options[int(rng.integers(len(options)))]

    out: dict[str, str] = {}
    pairs = [
        (i, j) for i in range(len(objs)) for j in range(i + 1, len(objs)) if objs[i].colour != objs[j].colour
    ]
    if pairs:
        good = [
            (i, j)
            for i, j in pairs
            if allowed((objs[j].colour, objs[i].shape), (objs[i].colour, objs[j].shape))
        ]
        i, j = pick(good or pairs)
        new = list(objs)
        new[i] = dataclasses.replace(objs[i], colour=objs[j].colour)
        new[j] = dataclasses.replace(objs[j], colour=objs[i].colour)
        out["swap_colours"] = caption_of(Scene(new, scene.relation))
    if scene.relation is not None:
        out["reverse_relation"] = caption_of(Scene(list(objs), _OPPOSITE[scene.relation]))
    i = int(rng.integers(len(objs)))
    colours = [c for c in COLOURS if c != objs[i].colour]
    out["change_colour"] = edit(
        i, colour=pick([c for c in colours if allowed((c, objs[i].shape))] or colours)
    )
    i = int(rng.integers(len(objs)))
    shapes = [s for s in SHAPES if s != objs[i].shape]
    out["change_shape"] = edit(i, shape=pick([s for s in shapes if allowed((objs[i].colour, s))] or shapes))
    i = int(rng.integers(len(objs)))
    out["change_size"] = edit(i, size="small" if objs[i].size == "large" else "large")
    return out


QUESTION_KINDS = ("colour", "shape", "size", "count", "position", "relation", "where")
NUMBER_WORDS = ("zero", "one", "two", "three")


@dataclass(frozen=True)
class Question:
    """A question about a scene and its short answer (one word, or a grid cell such as "top left");
    ``kind`` is one of ``QUESTION_KINDS``."""

    kind: str
    question: str
    answer: str


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _reference(objs: list[ShapeObject], i: int, attributes: tuple[str, ...]) -> str | None:
    """The shortest phrase naming object ``i`` alone among ``objs`` from ``attributes`` (in the order
    size, colour, shape), such as "star", "red star" or "small red star"; None if none is unique."""
    order = ("size", "colour", "shape")
    for n in range(1, len(attributes) + 1):
        for chosen in _subsets(attributes, n):
            keys = [a for a in order if a in chosen]
            same = [o for o in objs if all(getattr(o, a) == getattr(objs[i], a) for a in keys)]
            if len(same) == 1:
                words = [getattr(objs[i], a) for a in keys]
                return " ".join(words) + ("" if "shape" in keys else " object")
    return None


def _subsets(items: tuple[str, ...], n: int) -> list[tuple[str, ...]]:
    import itertools

    # The shape first: "the star" reads better than "the small object".
    ranked = sorted(items, key=lambda a: {"shape": 0, "colour": 1, "size": 2}[a])
    return list(itertools.combinations(ranked, n))


def _clear_of_grid_lines(o: ShapeObject) -> bool:
    # A centre near a line of the 3×3 grid would make "where in the picture" a guess between two cells;
    # a lone object is always placed at least this far inside its cell.
    return all(abs(v - line) >= _CELL_MARGIN for v in (o.x, o.y) for line in (1 / 3, 2 / 3))


def questions(scene: Scene) -> list[Question]:
    """Every question the scene answers unambiguously, in a fixed order (VQA as generation).

    colour: "what colour is the star?"; shape: "what shape is the red object?"; size: "what size is the
    blue circle?" (small / large); count: "how many circles are there?" for every shape (zero to three);
    position: "where in the picture is the star?" (its cell of the 3×3 grid, as the captions of a lone
    object say), asked only of an object whose centre keeps clear of the grid lines;
    relation: "is the square to the left of the circle?" (yes / no) for each ordered pair, asked with the
    true relation and its opposite; where: "where is the square relative to the circle?" (left, right,
    above or below), the same knowledge asked directly. An object is named by its shortest unique
    description that leaves out the asked attribute; an object no description singles out is not asked
    about.
    """
    objs, out = scene.objects, []
    for i, o in enumerate(objs):
        ref = _reference(objs, i, ("shape", "size"))
        if ref is not None:
            out.append(Question("colour", f"what colour is the {ref}?", o.colour))
        ref = _reference(objs, i, ("colour", "size"))
        if ref is not None:
            out.append(Question("shape", f"what shape is the {ref}?", o.shape))
        ref = _reference(objs, i, ("shape", "colour"))
        if ref is not None:
            out.append(Question("size", f"what size is the {ref}?", o.size))
    refs = [_reference(objs, i, ("shape", "colour", "size")) for i in range(len(objs))]  # full names
    for o, ref in zip(objs, refs, strict=True):
        if ref is not None and _clear_of_grid_lines(o):
            out.append(Question("position", f"where in the picture is the {ref}?", position_word(o.x, o.y)))
    for shape in SHAPES:
        n = sum(o.shape == shape for o in objs)
        out.append(Question("count", f"how many {_plural(shape)} are there?", NUMBER_WORDS[n]))
    for i, j in ((i, j) for i in range(len(objs)) for j in range(len(objs)) if i != j):
        if refs[i] is None or refs[j] is None:
            continue
        if len(objs) == 2:  # the scene's relation holds between objects 0 and 1, clearly on one axis
            true = scene.relation if i == 0 else _OPPOSITE[scene.relation]
        else:  # three objects are spread out from left to right
            true = "left of" if objs[i].x < objs[j].x else "right of"
        for rel in (true, _OPPOSITE[true]):
            text = f"is the {refs[i]} {_REL_PHRASE[rel]} the {refs[j]}?"
            out.append(Question("relation", text, "yes" if rel == true else "no"))
        where = f"where is the {refs[i]} relative to the {refs[j]}?"
        out.append(Question("where", where, true.split()[0]))  # left, right, above or below
    return out


def pick_question(scene: Scene, u: float, v: float) -> Question:
    """One question for training: a kind uniformly among those the scene has (``u`` in [0, 1)), then a
    question of that kind uniformly (``v``), so that rare kinds are not drowned by the many count ones."""
    qs = questions(scene)
    kinds = [k for k in QUESTION_KINDS if any(q.kind == k for q in qs)]
    of_kind = [q for q in qs if q.kind == kinds[int(u * len(kinds))]]
    return of_kind[int(v * len(of_kind))]


def class_index(scene: Scene) -> int:
    """Label of a one-object scene in :func:`class_names` order."""
    if len(scene.objects) != 1:
        raise ConfigError(
            f"class_index needs a one-object scene, got {len(scene.objects)} objects; "
            "draw with ShapesConfig(min_objects=1, max_objects=1)"
        )
    o = scene.objects[0]
    return _ALL.index((o.colour, o.shape))


class ShapesDataset(torch.utils.data.Dataset):
    """``size`` samples of one split, drawn on the fly.

    Each item is a dict: ``image`` (3, H, W) float in [0, 1] (or ``transform(PIL image)``), ``caption``
    (one template, chosen by ``(seed, split, index)``), ``scene`` (:class:`Scene`) and ``index``. The
    default collate cannot batch ``scene``; drop it or collate it as a list. With ``questions``, the
    caption is a question and its answer (:func:`pick_question`), ``prompt`` the question alone and
    ``kind`` its kind.
    """

    def __init__(
        self,
        split: str,
        size: int,
        config: ShapesConfig | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        questions: bool = False,
    ) -> None:
        self.split, self.split_id = split, _split_id(split)
        self.questions = questions
        if size < 0:
            raise ConfigError(f"ShapesDataset size must be >= 0, got {size}")
        self.size = size
        self.config = config or ShapesConfig()
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a ShapesDataset of size {self.size}")
        scene, _, caption = _captioned(self.config, self.split_id, index)
        pixels = render(scene, self.config.image_size)  # (H, W, 3) uint8
        if self.transform is not None:
            image = self.transform(Image.fromarray(pixels))
        else:
            image = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
        item = {"image": image, "caption": caption, "scene": scene, "index": index}
        if self.questions:  # VQA as generation: the text is "question answer", the question its prompt
            rng = np.random.default_rng([self.config.seed, self.split_id, index, 1])
            q = pick_question(scene, float(rng.random()), float(rng.random()))
            item.update(caption=f"{q.question} {q.answer}", prompt=q.question, kind=q.kind)
        return item


def write_shapes(
    out_dir: str | Path, n: int, split: str = "train", config: ShapesConfig | None = None
) -> Path:
    """Write ``n`` samples as ``images/000000.png …`` plus ``captions.jsonl`` (one JSON object per line:
    image, caption, captions, objects, relation, negatives). Returns ``out_dir``."""
    from rich.progress import track

    config, split_id, out = config or ShapesConfig(), _split_id(split), Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(out / "captions.jsonl", "w", encoding="utf-8") as f:
        for i in track(range(n), description=f"shapes {split}", disable=n < 2000):
            scene, texts, caption = _captioned(config, split_id, i)
            name = f"images/{i:06d}.png"
            Image.fromarray(render(scene, config.image_size)).save(out / name)
            record = {
                "image": name,
                "caption": caption,
                "captions": texts,
                "objects": [dataclasses.asdict(o) for o in scene.objects],
                "relation": scene.relation,
                "negatives": hard_negatives(scene),
            }
            f.write(json.dumps(record) + "\n")
    return out


def write_captions(
    path: str | Path, n: int, split: str = "train", config: ShapesConfig | None = None
) -> Path:
    """Write the captions of ``n`` samples of ``split``, one per line and no images: a text corpus for
    pretraining a language model on the built-in data's text alone. Returns ``path``."""
    config, split_id, path = config or ShapesConfig(), _split_id(split), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(_captioned(config, split_id, i)[2] + "\n")
    return path
