import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mumo
from mumo.errors import ConfigError
from mumo.run.train import train
from mumo.run.train import trainer as run_trainer
from mumo.train import TrainConfig, load_recipe

TINY = [
    "model=clip_vit_tiny",
    "batch_size=16",
    "data.image_size=32",
    "data.train_size=512",
    "data.tokenizer_samples=300",
    "data.tokenizer_vocab_size=300",
    "data.test_size=64",
    "optim.warmup_steps=5",
    "optim.lr=2e-3",
    "tensorboard=false",
    "threads=1",
]


@pytest.mark.learned
def test_short_run_loss_falls_and_writes_everything(tmp_path):
    # a CNN on one-object scenes learns within 40 steps (a ViT needs far more to start)
    overrides = [*TINY, "model=clip_conv_tiny", "data.max_objects=1", "optim.lr=3e-3", "max_steps=40"]
    config = load_recipe(
        None, [*overrides, f"out_dir={tmp_path}", "log_every=1", "checkpoint_every=20", "tensorboard=true"]
    )
    results = train(config, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 41))
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first - 0.3, (first, last)
    assert {"lr", "samples_per_s", "temperature", "grad_norm"} <= set(rows[-1])
    assert results["steps"] == 40 and (tmp_path / "final" / "model.safetensors").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == ["step_000020", "step_000040"]
    ev = json.loads((tmp_path / "metrics.json").read_text())["eval"]
    assert 0.0 <= ev["zero_shot"]["top1"] <= 1.0 and ev["retrieval"]["n"] == 64
    assert set(ev["compositional"]) >= {"change_colour", "change_shape", "change_size", "overall"}
    model = mumo.load_pretrained(tmp_path / "final")
    assert model.config.text.vocab_size <= 300


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # Two micro-batches of 8 make the same step as one batch of 16 (the contrastive loss is per
    # micro-batch, so compare against a model fed the same micro-batches: the sum of their gradients).
    a = run_trainer(
        load_recipe(
            None,
            [
                *TINY,
                f"out_dir={tmp_path / 'a'}",
                "max_steps=1",
                "batch_size=8",
                "optim.grad_accum=2",
                "optim.grad_clip=null",
                "evaluate=false",
            ],
        ),
        progress=False,
    )
    b = run_trainer(
        load_recipe(
            None,
            [
                *TINY,
                f"out_dir={tmp_path / 'b'}",
                "max_steps=1",
                "batch_size=8",
                "optim.grad_accum=1",
                "optim.grad_clip=null",
                "evaluate=false",
            ],
        ),
        progress=False,
    )
    batches = iter(b._loader())
    manual = [next(batches), next(batches)]
    for batch in manual:
        loss = b.task.training_forward(batch)["itc"] / 2
        loss.backward()
    grads_b = {n: p.grad.clone() for n, p in b.model.named_parameters()}
    batches_a = iter(a._loader())
    for _ in range(2):
        batch = next(batches_a)
        (a.task.training_forward(batch)["itc"] / 2).backward()
    for n, p in a.model.named_parameters():
        torch.testing.assert_close(p.grad, grads_b[n])


def _run(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "mumo", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kw,
    )


@pytest.mark.slow
def test_kill_9_and_resume_is_bit_identical(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("evaluate: false\n")
    common = [str(recipe), *TINY, "max_steps=150", "checkpoint_every=10", "keep_checkpoints=3"]

    straight = _run([*common, f"out_dir={tmp_path / 'straight'}"])  # beside the victim, one core each
    killed_dir = tmp_path / "killed"
    victim = _run([*common, f"out_dir={killed_dir}"])
    try:
        deadline = time.time() + 120
        while not list((killed_dir / "checkpoints").glob("step_*/manifest.json")):
            assert victim.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # let it get into the middle of something
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert victim.returncode == -signal.SIGKILL
        assert not (killed_dir / "final").exists(), "the run finished before the kill; make it longer"
        done = sorted(p.name for p in (killed_dir / "checkpoints").glob("step_*"))
        assert done and done[-1] < "step_000150"
        out, _ = straight.communicate(timeout=300)
        assert straight.returncode == 0, out.decode()
    finally:  # a failed assertion must not leave either run training on its own
        for run in (straight, victim):
            if run.poll() is None:
                run.kill()
                run.communicate()

    # corrupt the newest checkpoint as a crash mid-write on a bad disk could: resume must fall back
    newest = sorted((killed_dir / "checkpoints").glob("step_*"))[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    resumed = _run([*common, f"out_dir={killed_dir}", "--resume"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(killed_dir / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 150  # no duplicated lines after the resume


def test_recipes_in_configs_load():
    recipes = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))
    assert len(recipes) > 10, "configs/ has too few recipes"
    for recipe in recipes:
        if recipe.name in ("gpt_text.yaml", "imagefolder.yaml"):  # the data is named on the command line
            with pytest.raises(ConfigError, match="data.path"):
                load_recipe(recipe)
            assert load_recipe(recipe, ["data=corpus.txt"]).data.path == "corpus.txt"
            continue
        assert isinstance(load_recipe(recipe), TrainConfig)


def test_corrupt_images_are_skipped_counted_and_reported_per_epoch(tmp_path, caplog):
    from mumo.data.shapes import ShapesConfig, write_shapes

    data = write_shapes(tmp_path / "pairs", 13, split="train", config=ShapesConfig(image_size=32))
    jpeg = data / "images" / "000000.png"
    from PIL import Image

    Image.open(jpeg).convert("RGB").save(data / "images" / "whole.jpg")
    whole = (data / "images" / "whole.jpg").read_bytes()
    (data / "images" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (data / "images" / "empty.jpg").write_bytes(b"")
    (data / "images" / "text.jpg").write_text("this is not an image")
    with open(data / "captions.jsonl", "a") as f:
        for name in ("cut.jpg", "empty.jpg", "text.jpg"):
            f.write(json.dumps({"image": f"images/{name}", "caption": "a red circle"}) + "\n")
    overrides = [
        *TINY,
        f"out_dir={tmp_path / 'run'}",
        "data.kind=pairs",
        f"data.path={data / 'captions.jsonl'}",
        "batch_size=8",
        "max_steps=4",
        "evaluate=false",
        "data.tokenizer_samples=16",
    ]
    with caplog.at_level("WARNING", logger="mumo.train.trainer"):
        results = train(load_recipe(None, overrides), progress=False)
    reasons = sorted((Path(s["path"]).name, s["reason"]) for s in results["skipped_images"])
    # 16 rows, 2 batches an epoch, 4 steps: two epochs, each skipping the 3 bad files once
    assert reasons == sorted(
        2
        * [("cut.jpg", "truncated image"), ("empty.jpg", "zero bytes"), ("text.jpg", "not a decodable image")]
    )
    epoch_lines = [r.getMessage() for r in caplog.records if "images were skipped" in r.getMessage()]
    assert len(epoch_lines) == 2 and all(line.count(".jpg (") == 3 for line in epoch_lines)
    assert epoch_lines[0].startswith("epoch 0: 3 images were skipped")


def test_siglip_run_and_its_config_error(tmp_path):
    base = [*TINY, "model=clip_conv_tiny", "loss=siglip", "max_steps=3", "evaluate=false"]
    with pytest.raises(mumo.ConfigError, match="init_logit_bias"):
        run_trainer(load_recipe(None, [*base, f"out_dir={tmp_path / 'a'}"]), progress=False)
    config = load_recipe(None, [*base, f"out_dir={tmp_path / 'b'}", "model_overrides.init_logit_bias=-10"])
    assert train(config, progress=False)["steps"] == 3


def test_negclip_batches_carry_hard_negative_captions(tmp_path):
    from mumo.data.sampler import ResumableBatchSampler
    from mumo.data.shapes import captions, hard_negatives

    overrides = [*TINY, f"out_dir={tmp_path}", "max_steps=2", "hard_negatives=2", "evaluate=false"]
    t = run_trainer(load_recipe(None, overrides), progress=False)
    batch = next(iter(t._loader()))
    first = t.dataset[next(iter(ResumableBatchSampler(len(t.dataset), 16, seed=0)))[0]]
    expected = t.tokenizer.encode(t.collate.negatives(first)).input_ids
    assert torch.equal(batch["neg_input_ids"][: len(expected)], expected)
    template = captions(first["scene"]).index(first["caption"])  # negatives are worded as the caption is
    assert set(t.collate.negatives(first)) <= set(hard_negatives(first["scene"], template).values())
    n = batch["neg_input_ids"].shape[0]
    assert batch["images"].shape[0] < n <= 2 * batch["images"].shape[0]  # one-object scenes have fewer kinds
    assert t.fit()["steps"] == 2
    with pytest.raises(mumo.ConfigError, match="hard_negatives needs"):
        load_recipe(None, ["hard_negatives=1", "loss=siglip"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_clear_error(tmp_path):
    from mumo.errors import TrainingError

    with pytest.raises(TrainingError, match="device=cuda, but torch sees no CUDA GPU here; train with"):
        run_trainer(load_recipe(None, [*TINY, "device=cuda", f"out_dir={tmp_path}"]), progress=False)
