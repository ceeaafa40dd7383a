"""Classifier heads: the zero-shot head reproduces zero-shot classification exactly; a probe head gives the
probe's logits; the zero-shot start of a fine-tuned classifier."""

import torch

import mumo
from mumo.inference import build_classifier
from mumo.models import ImageClassifier
from mumo.run.heads import fit_probe_head, zero_shot_head

NAMES = ("red circle", "blue square", "green star")  # the classes of the clip_and_tokenizer fixture


def test_the_zero_shot_head_gives_zero_shot_logits(clip_and_tokenizer):
    clip, tokenizer = clip_and_tokenizer
    templates = ("a photo of a {}.", "a {}.")
    model = ImageClassifier.from_clip(
        clip, NAMES, zero_shot_head(clip, tokenizer, NAMES, templates), templates=templates
    )
    model = model.eval()
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


def test_a_probe_head_gives_the_probes_logits():
    from mumo.eval.linear_probe import fit_logistic_regression
    from mumo.inference import embed_images

    clip = mumo.create_model("clip_conv_tiny", seed=0)
    model = ImageClassifier.from_clip(clip, ("a", "b", "c")).eval()
    g = torch.Generator().manual_seed(0)
    train = (torch.randn(30, 3, 32, 32, generator=g), torch.arange(30) % 3)
    val = (torch.randn(12, 3, 32, 32, generator=g), torch.arange(12) % 3)
    chosen = fit_probe_head(model, train, val, l2_grid=(1e-3, 1e-1))
    assert chosen["l2"] in (1e-3, 1e-1) and 0.0 <= chosen["val_accuracy"] <= 1.0
    probe = fit_logistic_regression(embed_images(model, train[0]).double(), train[1], 3, chosen["l2"])
    with torch.no_grad():
        got = model(val[0]).double()
    torch.testing.assert_close(got, probe.logits(embed_images(model, val[0])), rtol=1e-4, atol=1e-4)
