"""`mumo convert` of an OpenCLIP SigLIP hub folder (config, weights, spiece.model), then `mumo embed --texts`
on the result, with no file added by hand: the texts embed as OpenCLIP embeds them."""

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from mumo.cli import app
from mumo.data.sentencepiece_tokenizer import SentencePieceTokenizer
from mumo.errors import ConfigError
from mumo.interop.convert import load_any

TEXTS = ["a photo of a cat", "Two dogs, playing in the park!", "the_small red ball", "zebra"]


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def hub_folder(open_clip_siglip, spiece_model, tmp_path):
    """An OpenCLIP SigLIP repository as on the hub: open_clip_config.json, open_clip_model.safetensors,
    spiece.model and tokenizer_config.json."""
    ref, cfg = open_clip_siglip
    src = tmp_path / "ViT-tiny-SigLIP"
    src.mkdir()
    (src / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(src / "open_clip_model.safetensors"))
    (src / "spiece.model").write_bytes(spiece_model.read_bytes())
    (src / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "SiglipTokenizer", "model_max_length": 16})
    )
    return ref, src


def test_convert_then_embed_texts_matches_open_clip(hub_folder, tmp_path):
    open_clip = pytest.importorskip("open_clip")
    ref, src = hub_folder
    invoke("convert", src, tmp_path / "m", "--from", "open_clip", "--to", "mumo")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "manifest.json",
    }
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    invoke("embed", tmp_path / "m", "--texts", tmp_path / "texts.txt", "--out", tmp_path / "e.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    got = torch.tensor([r["embedding"] for r in rows])
    # OpenCLIP's own tokenizer for this model: transformers' SiglipTokenizer from the folder, cleaned with
    # clean='canonicalize' (what the config's tokenizer_kwargs ask)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(src), context_length=16, clean="canonicalize")
    with torch.no_grad():
        expected = ref.encode_text(tokenizer(TEXTS), normalize=True)
    diff = (got - expected).abs().max().item()
    print(f"convert + embed --texts vs OpenCLIP: max abs diff {diff:.3g}")
    assert [r["name"] for r in rows] == TEXTS and diff <= 1e-5


def test_a_folder_without_spiece_model_is_refused_by_name(hub_folder):
    _, src = hub_folder
    model, tok = load_any(src, "open_clip")
    assert isinstance(tok, SentencePieceTokenizer) and tok.context_length == 16
    assert tok.clean_mode == "open_clip"
    (src / "spiece.model").unlink()
    # a converted folder must carry its tokenizer; CLIP's would give wrong text embeddings
    with pytest.raises(ConfigError, match=r"put that repository's spiece.model .* or pass --tokenizer"):
        load_any(src, "open_clip")


def test_open_clip_to_hf_to_mumo_to_onnx_keeps_the_function(hub_folder, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    ref, src = hub_folder
    invoke("convert", src, tmp_path / "h", "--from", "open_clip", "--to", "hf")
    assert (tmp_path / "h" / "spiece.model").is_file()
    invoke("convert", tmp_path / "h", tmp_path / "m", "--from", "hf", "--to", "mumo")
    invoke("convert", tmp_path / "m", tmp_path / "o", "--from", "mumo", "--to", "onnx")
    invoke("convert", tmp_path / "h", tmp_path / "h", "--from", "hf", "--to", "hf")  # replaced whole
    hf = transformers.SiglipModel.from_pretrained(tmp_path / "h").eval()
    model, tok = load_any(tmp_path / "m", "mumo")
    assert isinstance(tok, SentencePieceTokenizer)
    images = torch.randn(2, 3, 32, 32)
    batch = tok.encode(TEXTS)
    with torch.no_grad():
        expected = ref.encode_image(images, normalize=True)
        torch.testing.assert_close(hf(pixel_values=images, input_ids=batch.input_ids).image_embeds, expected)
        torch.testing.assert_close(model.encode_image(images), expected, atol=1e-5, rtol=0)
        txt = ref.encode_text(batch.input_ids, normalize=True)
        torch.testing.assert_close(
            model.encode_text(batch.input_ids, batch.attention_mask), txt, atol=1e-5, rtol=0
        )


def test_converted_siglip_images_are_normalised_as_siglip_was_trained(hub_folder, tmp_path):
    from PIL import Image

    ref, src = hub_folder
    invoke("convert", src, tmp_path / "m", "--from", "open_clip", "--to", "mumo")
    size = ref.visual.image_size[0] if isinstance(ref.visual.image_size, tuple) else ref.visual.image_size
    pixels = torch.randint(0, 256, (2, size, size, 3), generator=torch.Generator().manual_seed(0))
    (tmp_path / "images").mkdir()
    for i, p in enumerate(pixels):
        Image.fromarray(p.to(torch.uint8).numpy()).save(tmp_path / "images" / f"{i}.png")
    invoke("embed", tmp_path / "m", "--images", tmp_path / "images", "--out", tmp_path / "e.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    got = torch.tensor([r["embedding"] for r in rows])
    # SigLIP's preprocessing: pixels / 255, then (x - 0.5) / 0.5 (the sizes match: no resize or crop)
    x = (pixels.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        expected = ref.encode_image(x, normalize=True)
    assert (got - expected).abs().max().item() <= 1e-5
