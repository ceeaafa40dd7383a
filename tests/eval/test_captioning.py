"""Caption metrics reproduce pycocoevalcap; captions of the built-in data parse back into their scenes."""

import shutil

import pytest
import torch

import mumo
from mumo.data.shapes import (
    QUESTION_KINDS,
    ShapesConfig,
    captions,
    generate_scene,
    hard_negatives,
    parse_caption,
)
from mumo.errors import ProgramError
from mumo.eval.captioning import (
    attribute_accuracy,
    caption_metrics,
    evaluate_captions,
    evaluate_vqa,
    simple_tokenize,
)

# A fixed toy set: predictions and references with punctuation, case and partial overlap.
PREDICTIONS = [
    "A man riding a horse on the beach.",
    "two dogs play in the snow",
    "a red star above a blue circle",
    "A plate of food, with a fork!",
]
REFERENCES = [
    ["A man rides a horse along the beach.", "Someone riding a brown horse by the sea."],
    ["Two dogs are playing in the snow.", "Dogs running through snow.", "Two puppies in snow"],
    ["a red star above a blue circle", "there is a red star above a blue circle"],
    ["A fork next to a plate of food.", "Food on a white plate, and a fork."],
]


def _pycocoevalcap_directly(gts, res):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return [*bleu, cider]


def test_metrics_reproduce_pycocoevalcap_on_a_fixed_toy_set():
    ours = caption_metrics(PREDICTIONS, REFERENCES, meteor=False)  # METEOR: one JVM in this file, below
    gts = {i: [simple_tokenize(r) for r in refs] for i, refs in enumerate(REFERENCES)}
    res = {i: [simple_tokenize(p)] for i, p in enumerate(PREDICTIONS)}
    expected = _pycocoevalcap_directly(gts, res)
    got = [ours["BLEU-1"], ours["BLEU-2"], ours["BLEU-3"], ours["BLEU-4"], ours["CIDEr-D"]]
    assert got == pytest.approx(expected, rel=1e-12)
    assert 0 < ours["BLEU-4"] < ours["BLEU-1"] < 1 and ours["CIDEr-D"] > 0
    # the COCO toolkit's tokenization, by hand: lower case, punctuation split off and dropped
    assert simple_tokenize("A plate of food, with a fork!") == "a plate of food with a fork"


@pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer needs Java")
def test_simple_tokenization_equals_the_ptb_tokenizer_on_the_toy_set():
    assert caption_metrics(PREDICTIONS, REFERENCES, tokenize="ptb", meteor=False) == pytest.approx(
        caption_metrics(PREDICTIONS, REFERENCES, meteor=False), rel=1e-12
    )


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR runs Java")
def test_meteor_and_rouge_l_equal_pycocoevalcap_called_directly(monkeypatch):
    import pycocoevalcap.meteor.meteor as meteor_module
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [simple_tokenize(r) for r in refs] for i, refs in enumerate(REFERENCES)}
    res = {i: [simple_tokenize(p)] for i, p in enumerate(PREDICTIONS)}
    scorer = meteor_module.Meteor()  # a JVM takes seconds to start: this file starts one, shared below
    meteor, _ = scorer.compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    monkeypatch.setattr(meteor_module, "Meteor", lambda: scorer)
    ours = caption_metrics(PREDICTIONS, REFERENCES, meteor=True)
    assert ours["METEOR"] == meteor and ours["ROUGE-L"] == rouge  # exactly: the same scorers, same input
    assert 0 < ours["METEOR"] < 1 and 0 < ours["ROUGE-L"] < 1
    assert list(ours) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"]


def test_without_java_meteor_is_one_line_when_asked_and_skipped_otherwise(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    with pytest.raises(ProgramError, match="apt-get install default-jre-headless") as e:
        caption_metrics(PREDICTIONS, REFERENCES, meteor=True)
    assert "\n" not in str(e.value)
    with caplog.at_level("INFO", logger="mumo.eval.captioning"):
        ours = caption_metrics(PREDICTIONS, REFERENCES)
    assert "METEOR" not in ours and "ROUGE-L" in ours and "CIDEr-D" in ours
    assert [r.getMessage()[:15] for r in caplog.records] == ["METEOR skipped:"]


def test_perfect_and_empty_predictions():
    refs = [["a red star above a blue circle"], ["a small green cross on the left"]]
    perfect = caption_metrics([r[0] for r in refs], refs, meteor=False)
    assert perfect["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    wrong = caption_metrics(["purple", "purple"], refs, meteor=False)
    assert wrong["CIDEr-D"] == 0.0 and wrong["BLEU-1"] < 0.01


def test_every_template_parses_back_and_negatives_lose_attributes():
    config = ShapesConfig()
    for i in range(400):
        scene = generate_scene(config, "test", i)
        for text in captions(scene):
            assert parse_caption(text) is not None
            assert attribute_accuracy([text], [scene])["attribute_accuracy"] == 1.0
        for kind, text in hard_negatives(scene).items():
            objs = scene.objects
            twins = len(objs) == 2 and (objs[0].size, objs[0].colour, objs[0].shape) == (
                objs[1].size, objs[1].colour, objs[1].shape
            )  # fmt: skip
            if kind == "reverse_relation" and twins:  # "a red star above a red star" reads both ways
                continue
            acc = attribute_accuracy([text], [scene])
            assert acc["caption_exact"] == 0.0 and acc["attribute_accuracy"] < 1.0, kind
    one = generate_scene(ShapesConfig(min_objects=1, max_objects=1), "test", 0)
    assert attribute_accuracy(["not a caption"], [one]) == {
        "attribute_accuracy": 0.0,
        "per_attribute": {"size": 0.0, "colour": 0.0, "shape": 0.0, "position": 0.0},
        "caption_exact": 0.0,
        "parsed": 0.0,
    }
    two = next(s for i in range(50) if len((s := generate_scene(config, "test", i)).objects) == 2)
    a, b = captions(two)[0], captions(two)[1]  # "A above B" and "B is below A": the same scene
    assert attribute_accuracy([a, b], [two, two])["caption_exact"] == 1.0
    o = one.objects[0]
    colour = "red" if o.colour != "red" else "blue"
    wrong_colour = captions(one)[0].replace(f" {o.colour} ", f" {colour} ")
    scored = attribute_accuracy([wrong_colour], [one])
    assert scored["attribute_accuracy"] == pytest.approx(3 / 4) and scored["per_attribute"]["colour"] == 0.0


def test_evaluations_run_on_tiny_models():
    torch.manual_seed(0)
    tok = mumo.Tokenizer.train(
        [c for i in range(300) for c in captions(generate_scene(ShapesConfig(), "train", i))], vocab_size=300
    )
    model = mumo.create_model("coca_vit_tiny", seed=0, **{"text.context_length": 40})
    config = ShapesConfig(image_size=32)
    caps = evaluate_captions(model, tok, config, size=6, batch_size=4, meteor=False)
    assert caps["n"] == 6 and 0 <= caps["attribute_accuracy"] <= 1 and len(caps["examples"]) == 6
    assert 0 <= caps["ROUGE-L"] <= 1 and "METEOR" not in caps
    vqa = evaluate_vqa(model, tok, config, size=5, batch_size=3)
    assert set(vqa["per_kind"]) <= set(QUESTION_KINDS)
    assert vqa["counts"]["count"] == 5 * 6  # every shape is asked about in every scene
