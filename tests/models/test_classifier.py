"""ImageClassifier: the zero-shot head reproduces zero-shot classification exactly; save and load."""

import pytest
import torch

import mumo
from mumo.data.tokenizer import Tokenizer
from mumo.inference import build_classifier
from mumo.models import ImageClassifier

NAMES = ("red circle", "blue square", "green star")


@pytest.fixture(scope="module")
def clip_and_tokenizer():
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": 300}).eval()
    tokenizer = Tokenizer.train([f"a photo of a {n}." for n in NAMES] * 10, 300)
    tokenizer.context_length = model.context_length
    return model, tokenizer


def test_the_zero_shot_head_gives_zero_shot_logits(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    templates = ("a photo of a {}.", "a {}.")
    model = ImageClassifier.from_clip(clip, NAMES, tokenizer, templates).eval()
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        expected = (
            clip.scale_and_bias()[0]
            * clip.encode_image(images)
            @ build_classifier(clip, tokenizer, NAMES, templates)
        )
        torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-5)
    assert model.config.templates == templates and model.class_names == NAMES
    # the CLIP inside is a copy: the classifier trains without touching the model it came from
    assert (
        model.clip.visual.patch_embed.proj.weight.data_ptr() != clip.visual.patch_embed.proj.weight.data_ptr()
    )
    torch.testing.assert_close(
        model.encode_text(torch.tensor([[1, 5, 2]])), clip.encode_text(torch.tensor([[1, 5, 2]]))
    )


def test_a_classifier_saves_and_loads(clip_and_tokenizer, tmp_path):
    clip, tokenizer = clip_and_tokenizer
    model = ImageClassifier.from_clip(clip, NAMES, head="random", seed=3).eval()
    assert torch.allclose(model.head.weight.norm(dim=1), torch.ones(3))  # random unit rows
    mumo.save_pretrained(model, tmp_path, tokenizer)
    loaded = mumo.load_pretrained(tmp_path)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    assert loaded.head_scale.item() == pytest.approx(clip.scale_and_bias()[0].item())


def test_bad_classifier_inputs_are_refused(clip_and_tokenizer):
    clip, _ = clip_and_tokenizer
    with pytest.raises(ValueError, match="tokenizer"):
        ImageClassifier.from_clip(clip, NAMES)
    with pytest.raises(mumo.errors.ConfigError, match=">= 2 class names"):
        ImageClassifier.from_clip(clip, ("one",), head="random")
    with pytest.raises(TypeError, match="CLIP"):
        ImageClassifier.from_clip(torch.nn.Linear(2, 2), NAMES, head="random")
