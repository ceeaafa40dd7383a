"""Training on WebDataset shards: a run resumed from a checkpoint (2 loader workers, an odd batch) ends
with the uninterrupted run's weights, bit for bit; a resume with another reader layout is refused; damaged
samples are counted, never fatal."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from mumo.data.shard_writer import pairs_from_shapes, write_shards
from mumo.errors import TrainingError
from mumo.run.train import train
from mumo.run.train import trainer as run_trainer
from mumo.train import load_recipe


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    pairs = list(pairs_from_shapes(288))
    pairs[7] = type(pairs[7])(pairs[7].key, b"not an image", "png", pairs[7].caption, pairs[7].meta)
    write_shards(pairs, root, shard_size=50)
    return root


_OVERRIDES = [
    "model=clip_vit_tiny",
    "batch_size=8",
    "data.kind=shards",
    "data.image_size=32",
    "data.num_workers=2",
    "data.shuffle_block=32",
    "data.tokenizer_samples=200",
    "data.tokenizer_vocab_size=300",
    "evaluate=false",
    "tensorboard=false",
    "threads=1",
]


def _config(shards, out_dir, *extra):
    overrides = [
        *_OVERRIDES,
        f"data.path={shards}",
        "max_steps=5",
        "checkpoint_every=3",
        f"out_dir={out_dir}",
    ]
    return load_recipe(None, [*overrides, *extra])


def test_a_resumed_shard_run_ends_with_the_uninterrupted_weights(shards, tmp_path):
    full = train(_config(shards, tmp_path / "full"), progress=False)
    assert full["steps"] == 5
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    # the step-3 checkpoint: 3 batches read, so each rank's loader restarts on its second worker's turn
    shutil.copytree(
        tmp_path / "full" / "checkpoints" / "step_000003", resumed_dir / "checkpoints" / "step_000003"
    )
    train(_config(shards, resumed_dir), resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(resumed_dir / "final" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k

    with pytest.raises(TrainingError, match=r"other settings \(data.num_workers 2 -> 0, max_steps 5 -> 6\)"):
        run_trainer(
            _config(shards, resumed_dir, "data.num_workers=0", "max_steps=6"), resume=True, progress=False
        )


def test_a_damaged_sample_is_counted_not_fatal(shards, tmp_path):
    # 288 samples in batches of 8: 36 steps read every sample once, the bad one included
    results = train(_config(shards, tmp_path, "max_steps=36", "checkpoint_every=36"), progress=False)
    assert results["steps"] == 36
    assert [s["reason"] for s in results["skipped_images"]] == ["not a decodable image"]
    assert results["skipped_images"][0]["path"].endswith("/000000007")


@pytest.mark.slow
def test_two_processes_of_two_workers_report_every_skipped_sample_once(shards, tmp_path):
    """torchrun, 2 ranks x 2 loader workers, one epoch (18 steps of 2 x 8): whichever rank met the bad
    sample, rank 0's metrics list it once."""
    import json
    import os
    import subprocess
    import sys

    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 0\n")
    overrides = [
        *_OVERRIDES,
        f"data.path={shards}",
        "max_steps=18",
        "checkpoint_every=18",
        f"out_dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mumo", "train", str(recipe), *overrides, "--nproc", "2"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 18
    assert [s["reason"] for s in metrics["skipped_images"]] == ["not a decodable image"]
