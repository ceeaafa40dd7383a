"""The scripts behind the README's findings still run against the current API."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_vqa_synthetic_context_probe_trains_and_reports_per_kind_accuracy():
    script = ROOT / "experiments" / "vqa_synthetic_context.py"
    args = [
        "--steps",
        "3",
        "--report-every",
        "3",
        "--batch",
        "16",
        "--pos-embed",
        "rope",
        "--without",
        "count",
    ]
    out = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    line = out.strip().splitlines()[-1]
    assert line.startswith("step 3  loss ")
    assert "colour" in line and "position" in line and "count" not in line


def test_digits_transfer_runs_every_method_and_writes_its_tables(tmp_path):
    import mumo
    from mumo.data.tokenizer import Tokenizer

    pretrained = tmp_path / "pretrained"
    model = mumo.create_model("clip_conv_tiny", seed=0, **{"text.vocab_size": 300})
    tokenizer = Tokenizer.train(["a photo of the digit one.", "a red circle"] * 20, 300)
    mumo.save_pretrained(model, pretrained, tokenizer)
    script = ROOT / "experiments" / "digits_transfer.py"
    args = ["--pretrained", str(pretrained), "--out", str(tmp_path / "out"), "--seeds", "0", "--steps", "2"]
    args += ["--alphas", "0", "1", "--size", "36"]
    out = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=600, check=True
    ).stdout
    assert "linear probe (L-BFGS" in out and "seed 0: full" in out
    table = (tmp_path / "out" / "digits_transfer.md").read_text()
    assert "| LoRA" in table and "## WiSE-FT: LP-FT" in table and table.count("| 1 |") == 2
