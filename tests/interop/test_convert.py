"""`mumo convert` across formats: every hop keeps the same function."""

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import mumo
from mumo.cli import app
from mumo.data.tokenizer import load_tokenizer
from mumo.errors import ExportError
from mumo.interop import ClipTokenizer
from mumo.interop.convert import convert, load_any

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
    texts = ["a photo of a cat", "Two red circles & a square!"]
    ids = open_clip.tokenize(texts, context_length=16)  # what OpenCLIP feeds its text tower
    with torch.no_grad():
        expected = ref.encode_image(images, normalize=True)
        expected_text = ref.encode_text(ids, normalize=True)
        for folder, kind in ((tmp_path / "m", "mumo"), (tmp_path / "h", "hf")):
            model, tokenizer = load_any(folder, kind)  # every folder carries OpenCLIP's tokenizer
            torch.testing.assert_close(model.encode_image(images), expected, atol=1e-5, rtol=0)
            tokens = tokenizer.encode(texts)
            assert torch.equal(tokens.input_ids, ids)
            torch.testing.assert_close(
                model.encode_text(tokens.input_ids, tokens.attention_mask), expected_text, atol=1e-5, rtol=0
            )
    assert isinstance(load_tokenizer(tmp_path / "o", context_length=16), ClipTokenizer)


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


def _mumo_folder(path, name="clip_vit_tiny"):
    return mumo.save_pretrained(mumo.create_model(name, seed=0), path)


def _hf_folder(path):
    from mumo.interop.hf_clip import save_hf_clip

    return save_hf_clip(mumo.create_model("clip_vit_tiny", seed=0), path)


def _open_clip_folder(path):
    torch.manual_seed(0)
    path.mkdir()
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": SMALL}))
    state = {k: v.contiguous() for k, v in open_clip.CLIP(**SMALL).state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))
    return path


def test_a_folder_of_another_format_is_refused_by_name(tmp_path):
    mumo_dir, hf_dir = _mumo_folder(tmp_path / "m"), _hf_folder(tmp_path / "h")
    oc_dir = _open_clip_folder(tmp_path / "oc")
    with pytest.raises(mumo.ConfigError, match="is a mumo model folder.*use --from mumo"):
        load_any(mumo_dir, "hf")
    with pytest.raises(mumo.ConfigError, match="is a mumo model folder.*use --from mumo"):
        load_any(mumo_dir, "open_clip")
    with pytest.raises(mumo.ConfigError, match="is a Hugging Face CLIP folder.*use --from hf"):
        load_any(hf_dir, "mumo")
    with pytest.raises(mumo.ConfigError, match="is an OpenCLIP folder.*use --from open_clip"):
        load_any(oc_dir, "mumo")
    with pytest.raises(mumo.ConfigError, match="is an OpenCLIP folder.*use --from open_clip"):
        load_any(oc_dir, "hf")


def main_exit(monkeypatch, capsys, *argv):
    from mumo.cli import main

    monkeypatch.setattr("sys.argv", ["mumo", *map(str, argv)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def test_the_target_is_checked_before_converting(tmp_path, monkeypatch, capsys):
    src = _mumo_folder(tmp_path / "m")
    (tmp_path / "file").write_text("not a folder")
    err = main_exit(monkeypatch, capsys, "convert", src, tmp_path / "file", "--from", "mumo", "--to", "hf")
    assert "is an existing file" in err
    assert (tmp_path / "file").read_text() == "not a folder"
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    err = main_exit(monkeypatch, capsys, "convert", src, other, "--from", "mumo", "--to", "mumo")
    assert "not empty" in err and "photos" in err
    assert [p.name for p in other.iterdir()] == ["cat.jpg"]
    # a mumo folder is no target for --to hf: its files would be mixed with HF's
    err = main_exit(monkeypatch, capsys, "convert", src, src, "--from", "mumo", "--to", "hf")
    assert "not empty" in err


def test_a_folder_of_the_same_format_is_replaced_whole(tmp_path):
    src = _mumo_folder(tmp_path / "m")
    out = tmp_path / "out"
    tok = mumo.Tokenizer.train(["a red circle"] * 5, vocab_size=300, context_length=16)
    mumo.save_pretrained(mumo.create_model("clip_vit_tiny", seed=1), out, tokenizer=tok)
    assert convert(src, out, "mumo", "mumo") == out
    # the old tokenizer does not survive next to the new model it does not belong to
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    model, tokenizer = load_any(out, "mumo")
    assert tokenizer is None
    expected = mumo.create_model("clip_vit_tiny", seed=0).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_convert_errors_end_to_end_are_one_line(tmp_path):
    import subprocess
    import sys

    src = _mumo_folder(tmp_path / "m")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mumo",
            "convert",
            str(src),
            str(tmp_path / "h"),
            "--from",
            "hf",
            "--to",
            "mumo",
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "use --from mumo" in run.stderr, run.stderr
    assert not (tmp_path / "h").exists()


def test_open_clip_config_given_as_a_model_name_is_one_line(tmp_path, monkeypatch, capsys):
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.CLIP(**SMALL).state_dict().items()}, str(weights))
    err = main_exit(
        monkeypatch,
        capsys,
        "convert",
        weights,
        tmp_path / "o",
        "--from",
        "open_clip",
        "--to",
        "mumo",
        "--config",
        "ViT-B-32",
    )
    assert "model_configs/ViT-B-32.json" in err


def test_mumo_bpe_tokenizer_travels_mumo_hf_mumo(tmp_path):
    # reading an HF folder back took its tokenizer.json for CLIP's and refused mumo's own BPE
    tok = mumo.Tokenizer.train(["a red circle", "a blue star"] * 10, vocab_size=300, context_length=16)
    mumo.save_pretrained(mumo.create_model("clip_vit_tiny", seed=0), tmp_path / "m", tokenizer=tok)
    convert(tmp_path / "m", tmp_path / "h", "mumo", "hf")
    convert(tmp_path / "h", tmp_path / "back", "hf", "mumo")
    _, again = load_any(tmp_path / "back", "mumo")
    assert isinstance(again, mumo.Tokenizer)
    assert torch.equal(again.encode("a red star").input_ids, tok.encode("a red star").input_ids)


@pytest.mark.parametrize("to", ["mumo", "hf"])
def test_an_output_that_reads_back_wrong_is_refused(tmp_path, monkeypatch, to):
    import mumo.interop.convert as module

    src = _mumo_folder(tmp_path / "m")
    other = mumo.create_model("clip_vit_tiny", seed=1)
    name = "save_pretrained" if to == "mumo" else "save_hf_clip"
    real = getattr(module, name)
    monkeypatch.setattr(
        module, name, lambda model, folder, tokenizer=None: real(other, folder, tokenizer=tokenizer)
    )
    with pytest.raises(ExportError, match="image embeddings differ from the source's"):
        convert(src, tmp_path / "out", "mumo", to)
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_where_an_open_clip_models_tokenizer_comes_from(tmp_path, monkeypatch):
    import mumo.interop.convert as module

    src = _open_clip_folder(tmp_path / "oc")
    vocab = __import__("pathlib").Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    monkeypatch.setattr(module, "_open_clip_vocab", lambda: None)  # open_clip not installed
    with pytest.raises(
        mumo.ConfigError, match="holds no tokenizer and open_clip is not installed; pass --tok"
    ):
        load_any(src, "open_clip")
    _, tok = load_any(src, "open_clip", tokenizer=vocab)  # --tokenizer
    assert isinstance(tok, ClipTokenizer) and tok.context_length == 16
    tok.save(src / "tokenizer.json")  # a hub folder's own tokenizer files come first
    assert isinstance(load_any(src, "open_clip")[1], ClipTokenizer)
    (src / "tokenizer.json").unlink()
    cfg = {
        "model_cfg": {**SMALL, "text_cfg": {**SMALL["text_cfg"], "hf_tokenizer_name": "timm/ViT-B-16-SigLIP"}}
    }
    (src / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(mumo.ConfigError, match="tokenizes with 'timm/ViT-B-16-SigLIP'"):
        load_any(src, "open_clip")
