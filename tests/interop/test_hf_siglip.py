"""Hugging Face SiglipModel <-> mumo, checked against transformers on tiny random-init models with noise on
every parameter; and the ONNX export of a SigLIP model."""

import json
import math

import pytest
import torch

import mumo
from mumo.data.sentencepiece_tokenizer import SentencePieceTokenizer
from mumo.errors import ConfigError
from mumo.interop.export import export_onnx
from mumo.interop.hf_siglip import load_hf_siglip, save_hf_siglip, siglip_config_from_hf

from .conftest import add_noise, siglip_texts

transformers = pytest.importorskip("transformers")

TEXT = dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=16, projection_size=48, pad_token_id=1, eos_token_id=1)  # fmt: skip
VISION = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3, image_size=32,
              patch_size=8)  # fmt: skip


def _diffs(hf, model, images, ids, mask):
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=images)  # SigLIP is called without a mask: pads are attended
        out = model(images, ids, mask)
    return {
        "image": (out.image_embeds - ref.image_embeds).abs().max().item(),
        "text": (out.text_embeds - ref.text_embeds).abs().max().item(),
        "logits": (out.logits_per_image - ref.logits_per_image).abs().max().item(),
    }


@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "gelu"])
def test_hf_to_mumo_matches_transformers(tmp_path, spiece_model, act):
    torch.manual_seed(0)
    config = transformers.SiglipConfig(
        text_config={**TEXT, "hidden_act": act}, vision_config={**VISION, "hidden_act": act}
    )
    hf = transformers.SiglipModel(config)
    with torch.no_grad():  # SigLIP's starting scale and bias (HF initialises both at 0), so logits are ~10
        hf.logit_scale.fill_(math.log(10))
        hf.logit_bias.fill_(-10.0)
    hf = add_noise(hf)
    hf.save_pretrained(tmp_path)
    (tmp_path / "spiece.model").write_bytes(spiece_model.read_bytes())
    model, tok = load_hf_siglip(tmp_path)
    assert isinstance(tok, SentencePieceTokenizer) and tok.context_length == 16
    images = torch.randn(3, 3, 32, 32)
    ids, mask = siglip_texts(160, 16)
    diffs = _diffs(hf, model, images, ids, mask)
    print(f"HF -> mumo ({act}) max abs diff: {diffs}")
    assert max(diffs.values()) <= 1e-5, diffs


def test_mumo_to_hf_loads_in_siglip_model_and_matches(tmp_path, spiece_model):
    model = add_noise(mumo.create_model("siglip_map_vit_tiny", seed=0))
    tok = SentencePieceTokenizer(spiece_model.read_bytes(), context_length=16)
    save_hf_siglip(model, tmp_path, tokenizer=tok)
    hf = transformers.SiglipModel.from_pretrained(tmp_path).eval()
    images = torch.randn(3, 3, 32, 32)
    ids, mask = siglip_texts(320, 16)
    diffs = _diffs(hf, model, images, ids, mask)
    print(f"mumo -> HF max abs diff: {diffs}")
    assert max(diffs.values()) <= 1e-5, diffs
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    texts = ["a photo of a cat", "Two dogs, in the park!"]
    expected = hf_tok(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert torch.equal(tok.encode(texts).input_ids, expected["input_ids"])
    back, _ = load_hf_siglip(tmp_path)  # and back: the same tensors
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_mumo_to_onnx_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    model = add_noise(mumo.create_model("siglip_map_vit_tiny", seed=0))
    from mumo.interop.export import check_onnx

    ort = pytest.importorskip("onnxruntime")
    paths = export_onnx(model, tmp_path, check=False)
    diffs = check_onnx(model, paths, atol=1e-5)  # batches 1 and 3, texts of 16 and 8 tokens
    config = json.loads(paths["config"].read_text())
    images = torch.randn(3, 3, 32, 32)
    ids, mask = siglip_texts(320, 16)
    image_embeds = ort.InferenceSession(str(paths["image"])).run(None, {"images": images.numpy()})[0]
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    text_embeds = ort.InferenceSession(str(paths["text"])).run(None, feeds)[0]
    logits = config["logit_scale"] * torch.from_numpy(image_embeds @ text_embeds.T) + config["logit_bias"]
    with torch.no_grad():
        diffs["logits"] = (logits - model(images, ids, mask).logits_per_image).abs().max().item()
    print(f"mumo -> ONNX max abs diff: {diffs}")
    assert max(diffs.values()) <= 1e-5, diffs


@pytest.mark.parametrize(
    "change, match",
    [
        ({"vision_config": {"vision_use_head": False}}, "vision_use_head"),
        ({"text_config": {"projection_size": 32}}, "projection_size"),
        ({"text_config": {"hidden_act": "relu"}}, "hidden_act"),
        ({"model_type": "clip"}, "model_type 'siglip'"),
    ],
)
def test_unsupported_configs_are_refused_by_name(change, match):
    base = {"model_type": "siglip", "text_config": dict(TEXT), "vision_config": dict(VISION)}
    bad = {**base, **{k: {**base[k], **v} if isinstance(v, dict) else v for k, v in change.items()}}
    with pytest.raises(ConfigError, match=match):
        siglip_config_from_hf(bad)


def test_a_clip_model_is_refused_as_siglip(tmp_path):
    with pytest.raises(ConfigError, match="MAP head"):
        save_hf_siglip(mumo.create_model("clip_vit_tiny", seed=0), tmp_path)
