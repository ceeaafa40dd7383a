"""`mumo eval`, `zero-shot`, `embed`, `probe`, `interpolate` (mumo.cli.evaluate), through typer's CliRunner
and main() on the tiny model of the run_dir fixture (conftest)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open


def test_eval_on_shapes_writes_json(invoke, run_dir, tmp_path):
    out = tmp_path / "m.json"
    invoke("eval", str(run_dir), "--split", "val", "--size", "12", "--out", str(out))
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "val" and metrics["retrieval"]["n"] == 12
    assert 0 <= metrics["zero_shot"]["top1"] <= 1


def test_eval_on_pairs_file(invoke, run_dir, shapes_dir, tmp_path):
    out = tmp_path / "m.json"
    invoke("eval", str(run_dir / "final"), "--data", str(shapes_dir / "captions.jsonl"), "--out", str(out))
    metrics = json.loads(out.read_text())
    got = metrics["retrieval"]
    assert (got["n_images"], got["n_texts"], metrics["skipped"]) == (6, 6, 0)


def test_zero_shot_prints_probabilities(invoke, run_dir, shapes_dir):
    image = sorted((shapes_dir / "images").glob("*.png"))[0]
    result = invoke(
        "zero-shot", str(run_dir), str(image), "--labels", "a red circle, a blue star,a green cross"
    )
    rows = [line.split(maxsplit=1) for line in result.output.strip().splitlines()]
    assert sorted(r[1] for r in rows) == ["a blue star", "a green cross", "a red circle"]
    probs = [float(r[0]) for r in rows]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=2e-3)


def test_embed_images_and_texts(invoke, run_dir, shapes_dir, tmp_path):
    images = tmp_path / "images"  # a copy: the shared scenes stay as the other tests expect them
    shutil.copytree(shapes_dir / "images", images)
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "img.safetensors"
    result = invoke("embed", str(run_dir), "--images", str(images), "--out", str(out))
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


def test_interpolate_mixes_the_weights_of_two_checkpoints(invoke, run_dir, tmp_path):
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
def test_probe_on_digits_reports_a_test_accuracy(invoke, run_dir, tmp_path):
    out = tmp_path / "probe.json"
    result = invoke("probe", str(run_dir), "--out", str(out))
    assert result.output.startswith("linear probe on digits: test accuracy")  # no bar: not a terminal
    probe = json.loads(out.read_text())
    assert 0.1 < probe["accuracy"] <= 1.0  # above chance: even a barely trained tower separates digits
    assert str(probe["l2"]) in probe["val_accuracy"]  # the chosen penalty is one of those swept


def test_eval_on_pairs_with_repeated_images_scores_each_image_once(invoke, run_dir, shapes_dir, tmp_path):
    from mumo.data.pairs import load_rgb
    from mumo.data.transforms import eval_transform
    from mumo.eval import embed_images, embed_texts, retrieval_metrics
    from mumo.inference import load

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
    model, tokenizer = load(run_dir)
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
def test_outputs_and_arguments_are_checked_before_the_model_loads(
    main_exit, monkeypatch, tmp_path, args, message
):
    def no_load(path):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("mumo.inference.load", no_load)  # what every command loads a model with
    (tmp_path / "t.txt").write_text("a red circle\n")
    code, err = main_exit(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2 and message.replace("{tmp}", str(tmp_path)) in err and len(err.splitlines()) == 1, err


def test_an_empty_folder_says_no_images_were_found(main_exit, run_dir, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no pictures here")
    code, err = main_exit("index", str(run_dir), str(empty), "--out", str(tmp_path / "index"))
    assert code == 2 and f"no images found under {empty} (looked for .jpg, .jpeg, .png" in err, err
    assert not (tmp_path / "index").exists()  # refused before anything was written
    refuse = lambda path: pytest.fail("loaded the model for an empty folder")
    monkeypatch.setattr("mumo.inference.load", refuse)
    code, err = main_exit("embed", str(run_dir), "--images", str(empty), "--out", str(tmp_path / "e.jsonl"))
    assert code == 2 and f"no images found under {empty} (looked for .jpg" in err, err


def test_a_config_json_holding_a_list_is_one_line(main_exit, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("[1, 2, 3]")
    (folder / "model.safetensors").write_bytes(b"")
    mix = ["interpolate", str(folder), str(folder), "--out", str(tmp_path / "w")]
    for args in (["eval", str(folder)], mix):
        code, err = main_exit(*args)
        assert code == 2 and "config.json" in err and len(err.splitlines()) == 1, err


def test_eval_of_a_captioner_names_java_when_meteor_is_asked_and_skips_it_otherwise(
    invoke, main_exit, tmp_path, monkeypatch
):
    import mumo

    tok = mumo.Tokenizer.train(
        ["a red circle", "a blue star above a green cross"] * 20, 300, context_length=16
    )
    model = mumo.create_model("coca_vit_tiny", seed=0, **{"text.context_length": 16})
    mumo.save_pretrained(model, tmp_path / "coca", tokenizer=tok)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    code, err = main_exit("eval", str(tmp_path / "coca"), "--size", "2", "--meteor")
    assert code == 2 and len(err.splitlines()) == 1 and "apt-get install default-jre-headless" in err, err
    out = tmp_path / "m.json"
    invoke("eval", str(tmp_path / "coca"), "--size", "2", "--out", str(out))
    metrics = json.loads(out.read_text())["captioning"]
    assert "ROUGE-L" in metrics and "CIDEr-D" in metrics and "METEOR" not in metrics
    # as `mumo caption --precision int8` would caption (the model's widths are multiples of 16)
    invoke("eval", str(tmp_path / "coca"), "--size", "2", "--precision", "int8", "--out", str(out))
    assert "CIDEr-D" in json.loads(out.read_text())["captioning"]
