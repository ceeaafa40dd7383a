"""The built-in data's evaluation suite: what its retrieval figures credit."""

import collections

import mumo
from mumo.data.shapes import ShapesConfig, ShapesDataset, scene_key
from mumo.data.tokenizer import Tokenizer
from mumo.eval.shapes_suite import evaluate_shapes


def test_retrieval_reports_its_ceiling_and_hits_on_any_image_a_caption_fits():
    shapes = ShapesConfig(image_size=32, max_objects=1)  # lone objects: captions often fit several
    tok = Tokenizer.train(["a small red circle in the top left"] * 10, vocab_size=300, context_length=16)
    model = mumo.create_model("clip_conv_tiny", seed=0)
    m = evaluate_shapes(model, tok, shapes, "val", 60, retrieval_size=60).metrics["retrieval"]
    keys = [scene_key(ShapesDataset("val", 60, shapes)[i]["scene"]) for i in range(60)]
    counts = collections.Counter(keys)
    assert max(counts.values()) > 1  # the test means something: some captions fit several images
    expected = sum(1 / counts[k] for k in keys) / len(keys)
    assert abs(m["text_to_image_R@1_ceiling"] - expected) < 1e-6
    assert m["text_to_image_R@1_any_fit"] >= m["text_to_image_R@1"]
