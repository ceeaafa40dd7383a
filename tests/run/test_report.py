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


def test_headline_rows_name_the_numbers_a_terminal_shows():
    from mumo.run.report import headline_rows

    evaluation = {
        "zero_shot": {"top1": 0.5},
        "held_out": {"top1": 0.25},
        "zero_shot_paraphrased": {"top1": 0.125, "colour": 0.75, "shape": 1.0},
        "retrieval": {"n": 12, "text_to_image_R@1": 0.5, "image_to_text_R@1": 1 / 3},
        "compositional": {"relation": 0.6, "n_relation": 40},
        "captioning": {
            "n": 8,
            "CIDEr-D": 1.23456,
            "BLEU-4": 0.1,
            "METEOR": 0.25,
            "ROUGE-L": 0.5,
            "attribute_accuracy": 0.9,
        },
        "vqa": {"macro": 0.7, "per_kind": {"colour": 0.8}, "counts": {"colour": 5}},
        "perplexity": 12.345,
        "val_accuracy": 0.95,
        "test_accuracy": 0.875,
    }
    assert headline_rows(evaluation) == [
        ("zero-shot colour x shape top-1", "50.0 %"),
        ("held-out combinations top-1", "25.0 %"),
        ("zero-shot, paraphrased class names", "12.5 % (colour 75.0 %, shape 100.0 %)"),
        ("text->image R@1 (12 pairs)", "50.0 %"),
        ("image->text R@1 (12 pairs)", "33.3 %"),
        ("compositional: relation", "60.0 %"),
        ("captions: CIDEr-D (8 images)", "1.235"),
        ("captions: BLEU-4", "0.100"),
        ("captions: METEOR", "0.250"),
        ("captions: ROUGE-L", "0.500"),
        ("captions: attribute accuracy", "90.0 %"),
        ("VQA exact match (mean over kinds)", "70.0 %"),
        ("VQA: colour (5 questions)", "80.0 %"),
        ("held-out perplexity", "12.35"),
        ("val accuracy", "95.0 %"),
        ("test accuracy", "87.5 %"),
    ]
    assert headline_rows({}) == [] and headline_rows({"perplexity": 3.0}) == [("held-out perplexity", "3.00")]
