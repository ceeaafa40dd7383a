"""`mumo --help`, `mumo COMMAND --help` and usage mistakes answer without importing torch: each runs in a
fresh interpreter that then reports whether torch was imported."""

import json
import subprocess
import sys

import pytest

# Runs main(ARGV) in a fresh interpreter; prints its exit code, whether torch (and numpy) got imported and
# what it wrote to stderr, as one JSON line on stdout after the help text.
PROBE = """
import contextlib, io, json, sys
from mumo.cli import main
err = io.StringIO()
code = 0
with contextlib.redirect_stderr(err):
    try:
        main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
print("\\n" + json.dumps({"code": code, "torch": "torch" in sys.modules, "stderr": err.getvalue()}))
"""


def probe(*argv: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    result["stdout"] = r.stdout
    return result


@pytest.mark.parametrize(
    "argv, text",
    [
        (["--help"], "mumo: vision-language models in PyTorch."),
        (["train", "--help"], "Train a model from a recipe"),
        (["data", "shard", "--help"], "Convert image-caption pairs into WebDataset shards"),
        (["serve", "--help"], "--allow-host"),
    ],
)
def test_help_does_not_import_torch(argv, text):
    result = probe(*argv)
    assert result["code"] == 0 and text in result["stdout"], result
    assert not result["torch"], f"mumo {' '.join(argv)} imported torch"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trian"], "error: No such command 'trian'. Did you mean 'train'?"),
        (["train", "configs/demo.yaml", "--resum"], "error: no such option --resum; did you mean --resume?"),
        (["search", "index", "a red circle", "-k", "0"], "error: Invalid value for '-k'"),
        (["eval", "model", "--size", "one"], "error: Invalid value for '--size'"),
        (["data"], "error: missing a command: choose one of those listed above"),
    ],
)
def test_usage_errors_are_one_line_exit_2_without_torch(argv, message):
    result = probe(*argv)
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 2 and len(lines) == 1 and lines[0].startswith(message), result
    assert not result["torch"], f"mumo {' '.join(argv)} imported torch"


def test_a_command_that_runs_does_import_torch():
    """The probe itself can see torch: `mumo info` builds a model, so torch must show up."""
    result = probe("info", "clip_vit_tiny")
    assert result["code"] == 0 and result["torch"]


def test_python_dash_m_mumo_and_version_answer_without_torch():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['mumo', 'version']\n"
        "try:\n    runpy.run_module('mumo', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    from mumo.version import __version__

    assert r.returncode == 0 and r.stdout.split() == [__version__, "False"], r
