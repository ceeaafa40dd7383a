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
    assert "1 missing (text.norm.weight)" in msg and "1 unexpected (visual.extra)" in msg
    assert "1 wrong shape (image_proj.weight: (3, 3) != (48, 64))" in msg


def test_unsupported_towers_are_refused_by_name():
    with pytest.raises(ConfigError, match="attentional_pool"):
        clip_config_from_open_clip({**SMALL, "vision_cfg": {**SMALL["vision_cfg"], "attentional_pool": True}})
    with pytest.raises(ConfigError, match="timm_model_name"):
        clip_config_from_open_clip({**SMALL, "vision_cfg": {"timm_model_name": "convnext_base"}})
    with pytest.raises(ConfigError, match="needs 'embed_dim'"):
        clip_config_from_open_clip({"embed_dim": 4})


def test_last_position_pooling_is_refused_by_name():
    # OpenCLIP's pool_type "last" takes x[:, -1], the last position whatever the padding; mumo's text
    # tower pools at the last real token, which gives another embedding for any padded text.
    torch.manual_seed(0)
    text_cfg = {**SMALL["text_cfg"], "pool_type": "last"}
    ref = open_clip.CLIP(**{**SMALL, "text_cfg": text_cfg}).eval()
    ids = torch.randint(1, 49406, (2, 24))
    ids[0, 10:] = 0
    with torch.no_grad():
        last = ref.encode_text(ids)
        ref.text_pool_type = "argmax"
        at_end = ref.encode_text(ids)
    assert (last[0] - at_end[0]).abs().max() > 1e-3  # a different model, not a rounding difference
    with pytest.raises(ConfigError, match="text_cfg.pool_type='last'"):
        clip_config_from_open_clip({**SMALL, "text_cfg": text_cfg})
    with pytest.raises(ConfigError, match="text_cfg.pool_type='last'"):
        load_open_clip({**SMALL, "text_cfg": text_cfg}, ref.state_dict())


def test_resnet_towers_are_refused_by_name():
    rn = {  # the shape of open_clip's RN50.json, tiny
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    with pytest.raises(ConfigError, match=r"vision_cfg.layers=\[1, 1, 1, 1\].*ModifiedResNet"):
        clip_config_from_open_clip(rn)


@pytest.mark.parametrize(
    "cfg, match",
    [
        ([1, 2], "must be a JSON object"),
        ({**SMALL, "vision_cfg": {**SMALL["vision_cfg"], "width": "wide"}}, "vision_cfg.width='wide'"),
        ({**SMALL, "text_cfg": [1]}, "text_cfg must be a JSON object"),
    ],
)
def test_malformed_configs_are_one_line_errors(cfg, match):
    with pytest.raises(ConfigError, match=match) as e:
        clip_config_from_open_clip(cfg)
    assert "\n" not in str(e.value)


def test_a_model_name_or_a_broken_file_as_config_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="model_configs/ViT-B-32.json") as e:
        load_open_clip("ViT-B-32", tmp_path / "w.safetensors")
    assert "\n" not in str(e.value)
    broken = tmp_path / "cfg.json"
    broken.write_text('{"embed_dim": 32,')
    with pytest.raises(ConfigError, match="cfg.json is not valid JSON"):
        load_open_clip(broken, tmp_path / "w.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_damaged_weights_files_are_one_line_errors(tmp_path, suffix):
    torch.manual_seed(0)
    ref = open_clip.CLIP(**SMALL)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"w{suffix}") as e:
        load_open_clip(SMALL, path)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400, str(e.value)
