"""`mumo train`, `finetune`, `demo`, `compare`, `report` (mumo.cli.train), through typer's CliRunner on tiny
runs; `train` itself runs in the run_dir fixture (conftest)."""

import json

from typer.testing import CliRunner

from mumo.cli import app

runner = CliRunner()


def test_demo_with_tiny_overrides(invoke, tiny, tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--out", str(out), *tiny, "data.test_size=16")
    assert "report:" in result.output
    report = (out / "report.md").read_text()
    for picture in ("curves.png", "similarity.png", "confusion.png"):
        assert picture in report and (out / picture).is_file()
    assert "| zero_shot / top1 |" in report
    assert len(list((out / "data_sample" / "images").glob("*.png"))) == 64
    (out / "report.md").unlink()
    (out / "report.html").unlink()
    assert "report:" in invoke("report", str(out)).output and (out / "report.md").is_file()
    assert (out / "report.html").is_file()


def test_compare_command_prints_and_writes_the_table(invoke, tmp_path):
    common = "\n".join(["batch_size: 8", "max_steps: 2", "threads: 1", "tensorboard: false"])
    data = "data: {image_size: 32, train_size: 64, tokenizer_samples: 100, tokenizer_vocab_size: 300}"
    (tmp_path / "dual.yaml").write_text(f"{common}\n{data}\nmodel: clip_conv_tiny\n")
    (tmp_path / "early.yaml").write_text(f"{common}\n{data}\nmodel: single_stream_tiny\nobjectives: [itm]\n")
    out = tmp_path / "out"
    result = invoke(
        "compare",
        str(tmp_path / "dual.yaml"),
        str(tmp_path / "early.yaml"),
        "--out",
        str(out),
        "--size",
        "4",
        "--retrieval-size",
        "4",
        "--set",
        "log_every=1",
    )
    assert "| dual | itc |" in result.output and "| early | itm |" in result.output
    assert (out / "compare.md").is_file() and (out / "early" / "final" / "config.json").is_file()


def _digit_folder(root):
    """A class-folder tree of real digit scans (two classes, 12 images each) written as PNGs."""
    from PIL import Image

    from mumo.data.digits import load_digits_split

    images, labels = load_digits_split("train", image_size=32)
    for c, name in enumerate(("zero", "one")):
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images[labels == c][:12]):
            Image.fromarray((image.permute(1, 2, 0) * 255).byte().numpy()).save(root / name / f"{i}.png")
    return root


def test_finetune_probe_and_wise_ft_sweep(invoke, run_dir, tmp_path):
    recipe = tmp_path / "ft.yaml"
    recipe.write_text("objectives: [cls]\ndata:\n  kind: digits\n")
    args = [f"init_from={run_dir}", "data.image_size=32", "batch_size=16", "max_steps=3", "tensorboard=false"]
    ft = tmp_path / "ft"
    result = invoke("finetune", str(recipe), *args, f"out_dir={ft}", "finetune.lora_rank=2")
    assert "training " in result.output and "test accuracy" in result.output
    assert (ft / "final" / "adapter.safetensors").is_file()
    report = tmp_path / "sweep.json"
    result = invoke(
        "interpolate", str(run_dir), str(ft), "--sweep", "0,1", "--size", "36", "--report", str(report)
    )
    assert "digits test accuracy" in result.output and "sweeping" not in result.output  # no bar in a pipe
    rows = json.loads(report.read_text())["rows"]
    assert [r["alpha"] for r in rows] == [0.0, 1.0]
    assert all(0.0 <= r["target"] <= 1.0 and 0.0 <= r["zero_shot"] <= 1.0 for r in rows)
    # fine-tuning needs a starting point
    failed = runner.invoke(app, ["finetune", str(recipe), "data.kind=shapes", "objectives=[itc]"])
    assert failed.exit_code != 0 and "init_from" in str(failed.exception)


def test_probe_and_finetune_on_an_image_folder(invoke, run_dir, tmp_path):
    root = _digit_folder(tmp_path / "digits")
    result = invoke("probe", str(run_dir), "--data", str(root))
    assert "linear probe on" in result.output
    recipe = tmp_path / "folder.yaml"
    recipe.write_text("objectives: [cls]\ndata:\n  kind: imagefolder\n")
    out = tmp_path / "ft"
    args = [f"init_from={run_dir}", f"data.path={root}", "data.image_size=32", "batch_size=8", "max_steps=2"]
    result = invoke("finetune", str(recipe), *args, f"out_dir={out}", "tensorboard=false")
    assert "val accuracy" in result.output
    import mumo

    assert mumo.load_pretrained(out / "final").class_names == ("one", "zero")
