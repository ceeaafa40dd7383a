"""Soft parameter sharing and learned loss weighting."""

import math

import pytest
import torch

import mumo
from mumo.errors import ConfigError
from mumo.losses.weighting import FixedWeighting, UncertaintyWeighting, build_weighting, tie_penalty
from mumo.models.text import TextConfig, TextTransformer


def _towers():
    cfg = TextConfig(vocab_size=50, context_length=8, embed_dim=16, depth=1, num_heads=2)
    a = TextTransformer(cfg)
    b = TextTransformer(cfg)
    b.load_state_dict(a.state_dict())
    return a, b


def test_tie_penalty_is_zero_for_equal_towers_and_its_gradient_pulls_them_together():
    a, b = _towers()
    assert tie_penalty(a, b).item() == 0.0
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.1 * torch.randn_like(p))
    before = tie_penalty(a, b)
    expected = sum(((p - q) ** 2).sum() for p, q in zip(a.parameters(), b.parameters(), strict=True))
    torch.testing.assert_close(before, expected)
    before.backward()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.grad, 2 * (p - q).detach())  # d/da ||a - b||^2
        torch.testing.assert_close(q.grad, -p.grad)
    opt = torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1)
    opt.step()
    assert tie_penalty(a, b).item() < 0.5 * before.item()  # a step on the penalty alone brings them closer


def test_tie_penalty_refuses_towers_of_different_shape():
    a, _ = _towers()
    c = TextTransformer(TextConfig(vocab_size=50, context_length=8, embed_dim=16, depth=2, num_heads=2))
    with pytest.raises(ConfigError, match="same architecture"):
        tie_penalty(a, c)


def test_soft_sharing_fusion_model_reads_its_own_tied_text_tower():
    model = mumo.create_model("fusion_vit_tiny", seed=0, text_sharing="soft", tie_strength=0.5)
    hard = mumo.create_model("fusion_vit_tiny", seed=0)
    assert model.regularizers()["tie"].item() == 0.0 and hard.regularizers() == {}
    images, ids = torch.randn(2, 3, 32, 32), torch.randint(4, 300, (2, 10))
    torch.testing.assert_close(model(images, ids), hard(images, ids))  # equal towers: same outputs
    delta = 0.05 * torch.randn_like(model.fusion_text.token_embed.weight)
    with torch.no_grad():
        model.fusion_text.token_embed.weight.add_(delta)
    assert not torch.allclose(model(images, ids), hard(images, ids))  # fusion reads the copy...
    torch.testing.assert_close(model.encode_text(ids), hard.encode_text(ids))  # ...ITC the CLIP tower
    expected = 0.5 * delta.pow(2).sum().item()
    assert math.isclose(model.regularizers()["tie"].item(), expected, rel_tol=1e-4)


@pytest.mark.learned
def test_uncertainty_weights_learn_the_inverse_loss_scale():
    # With fixed losses L_i the optimum of 0.5 exp(-s) L + 0.5 s is s = log L, i.e. weight 0.5 / L.
    weighting = UncertaintyWeighting(["big", "small"], fixed={"tie": 3.0})
    losses = {"big": torch.tensor(4.0), "small": torch.tensor(0.25), "tie": torch.tensor(1.0)}
    opt = torch.optim.Adam(weighting.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        weighting(losses).backward()
        opt.step()
    torch.testing.assert_close(
        weighting.log_vars.detach(), torch.tensor([math.log(4.0), math.log(0.25)]), atol=1e-2, rtol=0
    )
    w = weighting.weights_now()
    assert w["small"] > 10 * w["big"] and w["tie"] == 3.0
    # the penalty term is added with its fixed weight, outside the learned ones
    total = weighting(losses).item()
    s = weighting.log_vars.detach()
    pairs = zip(s.tolist(), (4.0, 0.25), strict=True)
    expected = sum(0.5 * math.exp(-si) * li + 0.5 * si for si, li in pairs) + 3.0
    assert math.isclose(total, expected, rel_tol=1e-6)


def test_fixed_weighting_and_the_builder():
    losses = {"itc": torch.tensor(2.0), "itm": torch.tensor(1.0)}
    assert FixedWeighting({"itm": 0.5})(losses).item() == 2.5
    assert isinstance(build_weighting("uncertainty", ["itc"], {}), UncertaintyWeighting)
    with pytest.raises(ConfigError, match="fixed' or 'uncertainty"):
        build_weighting("learned", ["itc"], {})


@pytest.mark.parametrize("name", ["fusion_vit_tiny", "fusion_conv_mini_64"])
def test_one_image_pass_gives_both_embeddings_and_fusion_tokens(name):
    model = mumo.create_model(name, seed=0).eval()
    size = model.config.clip.vision.image_size
    images = torch.randn(3, 3, size, size)
    embeds, tokens = model.encode_image_and_tokens(images)
    torch.testing.assert_close(embeds, model.encode_image(images), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens, model.image_tokens(images))


@pytest.mark.parametrize("name", ["fusion_vit_tiny", "fusion_conv_mini_64"])
def test_one_text_pass_gives_both_embeddings_and_fusion_tokens(name):
    model = mumo.create_model(name, seed=0).eval()
    ids = torch.randint(4, 300, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:], mask[2, 3:] = 0, 0
    embeds, tokens = model.encode_text_and_tokens(ids, mask)
    torch.testing.assert_close(embeds, model.encode_text(ids, mask), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens, model.text_tokens(ids, mask))
