"""The CLI verbs, through typer's CliRunner, on a tiny model trained for a few steps."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from mumo.cli import app

runner = CliRunner()
TINY = [
    "model=clip_vit_tiny",
    "batch_size=8",
    "data.image_size=32",
    "data.train_size=64",
    "data.tokenizer_samples=200",
    "data.tokenizer_vocab_size=300",
    "data.test_size=16",
    "max_steps=4",
    "log_every=2",
    "checkpoint_every=2",
    "tensorboard=false",
]


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    recipe = out / "recipe.yaml"
    recipe.write_text("evaluate: true\n")
    result = invoke("train", str(recipe), *TINY, f"out_dir={out}")
    assert "model saved to" in result.output and "zero-shot colour x shape top-1" in result.output
    return out


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    result = invoke("data", "shapes", "--out", str(out), "--n", "6", "--split", "test", "--image-size", "32")
    assert "wrote 6 test scenes" in result.output
    return out


def test_data_shapes_writes_images_and_captions(shapes_dir):
    lines = (shapes_dir / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 6 and len(list((shapes_dir / "images").glob("*.png"))) == 6
    assert {"image", "caption", "negatives"} <= set(json.loads(lines[0]))


def test_eval_on_shapes_writes_json(run_dir, tmp_path):
    out = tmp_path / "m.json"
    invoke("eval", str(run_dir), "--split", "val", "--size", "12", "--out", str(out))
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "val" and metrics["retrieval"]["n"] == 12
    assert 0 <= metrics["zero_shot"]["top1"] <= 1


def test_eval_on_pairs_file(run_dir, shapes_dir, tmp_path):
    out = tmp_path / "m.json"
    invoke("eval", str(run_dir / "final"), "--data", str(shapes_dir / "captions.jsonl"), "--out", str(out))
    metrics = json.loads(out.read_text())
    got = metrics["retrieval"]
    assert (got["n_images"], got["n_texts"], metrics["skipped"]) == (6, 6, 0)


def test_zero_shot_prints_probabilities(run_dir, shapes_dir):
    image = sorted((shapes_dir / "images").glob("*.png"))[0]
    result = invoke(
        "zero-shot", str(run_dir), str(image), "--labels", "a red circle, a blue star,a green cross"
    )
    rows = [line.split(maxsplit=1) for line in result.output.strip().splitlines()]
    assert sorted(r[1] for r in rows) == ["a blue star", "a green cross", "a red circle"]
    probs = [float(r[0]) for r in rows]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=2e-3)


def test_embed_images_and_texts(run_dir, shapes_dir, tmp_path):
    (shapes_dir / "images" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "img.safetensors"
    result = invoke("embed", str(run_dir), "--images", str(shapes_dir / "images"), "--out", str(out))
    assert "skipped" in result.output and "broken.jpg (not a decodable image)" in result.output
    with safe_open(str(out), "pt") as f:
        vectors = f.get_tensor("embeddings")
        names = json.loads(f.metadata()["names"])
    assert vectors.shape == (6, 32) and len(names) == 6
    texts = tmp_path / "t.txt"
    texts.write_text("a red circle\na blue star\n")
    out = tmp_path / "t.jsonl"
    invoke("embed", str(run_dir), "--texts", str(texts), "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in rows] == ["a red circle", "a blue star"] and len(rows[0]["embedding"]) == 32


def test_list_models():
    assert "clip_conv_mini_64" in invoke("list-models").output


def test_demo_with_tiny_overrides(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--out", str(out), *TINY, "data.test_size=16")
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


def test_compare_command_prints_and_writes_the_table(tmp_path):
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


@pytest.fixture(scope="module")
def captioner_runs(tmp_path_factory):
    """A tiny CoCa fine-tuned for VQA, and a tiny GPT trained on a caption corpus from `data shapes`."""
    out = tmp_path_factory.mktemp("gen")
    corpus = out / "corpus.txt"
    result = invoke("data", "shapes", "--out", str(corpus), "--n", "300", "--text-only")
    assert "wrote 300 train captions" in result.output and len(corpus.read_text().splitlines()) == 300
    small = [
        "batch_size=8",
        "max_steps=2",
        "log_every=1",
        "checkpoint_every=2",
        "tensorboard=false",
        "threads=1",
    ]
    wide = "model_overrides={text.context_length: 40}"
    gpt = [
        "model=gpt_tiny",
        wide,
        f"out_dir={out / 'gpt'}",
        "data.val_size=2",
        "data.tokenizer_vocab_size=300",
    ]
    invoke("train", "configs/gpt_text.yaml", f"data={corpus}", *gpt, *small)
    vqa = [
        "model=coca_vit_tiny",
        wide,
        f"out_dir={out / 'vqa'}",
        "init_from=null",
        "data.image_size=32",
        "data.tokenizer_samples=100",
        "data.tokenizer_vocab_size=300",
        "data.test_size=4",
    ]
    invoke("train", "configs/vqa.yaml", *vqa, *small)
    return out


def test_caption_ask_and_generate(captioner_runs, shapes_dir):
    image = str(shapes_dir / "images" / "000000.png")
    vqa, gpt = str(captioner_runs / "vqa"), str(captioner_runs / "gpt")
    lines = invoke("caption", vqa, image, image, "--beam", "3", "--max-new-tokens", "5").output.splitlines()
    assert len(lines) == 2 and all(line.startswith(image + "\t") for line in lines)
    assert lines[0] == lines[1]  # beam search is deterministic
    sampled = invoke("caption", vqa, image, "--top-p", "0.9", "--seed", "1", "--max-new-tokens", "5").output
    assert sampled.startswith(image + "\t")
    assert len(invoke("ask", vqa, image, "what colour is the star?").output.splitlines()) == 1
    out = invoke("generate", gpt, "--prompt", "a small red", "--prompt", "there is", "--max-new-tokens", "4")
    # each prompt, then its continuation (an untrained model's may hold any character, newlines included)
    assert out.output.startswith("a small red") and "\nthere is" in out.output


def test_generation_verbs_refuse_the_wrong_model(captioner_runs, run_dir, shapes_dir):
    image = str(shapes_dir / "images" / "000000.png")
    for args, message in [
        (("caption", str(run_dir), image), "does not generate text"),
        (("generate", str(captioner_runs / "vqa"), "--prompt", "x"), "image captioner"),
        (("caption", str(captioner_runs / "gpt"), image), "text-only"),
        (("caption", str(captioner_runs / "vqa"), image, "--beam", "2", "--top-k", "3"), "not both"),
    ]:
        result = runner.invoke(app, list(args))
        assert result.exit_code != 0 and message in str(result.exception) + result.output, args


def test_interpolate_mixes_the_weights_of_two_checkpoints(run_dir, tmp_path):
    from safetensors.torch import load_file

    early = sorted((run_dir / "checkpoints").iterdir())[0]
    out = tmp_path / "wise"
    result = invoke("interpolate", str(early), str(run_dir), "--alpha", "0.25", "--out", str(out))
    assert "alpha" in result.output and "0.25" in result.output
    a = load_file(str(early / "model.safetensors"))
    b = load_file(str(run_dir / "final" / "model.safetensors"))
    mixed = load_file(str(out / "model.safetensors"))
    key = next(k for k in mixed if k.endswith("qkv.weight"))
    assert not torch.equal(a[key], b[key])
    torch.testing.assert_close(mixed[key], 0.75 * a[key] + 0.25 * b[key])
    assert (out / "tokenizer.json").is_file()


@pytest.mark.learned
def test_probe_on_digits_reports_a_test_accuracy(run_dir, tmp_path):
    out = tmp_path / "probe.json"
    result = invoke("probe", str(run_dir), "--out", str(out))
    assert "linear probe on digits: test accuracy" in result.output
    probe = json.loads(out.read_text())
    assert 0.1 < probe["accuracy"] <= 1.0  # above chance: even a barely trained tower separates digits
    assert str(probe["l2"]) in probe["val_accuracy"]  # the chosen penalty is one of those swept


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


def test_finetune_probe_and_wise_ft_sweep(run_dir, tmp_path):
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
    assert "digits test accuracy" in result.output
    rows = json.loads(report.read_text())["rows"]
    assert [r["alpha"] for r in rows] == [0.0, 1.0]
    assert all(0.0 <= r["target"] <= 1.0 and 0.0 <= r["zero_shot"] <= 1.0 for r in rows)
    # fine-tuning needs a starting point
    failed = runner.invoke(app, ["finetune", str(recipe), "data.kind=shapes", "objectives=[itc]"])
    assert failed.exit_code != 0 and "init_from" in str(failed.exception)


def test_probe_and_finetune_on_an_image_folder(run_dir, tmp_path):
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


def _main(*args: str) -> tuple[int, str]:
    """(exit code, stderr) of ``mumo ARGS`` through the console script's main()."""
    import contextlib
    import io

    from mumo.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, err.getvalue()


def test_eval_on_pairs_with_repeated_images_scores_each_image_once(run_dir, shapes_dir, tmp_path):
    from mumo.cli import _load
    from mumo.data.pairs import load_rgb
    from mumo.data.transforms import eval_transform
    from mumo.eval import embed_images, embed_texts, retrieval_metrics

    # The COCO layout: one row per caption, the image repeated (spelt two ways), 3 images x 2-3 of their
    # own paraphrased captions, rows interleaved, and an unreadable image whose 2 captions go with it.
    listed = [json.loads(line) for line in (shapes_dir / "captions.jsonl").read_text().splitlines()]
    images = [shapes_dir / r["image"] for r in listed[:3]]
    captions = {p: listed[k]["captions"][: 2 + k % 2] for k, p in enumerate(images)}
    rows = [
        {"image": str(p) if i % 2 else str(p.parent / ".." / p.parent.name / p.name), "caption": c}
        for p in images
        for i, c in enumerate(captions[p])
    ]
    rows = rows[::2] + rows[1::2]  # a caption's image is not always the row before it
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    rows += [{"image": str(broken), "caption": "lost"}, {"image": str(broken), "caption": "lost too"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "m.json"
    invoke("eval", str(run_dir), "--data", str(tmp_path / "pairs.jsonl"), "--out", str(out))
    metrics = json.loads(out.read_text())
    got = metrics["retrieval"]
    assert (got["n_images"], got["n_texts"]) == (3, 7)  # each image once, every readable caption
    assert (metrics["skipped"], metrics["skipped_texts"]) == (1, 2)

    # the same numbers from the library: each image embedded once, in order of first appearance (rows 0,
    # 1, 2 name images 0, 1, 2), with its captions in row order
    model, tokenizer = _load(run_dir)
    texts = [r["caption"] for p in images for r in rows if Path(r["image"]).resolve() == p.resolve()]
    owner = torch.tensor([k for k, p in enumerate(images) for _ in captions[p]])
    transform = eval_transform(model.image_size)
    image_embeds = embed_images(model, torch.stack([transform(load_rgb(p)) for p in images]))
    expected = retrieval_metrics(image_embeds, embed_texts(model, tokenizer, texts), text_to_image=owner)
    assert {k: got[k] for k in expected} == pytest.approx(expected, abs=1e-6)
    assert metrics["truncated_texts"] == tokenizer.encode(texts).num_truncated > 0  # context_length 16


@pytest.mark.parametrize(
    "args,message",
    [
        (["eval", "M", "--out", "{tmp}/missing/m.json"], "folder {tmp}/missing does not exist"),
        (["eval", "M", "--out", "{tmp}"], "is a folder"),
        (["embed", "M", "--texts", "{tmp}/t.txt", "--out", "{tmp}/e.npy"], "must end in .safetensors or"),
        (["embed", "M", "--texts", "{tmp}/t.txt", "--out", "{tmp}/no/e.jsonl"], "{tmp}/no does not exist"),
        (["probe", "M", "--out", "{tmp}/no/p.json"], "{tmp}/no does not exist"),
        (["interpolate", "M", "M", "--sweep", "0,1", "--report", "{tmp}/no/r.json"], "does not exist"),
        (["interpolate", "M", "M", "--out", "{tmp}/t.txt"], "is a file"),
        (["interpolate", "M", "M", "--sweep", "0,1.5"], r"numbers in [0, 1], got '0,1.5'"),
        (["interpolate", "M", "M", "--sweep", " , "], "at least one alpha"),
        (["zero-shot", "M", "{tmp}/t.txt", "--labels", "a,b"], "cannot read"),
    ],
)
def test_outputs_and_arguments_are_checked_before_the_model_loads(monkeypatch, tmp_path, args, message):
    import mumo.cli

    def no_load(path):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(mumo.cli, "_load", no_load)
    (tmp_path / "t.txt").write_text("a red circle\n")
    code, err = _main(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2 and message.replace("{tmp}", str(tmp_path)) in err and len(err.splitlines()) == 1, err


def test_an_empty_folder_says_no_images_were_found(run_dir, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no pictures here")
    code, err = _main("index", str(run_dir), str(empty), "--out", str(tmp_path / "index"))
    assert code == 2 and f"no images found under {empty} (looked for .jpg, .jpeg, .png" in err, err
    assert not (tmp_path / "index").exists()  # refused before anything was written
    import mumo.cli

    monkeypatch.setattr(mumo.cli, "_load", lambda path: pytest.fail("loaded the model for an empty folder"))
    code, err = _main("embed", str(run_dir), "--images", str(empty), "--out", str(tmp_path / "e.jsonl"))
    assert code == 2 and f"no images found under {empty} (looked for .jpg" in err, err


def test_a_config_json_holding_a_list_is_one_line(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("[1, 2, 3]")
    (folder / "model.safetensors").write_bytes(b"")
    mix = ["interpolate", str(folder), str(folder), "--out", str(tmp_path / "w")]
    for args in (["eval", str(folder)], mix):
        code, err = _main(*args)
        assert code == 2 and "config.json" in err and len(err.splitlines()) == 1, err
