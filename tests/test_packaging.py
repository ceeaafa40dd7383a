"""The wheel: built from the sources, installed into a fresh environment, it runs `mumo demo` from a folder
outside the repository, with the recipes, the server's page and the type marker inside the package.

Offline: the wheel is built without build isolation (setuptools from this environment, the dev extra's), and
the fresh venv reuses this environment's installed dependencies through a ``.pth`` line instead of
downloading them; the wheel itself goes in with ``--no-deps``.
"""

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "mumo"


def _run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    """Run a command; fail the test with the end of its output when it exits non-zero."""
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, f"{' '.join(map(str, args[:4]))} ... exited {done.returncode}:\n{output}"
    return done.stdout


def _shipped_data() -> set[str]:
    """The wheel paths of every recipe and every file of the server's page in the sources."""
    static = [p for p in (PACKAGE / "serve" / "static").rglob("*") if p.is_file()]  # Swagger UI in a folder
    files = [*(PACKAGE / "run" / "recipes").rglob("*.yaml"), *static]
    return {f"mumo/{p.relative_to(PACKAGE).as_posix()}" for p in files}


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_demo_outside_the_repository(tiny_run, tmp_path):
    # No PYTHONPATH (it may point at the sources), no user site: the fresh venv must find mumo in itself.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE")}
    env |= {"PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources, and a build/lib left by
    # an earlier build would slip files the sources no longer have into the wheel.
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    pip_wheel = ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", wheels]
    _run([sys.executable, *pip_wheel, source], tmp_path, env)
    (wheel,) = wheels.glob("mumo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"mumo/run/recipes/demo.yaml", "mumo/run/recipes/compare/dual.yaml", "mumo/py.typed"} <= names
    assert {"mumo/serve/static/index.html", "mumo/serve/static/app.js"} <= names
    assert _shipped_data() <= names, sorted(_shipped_data() - names)

    # A fresh venv that sees this environment's site-packages as a plain path: its .pth files, among them
    # the editable install of the sources (``__editable__.mumo-*.pth``), are not processed, and the venv's
    # own site-packages comes first on sys.path.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    fresh_site = Path(_run([python, "-c", purelib], tmp_path, env).strip())
    (fresh_site / "_mumo_test_dependencies.pth").write_text("".join(f"{d}\n" for d in site.getsitepackages()))
    # pip runs from this environment's site-packages, installing into the venv; -I: the editable mumo that
    # pip can see there is neither taken as already installed nor uninstalled
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-I", "-q", wheel], tmp_path, env)

    work = tmp_path / "work"  # outside the repository: recipes must come from the installed package
    work.mkdir()
    where = _run([python, "-c", "import mumo; print(mumo.__file__)"], work, env).strip()
    assert Path(where).is_relative_to(fresh_site), where
    mumo = venv / "bin" / "mumo"
    assert mumo.read_text().splitlines()[0] == f"#!{python}"
    _run([mumo, "demo", "--out", "demo", *tiny_run], work, env)
    out = work / "demo"
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "config.json").is_file()
    assert (out / "report.html").is_file() and "| zero_shot / top1 |" in (out / "report.md").read_text()
