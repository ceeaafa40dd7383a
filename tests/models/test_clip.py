import math

import pytest
import torch

import mumo
from mumo.errors import CheckpointError, ConfigError
from mumo.models import list_models
from mumo.models.text import length_groups
from mumo.models.vision import AttentionPool

# Shrinks any registered config to test size while keeping its kind of tower, pooling, norms and MLP.
TINY = {
    "embed_dim": 16,
    "vision.image_size": 32,
    "vision.patch_size": 8,
    "vision.embed_dim": 16,
    "vision.depth": 2,
    "vision.num_heads": 2,
    "text.vocab_size": 64,
    "text.context_length": 8,
    "text.embed_dim": 16,
    "text.depth": 2,
    "text.num_heads": 2,
}


def tiny_batch(config, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, config.vision.image_size, config.vision.image_size, generator=g)
    t = config.text.context_length
    ids = torch.randint(4, config.text.vocab_size, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, t // 2 :] = 0  # one padded row
    return images, ids * mask, mask


@pytest.mark.parametrize("name", list_models("clip_*") + list_models("siglip_*"))
def test_every_registered_model_runs_forward_and_backward_at_tiny_size(name):
    model = mumo.create_model(name, seed=0, **TINY)
    images, ids, mask = tiny_batch(model.config)
    out = model(images, ids, mask)
    assert out.image_embeds.shape == (3, 16) and out.text_embeds.shape == (3, 16)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))
    assert out.logits_per_image.shape == (3, 3)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.T)
    if model.logit_bias is not None:
        loss = mumo.siglip_loss(out.image_embeds, out.text_embeds, out.logit_scale, out.logit_bias)
    else:
        loss = mumo.clip_loss(out.image_embeds, out.text_embeds, out.logit_scale)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"


def test_logit_scale_init_clamp_and_gradient():
    model = mumo.create_model("clip_vit_tiny", seed=0)
    scale, bias = model.scale_and_bias()
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5) and bias is None
    images, ids, mask = tiny_batch(model.config)
    out = model(images, ids, mask)
    mumo.clip_loss(out.image_embeds, out.text_embeds, out.logit_scale).backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs().item() > 0
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # above ln(100)
    assert model.scale_and_bias()[0].item() == pytest.approx(100.0, rel=1e-5)


def test_siglip_has_learnable_bias():
    model = mumo.create_model("siglip_vit_tiny", seed=0)
    scale, bias = model.scale_and_bias()
    assert scale.item() == pytest.approx(10.0, rel=1e-5) and bias.item() == -10.0
    out = model(*tiny_batch(model.config))
    torch.testing.assert_close(out.logits_per_image, 10.0 * out.image_embeds @ out.text_embeds.T - 10.0)


@pytest.mark.parametrize("name", ["clip_vit_tiny", "clip_vit_tiny_bidir"])
@pytest.mark.parametrize("pos_embed", ["learned", "rope"])
def test_text_padding_does_not_change_embeddings(name, pos_embed):
    model = mumo.create_model(name, seed=0, **{"text.pos_embed": pos_embed}).eval()
    ids = torch.tensor([[1, 9, 17, 33, 2]])
    short = model.encode_text(ids, torch.ones_like(ids))
    padded_ids = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    padded_ids[0, 6] = 50  # garbage under the padding must be ignored too
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0]])
    torch.testing.assert_close(model.encode_text(padded_ids, mask), short, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pos_embed", ["learned", "sincos", "rope"])
def test_pooled_fast_path_equals_full_features(pos_embed):
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.pos_embed": pos_embed}).eval()
    images, ids, mask = tiny_batch(model.config)
    tokens = model.visual.forward_features(images)  # every token through every block
    torch.testing.assert_close(model.visual(images), tokens[:, 0], atol=1e-6, rtol=1e-5)
    text_tokens = model.text.forward_features(ids, mask)
    last = mask.sum(1) - 1
    torch.testing.assert_close(
        model.text(ids, mask), text_tokens[torch.arange(3), last], atol=1e-6, rtol=1e-5
    )


def test_length_groups_split_by_length_only_when_it_saves_tokens():
    lengths = torch.tensor([3] * 200 + [20] * 56)
    mask = (
        torch.arange(24)[None]
        < lengths[torch.randperm(256, generator=torch.Generator().manual_seed(0))][:, None]
    ).long()
    groups = length_groups(mask)
    assert groups is not None and len(groups) == 2 and all(len(g) == 128 for g in groups)
    assert sorted(torch.cat(groups).tolist()) == list(range(256))  # every row once
    assert mask[groups[0]].sum(1).max() == 3  # the short texts together
    assert length_groups(mask[:255]) is None  # under 2 x 128 rows: one batch
    assert length_groups(torch.ones(256, 24, dtype=torch.long)) is None  # no padding to save
    assert length_groups(mask.flip(1)) is None  # left padding: trimming cannot drop it


@pytest.mark.parametrize("name", ["clip_vit_tiny", "clip_vit_tiny_bidir"])
def test_grouped_text_batch_equals_texts_one_by_one(name):
    model = mumo.create_model(name, seed=0, **{"text.context_length": 24}).eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 25, (300,), generator=g)
    mask = (torch.arange(24)[None] < lengths[:, None]).long()
    ids = torch.randint(4, model.config.text.vocab_size, (300, 24), generator=g) * mask
    assert length_groups(mask) is not None  # the batch does run in groups
    batch = model.encode_text(ids, mask)
    rows = torch.cat([model.encode_text(ids[i : i + 1, : lengths[i]]) for i in range(0, 300, 7)])
    torch.testing.assert_close(batch[::7], rows, atol=1e-5, rtol=1e-4)
    # gradients reach the embeddings exactly as without grouping (the same rows, summed)
    weights = torch.randn(300, batch.shape[1], generator=g)
    grouped = torch.autograd.grad(
        (model.encode_text(ids, mask) * weights).sum(), model.text.token_embed.weight
    )[0]
    alone = sum(
        torch.autograd.grad(
            (model.encode_text(ids[i : i + 50], mask[i : i + 50]) * weights[i : i + 50]).sum(),
            model.text.token_embed.weight,
        )[0]
        for i in range(0, 300, 50)
    )
    torch.testing.assert_close(grouped, alone, atol=1e-5, rtol=1e-4)


def test_mask_inferred_from_pad_id():
    model = mumo.create_model("clip_vit_tiny", seed=0).eval()
    images, ids, mask = tiny_batch(model.config)
    torch.testing.assert_close(model.encode_text(ids), model.encode_text(ids, mask))


def test_too_long_text_is_refused():
    model = mumo.create_model("clip_vit_tiny", seed=0)
    with pytest.raises(ValueError, match="context_length"):
        model.encode_text(torch.ones(1, 17, dtype=torch.long))


def test_conv_encoder_shapes():
    model = mumo.create_model("clip_conv_tiny", seed=0)
    images = torch.randn(2, 3, 32, 32)
    assert model.visual.forward_features(images).shape == (2, 64, 32)  # 32 px / 2**2 = 8x8 grid
    assert model.visual(images).shape == (2, 32)


def test_save_load_gives_identical_outputs(tmp_path):
    model = mumo.create_model("clip_vit_tiny_bidir", seed=0).eval()
    tok = mumo.Tokenizer.train(["a red circle", "a blue star"] * 10, vocab_size=300, context_length=16)
    mumo.save_pretrained(model, tmp_path / "ckpt", tokenizer=tok)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    again = mumo.load_pretrained(tmp_path / "ckpt").eval()
    images, ids, mask = tiny_batch(model.config)
    a, b = model(images, ids, mask), again(images, ids, mask)
    assert torch.equal(a.image_embeds, b.image_embeds) and torch.equal(a.text_embeds, b.text_embeds)
    # the checkpoint's config.json is itself a model description create_model accepts
    assert mumo.create_model(tmp_path / "ckpt" / "config.json").config == model.config
    tok2 = mumo.Tokenizer.load(tmp_path / "ckpt", context_length=16)
    assert torch.equal(tok2.encode("a red star").input_ids, tok.encode("a red star").input_ids)


def test_load_reports_mismatched_weights(tmp_path):
    mumo.save_pretrained(mumo.create_model("clip_vit_tiny"), tmp_path)
    other = mumo.get_model_config("clip_vit_tiny", **{"text.depth": 1, "vision.embed_dim": 64})
    (tmp_path / "config.json").write_text(__import__("json").dumps(other.to_dict()))
    with pytest.raises(CheckpointError, match="config.json has .* bytes, expected"):
        mumo.load_pretrained(tmp_path)  # the manifest catches the edit first
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"\d+ unexpected \(text.transformer.blocks.1"):
        mumo.load_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="nowhere does not exist"):
        mumo.load_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("ours, theirs", [("clip_vit_b32", "ViT-B-32"), ("clip_vit_b16", "ViT-B-16")])
def test_parameter_counts_equal_open_clip(ours, theirs):
    open_clip = pytest.importorskip("open_clip")
    with torch.device("meta"):
        ref = open_clip.create_model(theirs, pretrained=None, device="meta")
        model = mumo.create_model(ours)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model) == count(ref)
    assert count(model) == {"clip_vit_b32": 151_277_313, "clip_vit_b16": 149_620_737}[ours]
    assert math.isclose(model.config.init_logit_scale, math.log(1 / 0.07))


def test_conv_attention_pool_sees_where_features_are():
    model = mumo.create_model(
        "clip_conv_tiny", seed=0, **{"vision.pool": "attn", "vision.num_heads": 2}
    ).eval()
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.visual.pool(model.visual.forward_features(images)), model.visual(images))
    pool = AttentionPool(dim=8, num_tokens=4, num_heads=2)  # PyTorch's default init: sharp enough to see
    feature = 3 * torch.randn(8)
    left, right = torch.zeros(1, 4, 8), torch.zeros(1, 4, 8)
    left[0, 0], right[0, 3] = feature, feature  # one feature, in the first or the last grid cell
    torch.testing.assert_close(left.mean(1), right.mean(1))  # a mean cannot tell them apart
    a, b = pool(left), pool(right)
    assert (a - b).norm() > 0.05 * a.norm()  # attention pooling can


def test_attention_pool_is_refused_for_a_vit():
    with pytest.raises(ConfigError, match="for the conv encoder"):
        mumo.create_model("clip_vit_tiny", **{"vision.pool": "attn"})
    with pytest.raises(ConfigError, match="for the conv encoder"):
        mumo.create_model("clip_vit_tiny", **{"vision.pool": "grid"})
    with pytest.raises(ConfigError, match="for the conv encoder"):
        mumo.create_model("clip_vit_tiny", **{"vision.coords": True})


def _one_square(x: int) -> torch.Tensor:
    """(1, 3, 32, 32): one bright 6-px square at column x, on black."""
    image = torch.zeros(1, 3, 32, 32)
    image[..., 13:19, x : x + 6] = 1.0
    return image


def test_conv_coordinates_and_grid_pool_tell_where_a_shape_is():
    left, right = _one_square(8), _one_square(20)  # 12 px apart: a whole number of pooling steps
    plain = mumo.create_model("clip_conv_tiny", seed=0).eval()
    with torch.no_grad():
        # Convolutions and a mean see the same square wherever it is (zero padding is far away)
        torch.testing.assert_close(plain.visual(left), plain.visual(right))
        for overrides in (
            {"vision.coords": True},
            {"vision.coords": True, "vision.coords_stage": 1},
            {"vision.pool": "grid"},
        ):
            model = mumo.create_model("clip_conv_tiny", seed=0, **overrides).eval()
            a, b = model.visual(left), model.visual(right)
            assert (a - b).norm() > 0.05 * a.norm(), overrides
            tokens = model.visual.forward_features(left)
            torch.testing.assert_close(model.visual.pool(tokens), a)  # the fusion path pools alike
    coords = mumo.create_model("clip_conv_tiny", seed=0, **{"vision.coords": True})
    assert coords.visual.stages[0].in_channels == 5
    assert "coord_map" not in coords.state_dict()  # a fixed input, not a weight
    with pytest.raises(ValueError, match="resize them to vision.image_size"):
        coords.visual(torch.zeros(1, 3, 64, 64))


def test_coordinates_at_a_later_stage_leave_the_earlier_stages_blind_to_position():
    model = mumo.create_model("clip_conv_tiny", seed=0, **{"vision.coords": True, "vision.coords_stage": 1})
    v = model.visual.eval()
    assert [m.in_channels for m in v.stages if isinstance(m, torch.nn.Conv2d)][:2] == [
        3,
        v.stages[0].out_channels + 2,
    ]
    assert v.coord_map.shape[-1] == 16  # the second stage's resolution for 32-px images
    left, right = _one_square(8), _one_square(20)
    with torch.no_grad():  # the first stage sees the same square at either place, shifted by 6 cells
        a, b = v.stages[:4](left), v.stages[:4](right)
        torch.testing.assert_close(a[..., 2:9], b[..., 8:15])
    for bad, match in (
        ({"vision.coords_stage": 1}, "needs vision.coords"),
        ({"vision.coords": True, "vision.coords_stage": 9}, "coords_stage must be in 0"),
    ):
        with pytest.raises(ConfigError, match=match):
            mumo.create_model("clip_conv_tiny", **bad)
    with pytest.raises(ConfigError, match="for the conv encoder"):
        mumo.create_model("clip_vit_tiny", **{"vision.coords_stage": 1})


def test_siglip_architecture_pools_by_map_and_last_position_with_padding_attended():
    model = mumo.create_model("siglip_map_vit_tiny", seed=0).eval()
    assert isinstance(model.image_proj, torch.nn.Identity) and model.text_proj.bias is not None
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(3, 320, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        v, t = model.visual, model.text
        torch.testing.assert_close(v.pool(v.forward_features(images)), v(images), atol=1e-6, rtol=0)
        full = t(ids, mask)
        torch.testing.assert_close(t.pool(t.forward_features(ids, mask), mask), full, atol=1e-6, rtol=0)
        # 'longest' padding, or padding with any id, is the same text: the tower pads with pad_id itself
        torch.testing.assert_close(t(ids[:, :5], mask[:, :5])[1], full[1], atol=1e-6, rtol=0)
        assert not torch.allclose(t(ids, torch.ones_like(ids))[1], full[1])  # padding is attended
    assert model.visual.layer_of("attn_pool.q.weight") == model.visual.num_layers + 1
