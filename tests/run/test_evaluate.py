"""evaluate_on_shapes reports its progress in parts: the captions (captioners), then the four parts of the
shapes suite (models with embeddings)."""

import pytest

import mumo
from mumo.data.shapes import ShapesConfig
from mumo.data.tokenizer import Tokenizer
from mumo.run.evaluate import evaluate_on_shapes


@pytest.mark.parametrize(
    "name, overrides, parts",
    [
        ("clip_vit_tiny", {"text.vocab_size": 300}, 4),
        ("coca_vit_tiny", {"text.vocab_size": 300}, 5),  # captions, then the suite on its embeddings
    ],
)
def test_progress_counts_the_parts_of_the_evaluation(name, overrides, parts):
    tokenizer = Tokenizer.train(["a red circle above a blue square"] * 10, vocab_size=300)
    model = mumo.create_model(name, seed=0, **overrides).eval()
    tokenizer.context_length = model.context_length
    calls = []
    shapes = ShapesConfig(image_size=model.image_size)
    metrics = evaluate_on_shapes(model, tokenizer, shapes, "val", 6, progress=lambda *a: calls.append(a))
    assert calls == [(i, parts) for i in range(1, parts + 1)]
    assert "zero_shot" in metrics and ("captioning" in metrics) == (parts == 5)
