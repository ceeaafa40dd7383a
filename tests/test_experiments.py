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
