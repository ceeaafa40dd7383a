"""Run reports: every run writes report.html (self-contained, every run text escaped) and report.md with
the metrics, training curves, confusion matrix, retrieval grid and, for captioners, captioned images."""

import json
import re

import pytest

from mumo.run.report import write_report
from mumo.run.train import train
from mumo.train import load_recipe

TINY = [
    "batch_size=16",
    "data.image_size=32",
    "data.train_size=256",
    "data.tokenizer_samples=200",
    "data.tokenizer_vocab_size=300",
    "data.test_size=32",
    "data.val_size=16",
    "max_steps=4",
    "log_every=1",
    "checkpoint_every=4",
    "tensorboard=false",
    "threads=1",
]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    train(load_recipe(None, [*TINY, "model=clip_vit_tiny", f"out_dir={out}"]), progress=False)
    return out


def test_a_training_run_writes_both_reports(clip_run):
    page = (clip_run / "report.html").read_text()
    md = (clip_run / "report.md").read_text()
    for title in ("Metrics", "Training curves", "Similarity of 16 test pairs", "Zero-shot confusion matrix"):
        assert title in page and title in md
    assert "Retrieval: test captions and their top images" in page
    # the retrieval grid: 6 queries with 5 images each, inline; the page needs no other file
    grid = page.split("Retrieval: test captions")[1]
    assert grid.count('<tr><td class="text">') == 6 and len(re.findall(r'alt="rank \d"', grid)) == 30
    assert 'src="data:image/png;base64,' in page and not re.search(r'src="(?!data:)', page)
    assert "| zero_shot / top1 |" in md and (clip_run / "curves.png").is_file()


def test_the_curves_have_loss_lr_and_temperature(clip_run):
    from PIL import Image

    rows = [json.loads(line) for line in (clip_run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "temperature"} <= set(rows[0])
    width, height = Image.open(clip_run / "curves.png").size
    assert width > 2.5 * height  # three panels side by side


def test_report_rebuilds_and_escapes_every_run_text(clip_run, tmp_path):
    """A run whose captions hold markup (a captioner trained on such text writes it): the page shows the
    text and creates no element from it."""
    metrics = json.loads((clip_run / "metrics.json").read_text())
    metrics["eval"]["captioning"] = {
        "bleu4": 0.5,
        "examples": [['<script>alert("x")</script> a red circle', "a <b>red</b> circle"]],
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    path = write_report(tmp_path)
    page = path.read_text()
    assert path.name == "report.html" and (tmp_path / "report.md").is_file()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; a red circle" in page
    assert "<script" not in page and "<b>" not in page
    assert "Generated captions" in page


def test_a_captioner_run_shows_its_images_with_captions(tmp_path):
    overrides = [*TINY, "model=captioner_conv_tiny", "objectives=[lm]", "data.tokenizer_vocab_size=320"]
    train(load_recipe(None, [*overrides, f"out_dir={tmp_path}"]), progress=False)
    page = (tmp_path / "report.html").read_text()
    section = page.split("Generated captions (first test images)")[1]
    assert section.count('<img alt="test image" src="data:image/png;base64,') == 8
    assert "captioning / bleu4" in page or "captioning / " in page
