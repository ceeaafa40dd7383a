"""The captioner / CoCa / GPT decoder: one pass gives logits and embeddings; incremental decoding with
the KV cache equals the teacher-forced pass; a GPT's weights start a captioner."""

import pytest
import torch

import mumo
from mumo.errors import CheckpointError, ConfigError
from mumo.models import Captioner, CaptionerConfig, load_pretrained, save_pretrained
from mumo.models._pretrained import load_state_dict_matching


def _ids(b=3, t=9, vocab=320, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (b, t), generator=g)


@pytest.mark.parametrize("name", ["coca_vit_tiny", "captioner_conv_tiny", "gpt_tiny"])
def test_forward_shapes_and_tied_output_embedding(name):
    model = mumo.create_model(name, seed=0).eval()
    images = torch.randn(3, 3, 32, 32) if model.visual is not None else None
    out = model(images, _ids())
    assert out.logits.shape == (3, 9, 320)
    if model.config.contrastive:
        assert out.image_embeds.shape == out.text_embeds.shape == (3, 32)
        torch.testing.assert_close(out.image_embeds, model.encode_image(images))
        torch.testing.assert_close(out.text_embeds, model.encode_text(_ids()))
        torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))
    else:
        assert out.image_embeds is None and out.text_embeds is None
    # the output layer is the input embedding: no separate V x C matrix among the parameters
    assert not any(p.shape == (320, 32) for n, p in model.named_parameters() if "token_embed" not in n)
    x = torch.randn(2, 32)
    torch.testing.assert_close(
        model._lm_head(x), model.decoder_norm(x) @ model.text.token_embed.weight.T, rtol=1e-5, atol=1e-6
    )


def test_logits_are_causal_and_depend_on_the_image():
    model = mumo.create_model("coca_vit_tiny", seed=0).eval()
    images, ids = torch.randn(2, 3, 32, 32), _ids(2)
    base = model(images, ids).logits
    changed = ids.clone()
    changed[:, 5] = 7
    later = model(images, changed).logits
    torch.testing.assert_close(later[:, :5], base[:, :5])  # positions before 5 cannot see it
    assert not torch.allclose(later[:, 5:], base[:, 5:])
    assert not torch.allclose(model(images.flip(0), ids).logits, base)


@pytest.mark.parametrize("name", ["coca_vit_tiny", "captioner_conv_tiny", "gpt_tiny"])
@pytest.mark.parametrize("pos_embed", ["learned", "rope"])
def test_incremental_decoding_with_the_cache_equals_the_full_pass(name, pos_embed):
    model = mumo.create_model(name, seed=0, **{"text.pos_embed": pos_embed}).double().eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64) if model.visual is not None else None
    ids = _ids(2, 10)
    full = model(images, ids).logits
    context = model.image_context(images) if images is not None else None
    state = model.start_decoding(context, 2, 10)
    positions = torch.arange(10).expand(2, 10)
    steps = [model.decode(ids[:, :4], positions[:, :4], state=state)]  # a prompt, then one at a time
    steps += [model.decode(ids[:, t : t + 1], positions[:, t : t + 1], state=state) for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    assert state.length == 10


@pytest.mark.parametrize("pos_embed", ["learned", "rope"])
def test_left_padding_with_shifted_positions_decodes_like_no_padding(pos_embed):
    model = mumo.create_model("coca_vit_tiny", seed=0, **{"text.pos_embed": pos_embed}).double().eval()
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64).expand(2, -1, -1, -1)
    ids = _ids(1, 6)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)  # 3 pad tokens on the left
    batch = torch.cat([torch.cat([ids, ids[:, :3]], dim=1), padded])  # row 0 unpadded (9), row 1 padded
    mask = torch.tensor([[1] * 9, [0, 0, 0] + [1] * 6])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    logits = model.decode(batch, positions, mask, context=model.image_context(images))
    torch.testing.assert_close(logits[1, 3:], logits[0, :6])


def test_a_gpt_checkpoint_starts_a_captioner_of_the_same_text_shape(tmp_path):
    gpt = mumo.create_model("gpt_mini", seed=1)
    captioner = mumo.create_model("captioner_conv_mini_64", seed=2)
    fresh, unused = load_state_dict_matching(captioner, gpt.state_dict(), "gpt")
    assert unused == []
    assert fresh and all(
        k.startswith(("visual.", "image_")) or ".cross_attn." in k or ".norm_cross." in k for k in fresh
    )
    for k, v in gpt.state_dict().items():
        assert torch.equal(captioner.state_dict()[k], v)
    wrong = mumo.create_model("gpt_mini", seed=1, **{"text.embed_dim": 64, "text.num_heads": 2})
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_state_dict_matching(captioner, wrong.state_dict(), "gpt")


def test_save_and_load_round_trip_including_a_text_only_config(tmp_path):
    for name in ("coca_vit_tiny", "gpt_tiny"):
        model = mumo.create_model(name, seed=0).eval()
        loaded = load_pretrained(save_pretrained(model, tmp_path / name)).eval()
        assert isinstance(loaded, Captioner) and loaded.config == model.config
        ids = _ids()
        images = torch.randn(3, 3, 32, 32) if model.visual is not None else None
        torch.testing.assert_close(loaded(images, ids).logits, model(images, ids).logits)


def test_config_errors_say_what_to_change():
    with pytest.raises(ConfigError, match="contrastive=false"):
        CaptionerConfig(vision=None, contrastive=True)
    with pytest.raises(ConfigError, match="causal"):
        mumo.get_model_config("coca_vit_tiny", **{"text.causal": False, "text.pool": "mean"})
    with pytest.raises(ConfigError, match="is null"):
        mumo.get_model_config("gpt_tiny", **{"vision.image_size": 64})
    model = mumo.create_model("gpt_tiny", seed=0)
    with pytest.raises(ValueError, match="text-only"):
        model.image_context(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="no contrastive head"):
        model.encode_text(_ids())
    with pytest.raises(ValueError, match="context_length"):
        model.start_decoding(None, 1, 17)


def test_sincos_grid_code_is_fixed_ordered_and_not_saved(tmp_path):
    model = mumo.create_model("captioner_conv_mini_64", seed=0, grid_code="sincos").eval()
    assert "image_pos" not in model.state_dict() and not any(
        "image_pos" in n for n, _ in model.named_parameters()
    )
    code = model.image_pos[0]  # (16, C): a 4 x 4 grid, row-major; the column half of the width varies along x
    columns = code[:4, code.shape[1] // 2 :]
    assert not torch.allclose(columns[0], columns[3]) and torch.equal(
        code[0, code.shape[1] // 2 :], code[4, code.shape[1] // 2 :]
    )
    loaded = load_pretrained(save_pretrained(model, tmp_path / "m")).eval()
    images, ids = torch.randn(2, 3, 64, 64), _ids(2, 6, vocab=1000)
    torch.testing.assert_close(loaded(images, ids).logits, model(images, ids).logits)
