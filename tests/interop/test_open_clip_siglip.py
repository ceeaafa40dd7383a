"""OpenCLIP's SigLIP (timm ViT + MAP head, bidirectional last-token text tower, logit bias) -> mumo, checked
against OpenCLIP itself on a tiny random-init model with noise on every parameter."""

import json

import pytest
import torch
from safetensors.torch import save_file

from mumo.errors import ConfigError
from mumo.interop.open_clip import load_open_clip
from mumo.interop.open_clip_siglip import siglip_config_from_open_clip

from .conftest import siglip_texts


def _reference(ref, images, ids):
    with torch.no_grad():
        img = ref.encode_image(images, normalize=True)
        txt = ref.encode_text(ids, normalize=True)
    return img, txt, ref.logit_scale.exp() * img @ txt.T + ref.logit_bias


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_embeddings_and_biased_logits_match_open_clip(open_clip_siglip, monkeypatch, act):
    ref, cfg = open_clip_siglip
    if act == "gelu_tanh":  # a SigLIP 2-era tower: timm's act_layer='gelu_tanh', the text tower's act_kwargs
        from mumo.interop import open_clip_siglip as module

        monkeypatch.setitem(module.TIMM_SIGLIP_TOWERS, "vit_tiny_patch8_siglip_32", (3, "gelu_tanh"))
        cfg = {**cfg, "text_cfg": {**cfg["text_cfg"], "act_kwargs": {"approximate": "tanh"}}}
        for m in ref.modules():
            if isinstance(m, torch.nn.GELU):
                m.approximate = "tanh"
    model = load_open_clip(cfg, ref.state_dict())
    assert model.config.vision.pool == "map" and model.config.text.pool == "last"
    images = torch.randn(3, 3, 32, 32)
    ids, mask = siglip_texts(160, 16)
    img_ref, txt_ref, logits_ref = _reference(ref, images, ids)
    with torch.no_grad():
        out = model(images, ids, mask)
        short = model.encode_text(ids[:, :8] * mask[:, :8] + (1 - mask[:, :8]), mask[:, :8])  # T < context
    diffs = {
        "image": (out.image_embeds - img_ref).abs().max().item(),
        "text": (out.text_embeds - txt_ref).abs().max().item(),
        "logits": (out.logits_per_image - logits_ref).abs().max().item(),
    }
    print(f"open_clip -> mumo ({act}) max abs diff: {diffs}")
    assert max(diffs.values()) <= 1e-5, diffs
    torch.testing.assert_close(short[1:], txt_ref[1:], atol=1e-5, rtol=0)  # rows that fit in 8 tokens


def test_hub_folder_loads_from_files(open_clip_siglip, tmp_path):
    ref, cfg = open_clip_siglip
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, tmp_path / "open_clip_model.safetensors")
    model = load_open_clip(tmp_path / "open_clip_config.json", tmp_path / "open_clip_model.safetensors")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), ref.encode_image(images, normalize=True))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"vision_cfg": {"timm_model_name": "vit_base_patch16_siglip_gap_224"}}, "timm SigLIP tower"),
        ({"vision_cfg": {"timm_proj": "linear"}}, "timm_proj"),
        ({"text_cfg": {"pool_type": "argmax"}}, "pool_type"),
        ({"text_cfg": {"no_causal_mask": False}}, "no_causal_mask"),
        ({"text_cfg": {"ls_init_value": 0.1}}, "ls_init_value"),
        ({"text_cfg": {"act_kwargs": {"approximate": "none", "x": 1}}}, "act_kwargs"),
    ],
)
def test_unsupported_options_are_refused_by_name(open_clip_siglip, change, match):
    ref, cfg = open_clip_siglip
    bad = {**cfg, **{k: {**cfg[k], **v} for k, v in change.items()}}
    with pytest.raises(ConfigError, match=match):
        siglip_config_from_open_clip(bad, ref.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2"])
def test_full_size_open_clip_configs_match(name):
    """OpenCLIP's own configs at full size (203 M / 375 M parameters, random init; ~25 s each on CPU)."""
    open_clip = pytest.importorskip("open_clip")
    from .conftest import add_noise

    cfg = open_clip.get_model_config(name)
    torch.manual_seed(0)
    ref = add_noise(open_clip.create_model(name, pretrained=None), std=0.02)
    model = load_open_clip(cfg, ref.state_dict())
    size, t = cfg["vision_cfg"]["image_size"], cfg["text_cfg"]["context_length"]
    ids, mask = siglip_texts(cfg["text_cfg"]["vocab_size"], t)
    images = torch.randn(3, 3, size, size)
    img_ref, txt_ref, logits_ref = _reference(ref, images, ids)
    with torch.no_grad():
        out = model(images, ids, mask)
    torch.testing.assert_close(out.image_embeds, img_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.text_embeds, txt_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits_per_image, logits_ref, atol=1e-5, rtol=0)
