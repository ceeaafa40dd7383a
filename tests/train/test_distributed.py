"""Two processes on loopback (gloo): DDP over the task gives the single-process gradient of the global
batch, and a torchrun launch of the trainer ends where the single-process run with that batch does."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

import mumo
from mumo.layers.batch_norm import sync_batch_norm
from mumo.run.train import trainer as run_trainer
from mumo.train import load_recipe
from mumo.train.distributed import DistInfo, average_gradients, destroy_distributed
from mumo.train.tasks import MultiTask

WORLD, B = 2, 4


LOSSES = {"clip": "clip_vit_tiny", "siglip": "siglip_vit_tiny"}  # loss -> model (SigLIP's has a bias)
# (loss, model, mode, rows): DDP; GradCache in chunks of one sample; ranks holding 4 and 3 samples (a batch
# lost an unreadable image); and a conv tower with batch norm, synchronised over the ranks
CASES = {
    f"{loss}-{mode}": (loss, LOSSES[loss], mode, WORLD * B - (mode == "uneven"))
    for loss in LOSSES
    for mode in ("ddp", "grad_cache", "uneven")
}
CASES["clip-batch_norm"] = ("clip", "clip_conv_tiny", "ddp", WORLD * B)


def _model(name: str):
    # float64: the comparison is then about the algorithm, not float32 summation order (which gives ~7e-7
    # relative differences on gradients of magnitude ~10)
    return mumo.create_model(name, seed=0, **{"text.vocab_size": 300}).double()


def _global_batch(n=WORLD * B):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 10, (n,), generator=g)
    mask = (torch.arange(10) < lengths[:, None]).long()
    return {
        "images": torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64),
        "input_ids": torch.randint(3, 300, (n, 10), generator=g) * mask,
        "attention_mask": mask,
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    """Every case in one process group (spawning two processes per case cost ~4 s each)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        for case, (loss_name, model_name, mode, rows) in CASES.items():
            model = _model(model_name)
            sync_batch_norm(model)  # as the trainer does across processes
            task = MultiTask(model, ["itc"], loss=loss_name, rank=rank, world_size=WORLD)
            batch = {k: v[rank::WORLD] for k, v in _global_batch(rows).items()}  # as the batch sampler splits
            if mode == "grad_cache":  # chunks of one sample, then the trainer's gradient average
                losses = task.grad_cache_step(batch, chunk_size=1)
                average_gradients(task.parameters(), DistInfo(rank, WORLD))
            else:
                ddp = DistributedDataParallel(task)  # kept alive: its hooks average the gradients
                losses = ddp(batch)
                task.combine(losses).backward()
            grads = {n: p.grad for n, p in model.named_parameters()}
            loss = losses["itc"].detach().reshape(1)
            dist.all_reduce(loss)
            buffers = {f"buffer.{n}": b for n, b in model.named_buffers() if "running" in n}
            save_file({**grads, **buffers, "loss": loss / WORLD}, f"{out_dir}/{case}-rank{rank}.safetensors")
            dist.barrier()
        destroy_distributed(DistInfo(rank, WORLD))  # a group the caller made is left alone ...
        assert dist.is_initialized()
        destroy_distributed(DistInfo(rank, WORLD, owns_group=True))  # ... one the trainer made is ended
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, free_port):
    """The folder of every case's per-rank gradients (one process group for all of them)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_gradients_equal_the_single_process_global_batch(ranks, case):
    """Also when the ranks hold different numbers of samples, and for batch norm (statistics, running
    statistics and gradients of the global batch, as one process computes them)."""
    loss_name, model_name, _, rows = CASES[case]
    model = _model(model_name)
    task = MultiTask(model, ["itc"], loss=loss_name)
    loss = task.combine(task.training_forward(_global_batch(rows)))
    loss.backward()
    for rank in range(WORLD):
        got = load_file(str(ranks / f"{case}-rank{rank}.safetensors"))
        assert abs(got.pop("loss").item() - loss.item()) <= 1e-6
        for name, p in model.named_parameters():
            torch.testing.assert_close(got[name], p.grad, rtol=0, atol=1e-6, msg=name)
        for name, b in model.named_buffers():
            if "running" in name:
                torch.testing.assert_close(got[f"buffer.{name}"], b, rtol=0, atol=1e-12, msg=name)


COMMON = [
    "model=clip_vit_tiny",
    "data.image_size=32",
    "data.train_size=256",
    "data.tokenizer_samples=200",
    "data.tokenizer_vocab_size=300",
    "max_steps=3",
    "checkpoint_every=3",
    "evaluate=false",
    "tensorboard=false",
    "threads=1",
]


# PYTHONFAULTHANDLER: a process that aborts (SIGABRT, say "terminate called without an active exception" in
# a backend's thread teardown) prints every thread's Python stack, so a failure shows where it happened
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(recipe, run folder) of the reference: the test recipe in one process, batch 8 (shared by the
    launch tests below)."""
    root = tmp_path_factory.mktemp("reference")
    recipe = root / "r.yaml"
    recipe.write_text("seed: 0\n")
    one = root / "one"
    subprocess.run(
        [sys.executable, "-m", "mumo", "train", str(recipe), *COMMON, "batch_size=8", f"out_dir={one}"],
        env=ENV,
        check=True,
        capture_output=True,
    )
    return recipe, one


def _assert_same_weights(reference_dir, run_dir, buffers=False):
    """The final weights of ``run_dir`` equal those of ``reference_dir`` (Adam's steps amplify float32
    summation-order differences slightly, hence 1e-5); the buffers too, when asked."""
    a = load_file(str(reference_dir / "final" / "model.safetensors"))
    b = load_file(str(run_dir / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        if buffers or "running" not in k:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    return b


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["grad_cache_chunk=2"]], ids=["ddp", "grad_cache"])
def test_a_torchrun_launch_ends_with_the_single_process_weights(tmp_path, reference, extra):
    """With GradCache too: chunks of 2 of each rank's 4 samples, the loss still over all 8."""
    recipe, one = reference
    two = tmp_path / "two"
    _train(recipe, two, *extra, "--nproc", "2")
    _assert_same_weights(one, two)
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step_000003"]  # rank 0 alone wrote


@pytest.mark.slow
def test_two_nodes_on_loopback_end_with_the_single_process_weights(tmp_path, reference, free_port):
    """Two torchrun launches, one per "node" (--nnodes 2, --node-rank 0 / 1), meet through a c10d
    rendezvous on 127.0.0.1 and train the recipe; rank 0's final weights equal the single-process run with
    the same global batch."""
    recipe, one = reference
    nodes = tmp_path / "nodes"
    port = free_port()
    launches = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={node}",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=mumo-test",
                "-m",
                "mumo",
                "train",
                str(recipe),
                *COMMON,
                "batch_size=4",
                f"out_dir={nodes}",
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in launches]
    assert all(p.returncode == 0 for p in launches), "\n".join(outputs)
    b = _assert_same_weights(one, nodes)
    c = load_file(str(nodes / "checkpoints" / "step_000003" / "model.safetensors"))
    assert all(torch.equal(c[k], b[k]) for k in b)  # rank 0's checkpoint is the final model


def _train(recipe, out_dir, *extra):
    """`mumo train` of the test recipe with 4 samples per process into ``out_dir``; must succeed."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mumo",
            "train",
            str(recipe),
            *COMMON,
            "batch_size=4",
            f"out_dir={out_dir}",
            *extra,
        ],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and (out_dir / "final").is_dir(), run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.slow
def test_fsdp_trains_saves_shards_and_resumes_from_them(tmp_path, reference):
    """FSDP2 over 2 processes: the single-process weights again; every rank writes its shards of the
    checkpoint; one process reads a sharded checkpoint whole; a run resumed from the step-2 shards ends
    where the uninterrupted run does."""
    from mumo.train.checkpoint import load_checkpoint

    recipe, one = reference
    fsdp = tmp_path / "fsdp"
    _train(recipe, fsdp, "strategy=fsdp", "checkpoint_every=2", "--nproc", "2")
    final = _assert_same_weights(one, fsdp)

    step3 = fsdp / "checkpoints" / "step_000003"
    assert sorted(p.name for p in (step3 / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (step3 / "model.safetensors").exists()
    model, tokenizer, state = load_checkpoint(step3)  # one process, no process group
    assert state["step"] == 3 and state["sharded"] and tokenizer.vocab_size <= 300
    for k, v in model.state_dict().items():
        assert torch.equal(v, final[k]), k

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(fsdp / "checkpoints" / "step_000002", resumed / "checkpoints" / "step_000002")
    _train(recipe, resumed, "strategy=fsdp", "--resume", "--nproc", "2")
    again = load_file(str(resumed / "final" / "model.safetensors"))
    for k in final:
        torch.testing.assert_close(again[k], final[k], rtol=0, atol=1e-6, msg=k)


def test_a_failed_launch_fails_the_command(tmp_path):
    """`mumo train --nproc 2` exits with its processes' code when they fail (here: no shards where the
    recipe says), not 0 as click's non-standalone mode would return it, and says why in one line per
    process: no launcher log lines, no traceback."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 0\n")
    run = subprocess.run(
        [sys.executable, "-m", "mumo", "train", str(recipe), *COMMON, "data.kind=shards"]
        + [f"data.path={tmp_path / 'none'}", f"out_dir={tmp_path / 'run'}", "--nproc", "2"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: shard folder") for line in lines), run.stderr
    assert all("does not exist" in line for line in lines)


DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
DEMO_SHORT = [  # the demo recipe's model and data, three steps
    "max_steps=3",
    # Adam with eps 1e-6 turns float32 noise in a near-zero gradient into a step of +-lr (a coin flip of
    # its sign); 1e-3 keeps the comparison about the computation, not about which way such coins fell
    "optim.eps=1e-3",
    "checkpoint_every=3",
    "data.tokenizer_samples=300",
    "evaluate=false",
    "report=false",
    "tensorboard=false",
    "threads=1",
]


@pytest.mark.slow
def test_the_demo_recipe_over_two_processes_equals_one_process(tmp_path):
    """The demo's CNN has batch norm: each rank normalising its own half of the batch would train another
    model than one process does. Synchronised, 2 x 16 ends where 1 x 32 does, running statistics included.

    The one-process reference computes its batch statistics as SyncBatchNorm does without a process group:
    PyTorch's CPU kernel sums a channels-last activation's statistics sequentially in float32 (the demo's
    first batch norm misses its batch mean by ~1.5e-3). Measured: 9.7e-6 at most; without synchronised
    statistics 1.1e-2, and 37,284 of 580,597 values more than 1e-5 apart."""
    two = tmp_path / "two"
    run = subprocess.run(
        [sys.executable, "-m", "mumo", "train", str(DEMO), *DEMO_SHORT, f"out_dir={two}", "batch_size=16"]
        + ["--nproc", "2"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    one = tmp_path / "one"
    trainer = run_trainer(load_recipe(DEMO, [*DEMO_SHORT, f"out_dir={one}", "batch_size=32"]), progress=False)
    assert sync_batch_norm(trainer.model) == 4  # the same parameters: the optimizer keeps them
    trainer.fit()
    _assert_same_weights(one, two, buffers=True)
