"""The caption grammar of the built-in shapes set: captions of a scene, hard negatives, and the parser that
reads a caption (say, a generated one) back into the objects it names.

A scene has four caption templates for each of 1, 2 and 3 objects: a lone object with its position on the
3×3 grid, the relation of the first of two objects to the second, three objects from left to right.
:func:`hard_negatives` gives, per scene, captions that differ from :func:`canonical_caption` in only the
words that make them false (swapped colours, reversed relation, one changed attribute);
:func:`binding_negatives` every false caption with the scene's objects bound to the wrong attributes or
places; :func:`place_negatives` the objects moved to places next to their own.
:func:`parse_caption` inverts every template, so :func:`scene_attributes` of a scene can be compared with
what a caption says (:func:`mumo.eval.captioning.attribute_accuracy`).
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from mumo.data.shapes.scene import (
    _OPPOSITE,
    COLOURS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    Scene,
    ShapeObject,
    ShapesConfig,
    _sample,
    _split_id,
    attribute_swaps,
    held_out_combinations,
    lone_mirrors,
    position_word,
)
from mumo.errors import ConfigError

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
# One object named with fewer attributes, what a zero-shot prompt ("a red circle") says: true, but not all.
_ONE_PARTIAL = ("a {colour} {shape}", "a {size} {colour} {shape}", "a {colour} {shape} {where}")
_TWO = ("{a} {rel} {b}", "{b} is {inv} {a}", "there is {a} {rel} {b}", "{a_alt} {rel} {b_alt}")
_THREE = (
    "{a}, {b} and {c}, from left to right",
    "from left to right: {a}, {b} and {c}",
    "{a} on the left, {b} in the middle and {c} on the right",
    "from left to right there are {a_alt}, {b_alt} and {c_alt}",
)


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


def partial_captions(scene: Scene) -> list[str]:
    """A one-object scene's captions that leave out its size, its position or both (none for more
    objects); training with some (``ShapesConfig.partial_captions``) teaches a text tower that an attribute
    a caption does not name may be anything, which zero-shot prompts rely on."""
    return _fill(scene, _ONE_PARTIAL) if len(scene.objects) == 1 else []


def class_prompt(colour: str, shape: str) -> str:
    """The position-free prompt of a colour x shape class, "a red circle": the wording of the first partial
    caption, so that a prompt trained against (``data.class_prompts``) reads as a caption the data gives."""
    return _ONE_PARTIAL[0].format(colour=colour, shape=shape)


def in_reading_order(scene: Scene) -> Scene:
    """The same scene with a pair's objects listed in reading order: the upper one first when one is above
    the other, the left one first when they are side by side (its relation then "above" or "left of").
    Other scenes come back as they are; the objects do not overlap, so the image is the same."""
    if len(scene.objects) != 2 or scene.relation not in ("below", "right of"):
        return scene
    a, b = scene.objects
    return Scene([b, a], _OPPOSITE[scene.relation])


def reading_order(scene: Scene) -> list[str]:
    """A two-object scene's captions that name the upper (or left) object first: the templates of
    :func:`captions` that start with ``objects[0]``, of :func:`in_reading_order` (none for other scenes).

    Why: a captioner must say "above" or "below" after naming either object, a choice that depends on which
    it named and where both are, and nothing rewards learning either half alone. Captions of three objects
    name them from left to right, which teaches where one object is against another along x alone: with
    pairs in random order only, CoCa's captions got pairs side by side right 99.6-100 % of the time and
    pairs one above the other 58-90 % (three seeds; README, Generation). Reading order makes the choice
    of the first object itself a comparison of the two."""
    if len(scene.objects) != 2:
        return []
    texts = captions(in_reading_order(scene))
    return [text for text, t in zip(texts, _TWO, strict=True) if t.find("{a") < t.find("{b")]


# Every template a sample can be captioned in, by object count: those of captions(), then partial_captions().
_WORDINGS = {1: _ONE + _ONE_PARTIAL, 2: _TWO, 3: _THREE}


def wordings(scene: Scene) -> list[str]:
    """Every caption a sample of the scene can get: :func:`captions`, then :func:`partial_captions`. A
    sample's index in this list is the ``template`` of :func:`hard_negatives`."""
    return _fill(scene, _WORDINGS.get(len(scene.objects), ()))


def wording(scene: Scene, template: int) -> str:
    """``wordings(scene)[template]``, filling that one template only: the hard negatives word every edit of
    a scene in one template, and filling all of them for each would take a third of a batch's data time."""
    templates = _WORDINGS.get(len(scene.objects), ())
    return _fill(scene, (templates[template],) if templates else ())[0]  # _fill refuses other counts


def canonical_caption(scene: Scene) -> str:
    """Template 0: the positive that :func:`hard_negatives` edits."""
    return wording(scene, 0)


def hard_negatives(scene: Scene, template: int = 0) -> dict[str, str]:
    """False captions that differ from the scene's caption of ``template`` (0: :func:`canonical_caption`;
    an index into :func:`wordings`) only in the words that make them false.

    Keys, for each that applies: ``swap_colours`` (two objects of different colours swap them),
    ``reverse_relation`` (two objects), ``change_colour``, ``change_shape``, ``change_size`` (one object,
    one attribute). The choice of object and new value is seeded by the scene's canonical caption, so it
    is deterministic. In a scene without held-out pairs, edits avoid creating one where possible, so a
    model cannot reject a negative merely for showing an unseen pair. The edits do not depend on
    ``template``; training uses the template of each sample's own caption, so that wording never tells a
    negative from a positive. A partial caption leaves out the edits it cannot show (no ``change_size``
    for a caption without a size).
    """
    positive = canonical_caption(scene)
    rng = np.random.default_rng(zlib.crc32(positive.encode()))
    objs, held = scene.objects, held_out_combinations()
    closed = not any((o.colour, o.shape) in held for o in objs)

    def allowed(*pairs: tuple[str, str]) -> bool:
        return not closed or not any(p in held for p in pairs)

    def caption_of(s: Scene) -> str:
        return wording(s, template)

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
    own = caption_of(scene)
    return {kind: text for kind, text in out.items() if text != own}


def binding_negatives(scene: Scene, template: int = 0) -> dict[str, str]:
    """False captions that name the scene's objects bound to the wrong places or attributes: every swap of
    two objects' colours, every swap of two objects' shapes, three objects in reverse order, a lone object
    mirrored left to right or top to bottom.

    A model that sees only which attributes are present (a bag of words, a bag of features) cannot reject
    the swaps; one that mixes up left and right cannot reject the mirrors. :func:`hard_negatives` holds one
    swap per scene and no mirror. Keys: ``swap_colours(i,j)``, ``swap_shapes(i,j)`` (``i`` < ``j`` index
    ``scene.objects``), ``reverse_order``, ``mirror_x``, ``mirror_y`` (where the position word changes:
    none for a caption without one, no ``mirror_x`` in the centre column). Worded with
    ``template`` (an index into :func:`wordings`); edits that would show a held-out colour-shape pair in a
    scene without one are left out, and so are captions equal to the scene's own.
    """
    edits = attribute_swaps(scene) | lone_mirrors(scene)
    if len(scene.objects) == 3:  # "from left to right" read backwards: mirror every object's x
        edits["reverse_order"] = Scene([dataclasses.replace(o, x=1.0 - o.x) for o in scene.objects])
    out = {kind: wording(edited, template) for kind, edited in edits.items()}
    own = wording(scene, template)
    return {kind: text for kind, text in out.items() if text != own}


def place_negatives(scene: Scene, template: int = 0) -> dict[str, str]:
    """False captions that put the scene's objects in places next to their own: a lone object in the
    neighbouring cell nearest to it, across the grid line closest to its centre; two neighbours of three
    objects (from left to right) trading places.

    :func:`binding_negatives` mirrors a lone object and reads three backwards. The text->image misses left
    after it are mostly these near places: "on the left" matched to an object in the bottom left, a few
    pixels past the grid line, and three objects with two neighbours swapped. Keys: ``nearest_cell``,
    ``swap_places(i,i+1)`` (``i`` counts the objects from the left). Worded with ``template``; none for a
    caption without a position, and none equal to the scene's own.
    """
    objs = scene.objects
    out: dict[str, str] = {}
    if len(objs) == 1:
        o = objs[0]
        moves = []  # (distance to the grid line, the object in the cell across it)
        for axis, v in (("x", o.x), ("y", o.y)):
            cell = min(int(v * 3), 2)
            if cell > 0:
                moves.append((v - cell / 3, dataclasses.replace(o, **{axis: (cell - 0.5) / 3})))
            if cell < 2:
                moves.append(((cell + 1) / 3 - v, dataclasses.replace(o, **{axis: (cell + 1.5) / 3})))
        out["nearest_cell"] = wording(Scene([min(moves, key=lambda m: m[0])[1]], None), template)
    if len(objs) == 3:
        order = sorted(range(3), key=lambda i: objs[i].x)
        for k in range(2):
            i, j = order[k], order[k + 1]
            new = list(objs)
            new[i], new[j] = (
                dataclasses.replace(objs[i], x=objs[j].x),
                dataclasses.replace(objs[j], x=objs[i].x),
            )
            out[f"swap_places({k},{k + 1})"] = wording(Scene(new, scene.relation), template)
    own = wording(scene, template)
    return {kind: text for kind, text in out.items() if text != own}


def _captioned(config: ShapesConfig, split_id: int, index: int) -> tuple[Scene, list[str], str]:
    """Scene ``index``, all its captions, and the one a sample of it is given (its template drawn by
    :func:`~mumo.data.shapes.scene._sample`)."""
    scene, u = _sample(config, split_id, index)
    n = len(scene.objects)
    # The one uniform draw picks partial (one object) or reading order (two) or neither, then the template:
    # a share of 0 draws as before.
    p = config.partial_captions if n == 1 else config.reading_order if n == 2 else 0.0
    if u < p:
        if n == 2:
            scene = in_reading_order(scene)
        special = partial_captions(scene) if n == 1 else reading_order(scene)
        return scene, captions(scene), special[int(u / p * len(special))]
    texts = captions(scene)
    return scene, texts, texts[int((u - p) / (1.0 - p) * len(texts))]


def scene_and_caption(config: ShapesConfig, split: str, index: int) -> tuple[Scene, str]:
    """Sample ``index`` of ``split`` and its caption, as :class:`~mumo.data.shapes.ShapesDataset` gives
    them."""
    scene, _, caption = _captioned(config, _split_id(split), index)
    return scene, caption


# --- reading captions back into objects --------------------------------------------------------------


@dataclass
class ParsedCaption:
    """What a caption of the built-in data says, in the scene's canonical order: one object alone with its
    grid position, two with the relation of the first to the second, three from left to right."""

    objects: list[tuple[str, str, str]]  # (size, colour, shape), size as 'small' / 'large'
    relation: str | None = None  # two objects: a word of RELATIONS, of objects[0] relative to objects[1]
    position: str | None = None  # one object: a word of POSITIONS

    def readings(self) -> list[list[str]]:
        """The attribute lists the caption can mean, each in :func:`scene_attributes` order: one, or two
        for a pair, since "X above Y" and "Y below X" say the same."""
        objs = self.objects
        if len(objs) == 1:
            return [[*objs[0], self.position or ""]]
        if len(objs) == 2:
            rel = self.relation or ""
            return [[*objs[0], *objs[1], rel], [*objs[1], *objs[0], _OPPOSITE.get(rel, "")]]
        return [[a for o in objs for a in o]]


_SIZE_WORD = {"small": "small", "large": "large", "little": "small", "big": "large"}
_OBJ = r"a (?:small|large|little|big) (?:{c}) (?:{s})".format(c="|".join(COLOURS), s="|".join(SHAPES))
_OBJ_RE = re.compile(
    r"a (small|large|little|big) ({c}) ({s})".format(c="|".join(COLOURS), s="|".join(SHAPES))
)
_WHERE_WORD = {phrase: pos for pos, phrase in _WHERE.items()}
_REL_WORD = {phrase: rel for rel, phrase in _REL_PHRASE.items()}


def _template_regex(template: str) -> re.Pattern[str]:
    groups = {
        "size": r"(?P<size>small|large)",
        "alt": r"(?P<alt>little|big)",
        "pred": r"(?P<pred>small|big)",
        "colour": "(?P<colour>{})".format("|".join(COLOURS)),
        "shape": "(?P<shape>{})".format("|".join(SHAPES)),
        "where": "(?P<where>{})".format("|".join(re.escape(w) for w in _WHERE.values())),
        "rel": "(?P<rel>{})".format("|".join(re.escape(r) for r in _REL_PHRASE.values())),
        "inv": "(?P<inv>{})".format("|".join(re.escape(r) for r in _REL_PHRASE.values())),
        **{k: f"(?P<{k}>{_OBJ})" for k in ("a", "b", "c", "a_alt", "b_alt", "c_alt")},
    }
    pattern = re.escape(template)
    for key, group in groups.items():
        pattern = pattern.replace(re.escape("{" + key + "}"), group)
    return re.compile(pattern)


# (number of objects, regex) of every template, in caption order.
_TEMPLATES = [(1, _template_regex(t)) for t in _ONE] + [(2, _template_regex(t)) for t in _TWO]
_TEMPLATES += [(3, _template_regex(t)) for t in _THREE]


def _object(phrase: str) -> tuple[str, str, str]:
    size, colour, shape = _OBJ_RE.fullmatch(phrase).groups()  # type: ignore[union-attr]
    return _SIZE_WORD[size], colour, shape


def parse_caption(text: str) -> ParsedCaption | None:
    """Read a caption in any of the built-in templates back into objects; None if it fits none.

    Case and runs of whitespace do not matter; anything else must match a template word for word, so a
    generated caption that drifts from the grammar is None rather than half read.
    """
    text = " ".join(text.strip().lower().split())
    for n, regex in _TEMPLATES:
        m = regex.fullmatch(text)
        if m is None:
            continue
        g = m.groupdict()
        if n == 1:
            size = _SIZE_WORD[g.get("size") or g.get("alt") or {"small": "small", "big": "large"}[g["pred"]]]
            return ParsedCaption([(size, g["colour"], g["shape"])], position=_WHERE_WORD[g["where"]])
        objs = [_object(g.get(k) or g[f"{k}_alt"]) for k in ("a", "b", "c")[:n]]
        if n == 2:
            rel = _REL_WORD[g["rel"]] if g.get("rel") else _OPPOSITE[_REL_WORD[g["inv"]]]
            return ParsedCaption(objs, relation=rel)
        return ParsedCaption(objs)
    return None


def scene_attributes(scene: Scene) -> list[str]:
    """The attributes a caption must get right, in canonical order: size, colour and shape of every object,
    plus the grid position of a lone object or the relation of a pair. Three objects go from left to
    right, as their captions name them."""
    objs = scene.objects if len(scene.objects) < 3 else sorted(scene.objects, key=lambda o: o.x)
    out = [a for o in objs for a in (o.size, o.colour, o.shape)]
    if len(objs) == 1:
        out.append(position_word(objs[0].x, objs[0].y))
    elif len(objs) == 2:
        out.append(scene.relation or "")
    return out


def scene_key(scene: Scene) -> tuple[str, ...]:
    """What every caption of the scene says, as one key: two scenes with the same key get the same
    captions (up to which of a pair is named first), so no caption can tell their images apart."""
    attributes = scene_attributes(scene)
    if len(scene.objects) != 2:
        return tuple(attributes)
    a, b, relation = attributes[:3], attributes[3:6], attributes[6]
    return min(tuple(attributes), (*b, *a, _OPPOSITE.get(relation, relation)))


def attribute_names(n_objects: int) -> list[str]:
    """Names of :func:`scene_attributes`' entries for a scene of ``n_objects``: ``size``, ``colour`` and
    ``shape`` per object, then ``position`` (one object) or ``relation`` (two)."""
    extra = {1: ["position"], 2: ["relation"]}.get(n_objects, [])
    return ["size", "colour", "shape"] * n_objects + extra
