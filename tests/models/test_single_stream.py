import pytest
import torch
import torch.nn.functional as F

import mumo
from mumo.errors import ConfigError
from mumo.models import SingleStream, SingleStreamConfig


def batch(config, b=3, t=10, seed=0):
    """Images, ids and a mask where row 1 is padded from t // 2 on (ids 0 there, real ids >= 4)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, config.in_chans, config.image_size, config.image_size, generator=g)
    ids = torch.randint(4, config.vocab_size, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, t // 2 :] = 0
    return images, ids * mask, mask


@pytest.fixture(scope="module")
def model():
    return mumo.create_model("single_stream_tiny", seed=0).eval()


def test_shapes_of_every_method(model):
    images, ids, mask = batch(model.config)
    n = model.num_patches
    assert n == 16  # 32 px in 8 px patches
    assert model.forward_features(images, ids, mask).shape == (3, 1 + n + 10, 32)
    assert model.itm_logits(images, ids, mask).shape == (3, 2)
    assert model.mlm_logits(images, ids, mask).shape == (3, 10, 320)
    torch.testing.assert_close(model(images, ids, mask), model.itm_logits(images, ids, mask))


def test_itm_fast_path_equals_full_features(model):
    images, ids, mask = batch(model.config)
    cls = model.forward_features(images, ids, mask)[:, 0]
    torch.testing.assert_close(model.itm_logits(images, ids, mask), model.itm_head(cls), atol=1e-6, rtol=1e-5)


def test_mask_inferred_from_pad_id(model):
    images, ids, mask = batch(model.config)
    torch.testing.assert_close(model.itm_logits(images, ids), model.itm_logits(images, ids, mask))


def test_padding_is_kept_out_of_attention(model):
    images, ids, mask = batch(model.config)
    itm, mlm = model.itm_logits(images, ids, mask), model.mlm_logits(images, ids, mask)
    garbage = torch.randint(4, model.config.vocab_size, ids.shape, generator=torch.Generator().manual_seed(1))
    other_ids = torch.where(mask.bool(), ids, garbage)
    # and noise on the embeddings at padded positions, whatever their ids
    noise = lambda _m, _inp, out: out + 5.0 * torch.randn_like(out) * (1 - mask)[..., None]
    handle = model.token_embed.register_forward_hook(noise)
    try:
        itm2, mlm2 = model.itm_logits(images, other_ids, mask), model.mlm_logits(images, other_ids, mask)
    finally:
        handle.remove()
    torch.testing.assert_close(itm2, itm, atol=1e-5, rtol=1e-5)
    real = mask.bool()
    torch.testing.assert_close(mlm2[real], mlm[real], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mlm2[~real], mlm[~real])  # the perturbation did reach the padded tokens


def test_itm_depends_on_the_image(model):
    images, ids, mask = batch(model.config)
    other = torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    a, b = model.itm_logits(images, ids, mask), model.itm_logits(other, ids, mask)
    assert ((a - b).abs().amax(dim=1) > 1e-4).all()


def test_forward_backward_reaches_every_parameter():
    model = mumo.create_model("single_stream_tiny", seed=0)
    images, ids, mask = batch(model.config)
    labels = torch.tensor([1, 0, 1])
    loss = F.cross_entropy(model.itm_logits(images, ids, mask), labels)
    mlm = model.mlm_logits(images, ids, mask)
    loss = loss + F.cross_entropy(mlm[mask.bool()], ids[mask.bool()])
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"


def test_save_load_gives_identical_outputs(tmp_path):
    model = mumo.create_model("single_stream_tiny", seed=0).eval()
    mumo.save_pretrained(model, tmp_path / "ckpt")
    again = mumo.load_pretrained(tmp_path / "ckpt").eval()
    assert isinstance(again, SingleStream) and again.config == model.config
    images, ids, mask = batch(model.config)
    assert torch.equal(model.itm_logits(images, ids, mask), again.itm_logits(images, ids, mask))
    assert torch.equal(model.mlm_logits(images, ids, mask), again.mlm_logits(images, ids, mask))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"patch_size": 7}, "not a multiple of patch_size"),
        ({"num_heads": 5}, "not divisible by num_heads"),
        ({"pad_id": 320}, "outside the vocabulary"),
    ],
)
def test_bad_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(ConfigError, match=message):
        mumo.get_model_config("single_stream_tiny", **overrides)


def test_too_long_text_is_refused(model):
    images = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="context_length"):
        model.itm_logits(images, torch.ones(1, 17, dtype=torch.long))


def test_default_config_is_valid():
    assert SingleStreamConfig().model_type == "single_stream"
