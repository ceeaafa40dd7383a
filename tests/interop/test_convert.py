"""`mumo convert` across formats: every hop keeps the same function."""

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import mumo
from mumo.cli import app
from mumo.interop import ClipTokenizer
from mumo.interop.convert import load_any, load_tokenizer

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("onnxruntime")

SMALL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_open_clip_to_mumo_to_hf_to_onnx(tmp_path):
    torch.manual_seed(0)
    ref = open_clip.CLIP(**SMALL).eval()
    src = tmp_path / "oc"
    src.mkdir()
    (src / "open_clip_config.json").write_text(json.dumps({"model_cfg": SMALL}))
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()}, str(src / "open_clip_model.safetensors")
    )
    invoke("convert", src, tmp_path / "m", "--from", "open_clip", "--to", "mumo")
    invoke("convert", tmp_path / "m", tmp_path / "h", "--from", "mumo", "--to", "hf")
    invoke("convert", tmp_path / "h", tmp_path / "o", "--from", "hf", "--to", "onnx")
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {"image_encoder.onnx", "text_encoder.onnx"}
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = ref.encode_image(images, normalize=True)
        for folder, kind in ((tmp_path / "m", "mumo"), (tmp_path / "h", "hf")):
            model, _ = load_any(folder, kind)
            torch.testing.assert_close(model.encode_image(images), expected, atol=1e-5, rtol=0)


def test_clip_tokenizer_travels_with_a_model_folder(tmp_path):
    spec = __import__("importlib.util").util.find_spec("open_clip")
    vocab = next(iter(spec.submodule_search_locations)) + "/bpe_simple_vocab_16e6.txt.gz"
    tok = ClipTokenizer.from_open_clip_vocab(vocab, context_length=16)
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": 49408})
    mumo.save_pretrained(model, tmp_path, tokenizer=tok)
    again = load_tokenizer(tmp_path, context_length=16)
    assert isinstance(again, ClipTokenizer)
    assert torch.equal(again.encode("a photo of a cat").input_ids, tok.encode("a photo of a cat").input_ids)


def test_bad_formats_are_one_line_errors(tmp_path):
    with pytest.raises(mumo.ConfigError, match="unknown source format"):
        load_any(tmp_path, "keras")
    with pytest.raises(mumo.ConfigError, match="needs its model config"):
        load_any(tmp_path / "w.bin", "open_clip")
