"""`mumo models`, `list-models`, `info` (mumo.cli.models), in a subprocess as a user runs them."""

import json
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mumo", *args], capture_output=True, text=True, timeout=120)


def test_models_lists_registry_with_parameter_counts():
    r = run("models", "clip_vit_b*")
    assert r.returncode == 0
    assert "clip_vit_b32" in r.stdout and "151.28 M" in r.stdout and "clip_vit_l14" not in r.stdout


def test_info_prints_config_json():
    r = run("info", "clip_vit_tiny")
    assert r.returncode == 0
    config = json.loads(r.stdout[: r.stdout.rindex("}") + 1])
    assert config["vision"]["patch_size"] == 8 and "parameters: 70,529" in r.stdout


def test_unknown_model_is_one_line_and_exit_2():
    r = run("info", "clip_vit_b3")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: unknown model 'clip_vit_b3' — did you mean 'clip_vit_b32', 'clip_vit_b16', 'clip_vit_l14'? "
        "(see `mumo models` for the list)"
    ]


def test_list_models(invoke):
    assert "clip_conv_mini_64" in invoke("list-models").output
