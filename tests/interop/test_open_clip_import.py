"""OpenCLIP as an oracle for mumo's Transformer core: same weights, same outputs (random init, offline)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from mumo.errors import CheckpointError, ConfigError
from mumo.interop.open_clip import clip_config_from_open_clip, load_open_clip

open_clip = pytest.importorskip("open_clip")

SMALL = {  # a third architecture, small: mean pooling, no ln_pre, QuickGELU, wide heads
    "embed_dim": 48,
    "quick_gelu": True,
    "vision_cfg": {
        "image_size": 64,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 16,
        "pool_type": "avg",
        "no_ln_pre": True,
    },
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def _texts(tokenizer):
    ids = tokenizer(["a photo of a cat", "a dog playing with a red ball in the park!", "x"])
    return ids, (ids != 0).long()  # no "!"-only rows here, so id 0 is padding


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16-quickgelu", "small"])
def test_embeddings_and_logits_match_open_clip(name):
    torch.manual_seed(0)
    if name == "small":
        cfg = SMALL
        ref = open_clip.CLIP(**{k: v for k, v in SMALL.items()}).eval()
        ids = torch.randint(1, 49406, (3, 24))
        ids[:, 0], ids[0, 23], ids[1, 10:] = 49406, 49407, 0
        ids[1, 9], ids[2, 3], ids[2, 4:] = 49407, 49407, 0
        mask = (ids != 0).long()
        size = 64
    else:
        cfg = open_clip.get_model_config(name)
        ref = open_clip.create_model(name, pretrained=None).eval()
        ids, mask = _texts(open_clip.get_tokenizer(name))
        size = 224
    model = load_open_clip(cfg, ref.state_dict())
    images = torch.randn(3, 3, size, size)
    with torch.no_grad():
        img_ref = ref.encode_image(images, normalize=True)
        txt_ref = ref.encode_text(ids, normalize=True)
        out = model(images, ids, mask)
    torch.testing.assert_close(out.image_embeds, img_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.text_embeds, txt_ref, atol=1e-5, rtol=0)
    logits_ref = ref.logit_scale.exp() * img_ref @ txt_ref.T
    torch.testing.assert_close(out.logits_per_image, logits_ref, atol=1e-5, rtol=0)


def test_reads_safetensors_and_weights_only_pt_files(tmp_path):
    torch.manual_seed(0)
    ref = open_clip.CLIP(**SMALL).eval()
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": SMALL}))
    a = load_open_clip(tmp_path / "open_clip_config.json", tmp_path / "w.safetensors")
    b = load_open_clip(SMALL, tmp_path / "w.pt")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k


def test_every_mismatch_is_named():
    ref = open_clip.CLIP(**SMALL)
    state = dict(ref.state_dict())
    del state["ln_final.weight"]
    state["visual.extra"] = torch.zeros(1)
    state["visual.proj"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as e:
        load_open_clip(SMALL, state)
    msg = str(e.value)
    assert "missing ['text.norm.weight']" in msg and "unexpected ['visual.extra']" in msg
    assert "image_proj.weight: (3, 3) != (48, 64)" in msg


def test_unsupported_towers_are_refused_by_name():
    with pytest.raises(ConfigError, match="attentional_pool"):
        clip_config_from_open_clip({**SMALL, "vision_cfg": {**SMALL["vision_cfg"], "attentional_pool": True}})
    with pytest.raises(ConfigError, match="timm_model_name"):
        clip_config_from_open_clip({**SMALL, "vision_cfg": {"timm_model_name": "convnext_base"}})
    with pytest.raises(ConfigError, match="needs 'embed_dim'"):
        clip_config_from_open_clip({"embed_dim": 4})
