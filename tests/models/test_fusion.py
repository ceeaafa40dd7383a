import pytest
import torch
import torch.nn.functional as F

import mumo
from mumo.errors import ConfigError
from mumo.models import FusionConfig, FusionModel

# Smaller conv towers for fusion_conv_mini_64, with an image width (64) unlike the text width (128).
CONV_SMALL = {"clip.vision.image_size": 32, "clip.vision.embed_dim": 64, "clip.vision.depth": 2}


def batch(config, b=3, t=10, seed=0):
    """Images, ids and a mask where row 1 is padded from t // 2 on (ids 0 there, real ids >= 4)."""
    g = torch.Generator().manual_seed(seed)
    size, vocab = config.clip.vision.image_size, config.clip.text.vocab_size
    images = torch.randn(b, 3, size, size, generator=g)
    ids = torch.randint(4, vocab, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, t // 2 :] = 0
    return images, ids * mask, mask


def make(name, **overrides):
    return mumo.create_model(name, seed=0, **overrides).eval()


@pytest.mark.parametrize(
    "name, overrides, tokens",
    [
        ("fusion_vit_tiny", {}, 1 + 16),  # class token + 4x4 patches
        ("fusion_vit_tiny", {"clip.vision.embed_dim": 48}, 1 + 16),  # image width != text width
        ("fusion_conv_mini_64", CONV_SMALL, 64),  # 32 px / 2**2 = 8x8 feature map
    ],
)
def test_shapes_of_every_method(name, overrides, tokens):
    model = make(name, **overrides)
    images, ids, mask = batch(model.config)
    cv, c = model.clip.visual.width, model.clip.text.width
    vocab, e = model.config.clip.text.vocab_size, model.config.clip.embed_dim
    assert model.encode_image(images).shape == (3, e) and model.encode_text(ids, mask).shape == (3, e)
    image_tokens = model.image_tokens(images)
    assert image_tokens.shape == (3, tokens, cv)
    assert model.fuse(image_tokens, ids, mask).shape == (3, 10, c)
    assert model.itm_logits(image_tokens, ids, mask).shape == (3, 2)
    assert model.mlm_logits(image_tokens, ids, mask).shape == (3, 10, vocab)
    torch.testing.assert_close(model(images, ids, mask), model.itm_logits(image_tokens, ids, mask))


def test_text_tower_with_class_token():
    config = FusionConfig(clip=mumo.get_model_config("clip_vit_tiny_bidir"), fusion_depth=1, num_heads=2)
    model = FusionModel(config).eval()
    images, ids, mask = batch(config)
    image_tokens = model.image_tokens(images)
    assert model.has_text_cls
    assert model.fuse(image_tokens, ids, mask).shape == (3, 1 + 10, 32)  # the class token leads
    assert model.mlm_logits(image_tokens, ids, mask).shape == (3, 10, 320)


@pytest.mark.parametrize("name, overrides", [("fusion_vit_tiny", {}), ("fusion_conv_mini_64", CONV_SMALL)])
def test_padding_is_kept_out_of_fusion_attention(name, overrides):
    model = make(name, **overrides)
    images, ids, mask = batch(model.config)
    image_tokens = model.image_tokens(images)
    itm, mlm = model.itm_logits(image_tokens, ids, mask), model.mlm_logits(image_tokens, ids, mask)
    vocab = model.config.clip.text.vocab_size
    garbage = torch.randint(4, vocab, ids.shape, generator=torch.Generator().manual_seed(1))
    other_ids = torch.where(mask.bool(), ids, garbage)
    # and noise on the embeddings at padded positions, whatever their ids
    noise = lambda _m, _inp, out: out + 5.0 * torch.randn_like(out) * (1 - mask)[..., None]
    handle = model.clip.text.token_embed.register_forward_hook(noise)
    try:
        itm2 = model.itm_logits(image_tokens, other_ids, mask)
        mlm2 = model.mlm_logits(image_tokens, other_ids, mask)
    finally:
        handle.remove()
    torch.testing.assert_close(itm2, itm, atol=1e-5, rtol=1e-5)
    real = mask.bool()
    torch.testing.assert_close(mlm2[real], mlm[real], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mlm2[~real], mlm[~real])  # the perturbation did reach the padded tokens


def test_itm_depends_on_the_image():
    model = make("fusion_vit_tiny")
    images, ids, mask = batch(model.config)
    other = torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    a = model.itm_logits(model.image_tokens(images), ids, mask)
    b = model.itm_logits(model.image_tokens(other), ids, mask)
    assert ((a - b).abs().amax(dim=1) > 1e-6).all()  # small at init (0.02 weights), far above rounding


@pytest.mark.parametrize("name, overrides", [("fusion_vit_tiny", {}), ("fusion_conv_mini_64", CONV_SMALL)])
def test_itc_itm_mlm_backward_reaches_every_parameter(name, overrides):
    model = mumo.create_model(name, seed=0, **overrides)
    images, ids, mask = batch(model.config)
    scale, _ = model.scale_and_bias()
    itc = mumo.clip_loss(model.encode_image(images), model.encode_text(ids, mask), scale)
    image_tokens = model.image_tokens(images)
    itm = F.cross_entropy(model.itm_logits(image_tokens, ids, mask), torch.tensor([1, 0, 1]))
    mlm = model.mlm_logits(image_tokens, ids, mask)
    mlm = F.cross_entropy(mlm[mask.bool()], ids[mask.bool()])
    (itc + itm + mlm).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"


def test_save_load_gives_identical_outputs(tmp_path):
    model = make("fusion_vit_tiny")
    mumo.save_pretrained(model, tmp_path / "ckpt")
    again = mumo.load_pretrained(tmp_path / "ckpt").eval()
    assert isinstance(again, FusionModel) and again.config == model.config
    images, ids, mask = batch(model.config)
    assert torch.equal(model.encode_image(images), again.encode_image(images))
    assert torch.equal(model.encode_text(ids, mask), again.encode_text(ids, mask))
    a, b = model.image_tokens(images), again.image_tokens(images)
    assert torch.equal(model.itm_logits(a, ids, mask), again.itm_logits(b, ids, mask))
    assert torch.equal(model.mlm_logits(a, ids, mask), again.mlm_logits(b, ids, mask))
    assert mumo.create_model(tmp_path / "ckpt" / "config.json").config == model.config


@pytest.mark.parametrize(
    "overrides, message",
    [({"num_heads": 3}, "does not divide the text width"), ({"fusion_depth": 0}, "must be positive")],
)
def test_bad_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(ConfigError, match=message):
        mumo.get_model_config("fusion_vit_tiny", **overrides)
