"""Questions about scenes: each answered by the scene, naming one object, relations in true/false pairs."""

from mumo.data.shapes import COLOURS, SHAPES, ShapesConfig, generate_scene, position_word


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


def test_question_weights_draw_kinds_in_proportion_and_default_to_even():
    import collections

    import numpy as np
    import pytest

    from mumo.data.shapes import ShapesDataset, pick_question
    from mumo.errors import ConfigError

    config = ShapesConfig(min_objects=2, max_objects=2)  # pairs: relation and where always asked
    scenes = [generate_scene(config, "train", i) for i in range(4000)]
    draws = np.random.default_rng(0).random((len(scenes), 2)).tolist()

    def kinds(weights):
        return [pick_question(s, u, v, weights).kind for s, (u, v) in zip(scenes, draws, strict=True)]

    even = kinds(None)
    assert kinds({}) == even and kinds({"colour": 1.0}) == even  # a kind left out weighs 1
    even, picked = collections.Counter(even), collections.Counter(kinds({"relation": 4, "where": 0}))
    assert picked["where"] == 0 and even["where"] > 400
    # relation weighs 4 against colour's 1: about 4 times as often (4000 draws, a wide margin)
    assert 3.0 < picked["relation"] / picked["colour"] < 5.5
    assert 0.7 < even["relation"] / even["colour"] < 1.4
    for bad in ({"relations": 1}, {"where": -1}, {"where": True}):
        with pytest.raises(ConfigError, match="question_weights"):
            ShapesDataset("train", 4, questions=True, question_weights=bad)
