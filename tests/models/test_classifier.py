"""ImageClassifier: made from a CLIP with the head it is handed; save and load."""

import pytest
import torch

import mumo
from mumo.models import ImageClassifier

NAMES = ("red circle", "blue square", "green star")  # the classes of the clip_and_tokenizer fixture


def test_the_head_it_is_handed_gives_the_logits(clip_and_tokenizer):
    clip, _ = clip_and_tokenizer
    weight, bias = torch.randn(3, clip.config.embed_dim), torch.randn(3)
    model = ImageClassifier.from_clip(clip, NAMES, weight, bias).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        scale = clip.scale_and_bias()[0]
        expected = scale * (clip.encode_image(images) @ weight.T + bias)
        torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-5)


def test_a_classifier_saves_and_loads(clip_and_tokenizer, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    model = ImageClassifier.from_clip(clip, NAMES, seed=3).eval()
    assert torch.allclose(model.head.weight.norm(dim=1), torch.ones(3))  # random unit rows
    mumo.save_pretrained(model, tmp_path, tokenizer)
    loaded = mumo.load_pretrained(tmp_path)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    assert loaded.head_scale.item() == pytest.approx(clip.scale_and_bias()[0].item())


def test_bad_classifier_inputs_are_refused(clip_and_tokenizer):
    clip, _ = clip_and_tokenizer
    with pytest.raises(ValueError, match=r"head_weight must be \(C, E\)"):
        ImageClassifier.from_clip(clip, NAMES, torch.zeros(2, clip.config.embed_dim))
    with pytest.raises(ValueError, match=r"head_bias must be \(C,\)"):
        ImageClassifier.from_clip(clip, NAMES, head_bias=torch.zeros(4))
    with pytest.raises(mumo.errors.ConfigError, match=">= 2 class names"):
        ImageClassifier.from_clip(clip, ("one",))
    with pytest.raises(TypeError, match="CLIP"):
        ImageClassifier.from_clip(torch.nn.Linear(2, 2), NAMES)
