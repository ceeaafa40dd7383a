"""Questions about scenes of the built-in shapes set, with their one-word answers: VQA as generation.

Every question is answered by the scene alone and names its object by the shortest description that
singles it out, so a model that sees the image can always answer it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from mumo.data.shapes.language import _REL_PHRASE
from mumo.data.shapes.scene import _CELL_MARGIN, _OPPOSITE, SHAPES, Scene, ShapeObject, position_word
from mumo.errors import ConfigError

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


def _is_weight(w: object) -> bool:
    return isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0


def check_question_weights(weights: dict[str, float] | None, where: str) -> None:
    """Raise :class:`ConfigError` unless ``weights`` is None or maps question kinds to weights >= 0."""
    if weights is None:
        return
    unknown = sorted(set(weights) - set(QUESTION_KINDS))
    if unknown:
        kinds = ", ".join(QUESTION_KINDS)
        raise ConfigError(f"{where}: unknown question kind(s) {unknown}; the kinds are {kinds}")
    bad = {k: w for k, w in weights.items() if not _is_weight(w)}
    if bad:
        raise ConfigError(f"{where}: weights must be numbers >= 0, got {bad}")
    if all(weights.get(k, 1.0) == 0 for k in QUESTION_KINDS):
        raise ConfigError(f"{where}: every question kind has weight 0; leave at least one above 0")


def pick_question(scene: Scene, u: float, v: float, weights: dict[str, float] | None = None) -> Question:
    """One question for training: a kind among those the scene has (``u`` in [0, 1)), then a question of
    that kind uniformly (``v``), so that rare kinds are not drowned by the many count ones.

    Kinds are drawn in proportion to ``weights`` (a kind left out weighs 1; None: all equally); a scene
    whose kinds all weigh 0 falls back to drawing them equally, so every sample still has a question."""
    qs = questions(scene)
    kinds = [k for k in QUESTION_KINDS if any(q.kind == k for q in qs)]
    w = [(weights or {}).get(k, 1.0) for k in kinds]
    if sum(w) <= 0:
        w = [1.0] * len(kinds)
    target, acc, kind = u * sum(w), 0.0, kinds[-1]
    for k, wk in zip(kinds, w, strict=True):
        acc += wk
        if target < acc:
            kind = k
            break
    of_kind = [q for q in qs if q.kind == kind]
    return of_kind[int(v * len(of_kind))]
