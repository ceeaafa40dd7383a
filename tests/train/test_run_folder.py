"""A run folder holds one run: a new run does not start over another's checkpoints, a run prunes only its
own, a resume continues the run as it was recorded (a torn metrics line, changed settings, a finished run)."""

import contextlib
import io
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from mumo.errors import ConfigError, TrainingError
from mumo.run.train import train
from mumo.run.train import trainer as run_trainer
from mumo.train import load_recipe
from mumo.train.checkpoint import latest_valid_checkpoint, list_checkpoints, run_id

TINY = [
    "model=clip_conv_tiny",
    "batch_size=8",
    "data.image_size=32",
    "data.train_size=256",
    "data.tokenizer_samples=100",
    "data.tokenizer_vocab_size=300",
    "data.test_size=16",
    "data.val_size=16",
    "optim.warmup_steps=1",
    "max_steps=4",
    "checkpoint_every=2",
    "tensorboard=false",
    "report=false",
    "threads=1",
]


def _config(out, *extra):
    return load_recipe(None, [*TINY, f"out_dir={out}", *extra])


def _steps(out):
    return [p.name for p in list_checkpoints(out)]


def test_a_new_run_refuses_a_folder_that_holds_another_run(tmp_path):
    train(_config(tmp_path, "evaluate=false"), progress=False)
    with pytest.raises(TrainingError, match="already holds a run .*--resume.*another out_dir.*--overwrite"):
        run_trainer(_config(tmp_path, "seed=1"), progress=False)
    assert _steps(tmp_path) == ["step_000002", "step_000004"]  # untouched


def test_overwrite_replaces_the_run_and_nothing_else(tmp_path):
    train(_config(tmp_path, "evaluate=false"), progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    old = run_id(list_checkpoints(tmp_path)[-1])
    train(_config(tmp_path, "evaluate=false", "max_steps=2"), progress=False, overwrite=True)
    assert _steps(tmp_path) == ["step_000002"] and run_id(list_checkpoints(tmp_path)[0]) != old
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_refused_overwrite_leaves_the_old_run_in_place(tmp_path):
    train(_config(tmp_path, "evaluate=false"), progress=False)
    refused = _config(tmp_path, "model=fusion_vit_tiny", "objectives=[itc,itm]", "data.class_prompts=true")
    with pytest.raises(ConfigError, match="data.class_prompts trains a dual encoder"):
        run_trainer(refused, progress=False, overwrite=True)
    assert _steps(tmp_path) == ["step_000002", "step_000004"] and (tmp_path / "final").is_dir()


def _cli(argv):
    """(exit code, stderr) of ``mumo ARGV`` through the console script's main()."""
    from mumo.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as e:
            return e.code, err.getvalue()
    return 0, err.getvalue()


def test_the_cli_refuses_in_one_line_and_overwrite_is_a_flag(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("evaluate: false\n")
    argv = ["train", str(recipe), *TINY, f"out_dir={tmp_path / 'run'}", "max_steps=2"]
    assert _cli(argv)[0] == 0
    code, err = _cli(argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {tmp_path / 'run'} already holds a run (step_000002)")
    assert _cli([*argv, "--overwrite"])[0] == 0


def test_a_restart_after_every_checkpoint_is_damaged_keeps_its_own_checkpoints(tmp_path):
    """The issue's case: a folder whose checkpoints (another run's step 50 and 60) are all damaged; --resume
    starts afresh. Pruning by step number deleted each new checkpoint right after writing it."""
    other = tmp_path / "other"
    train(_config(other, "evaluate=false"), progress=False)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for old, new in (("step_000002", "step_000050"), ("step_000004", "step_000060")):
        shutil.copytree(other / "checkpoints" / old, run / "checkpoints" / new)
        weights = run / "checkpoints" / new / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])  # truncated
    trainer = run_trainer(_config(run, "evaluate=false", "keep_checkpoints=1"), resume=True, progress=False)
    assert trainer.step == 0
    trainer.fit()
    assert _steps(run) == ["step_000004", "step_000050", "step_000060"]  # its own newest, and the others
    assert latest_valid_checkpoint(run).name == "step_000004"
    again = run_trainer(_config(run, "evaluate=false", "keep_checkpoints=1"), resume=True, progress=False)
    assert again.step == 4 and again.run_id == trainer.run_id  # a later --resume continues this run


def test_a_torn_last_metrics_line_does_not_stop_a_resume(tmp_path):
    train(_config(tmp_path, "evaluate=false", "log_every=1"), progress=False)
    shutil.rmtree(tmp_path / "checkpoints" / "step_000004")
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text(jsonl.read_text() + '{"step": 5, "loss": 0.3')  # a crash mid-write
    train(_config(tmp_path, "evaluate=false", "log_every=1"), resume=True, progress=False)
    assert [json.loads(line)["step"] for line in jsonl.read_text().splitlines()] == [1, 2, 3, 4]


def test_a_resume_with_changed_settings_is_refused_by_name(tmp_path):
    train(_config(tmp_path, "evaluate=false"), progress=False)
    shutil.rmtree(tmp_path / "checkpoints" / "step_000004")
    with pytest.raises(TrainingError, match=r"other settings \(optim.lr 0.001 -> 0.002, max_steps 4 -> 8\)"):
        run_trainer(_config(tmp_path, "evaluate=false", "max_steps=8", "optim.lr=2e-3"), resume=True)
    # how it reports is not what it computes: these may change, and the record says what ran
    resumed = run_trainer(
        _config(tmp_path, "evaluate=false", "log_every=3", "keep_checkpoints=5"), resume=True
    )
    assert resumed.step == 2
    recorded = json.loads((tmp_path / "train_config.json").read_text())
    assert recorded["max_steps"] == 4 and recorded["log_every"] == 3


def test_resuming_a_finished_run_neither_trains_nor_evaluates_again(tmp_path, monkeypatch):
    first = train(_config(tmp_path), progress=False)
    before = load_file(str(tmp_path / "final" / "model.safetensors"))
    calls = []
    monkeypatch.setattr("mumo.run.train.evaluate_run", lambda *a, **k: calls.append(1) or {})
    again = train(_config(tmp_path), resume=True, progress=False)
    assert calls == [] and again == json.loads(json.dumps(first))
    after = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_init_from_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(TrainingError, match=r"init_from=.*missing is not a folder; give a model or a run"):
        run_trainer(_config(tmp_path, f"init_from={tmp_path / 'missing'}"), progress=False)
