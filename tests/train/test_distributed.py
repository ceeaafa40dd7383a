"""Two processes on loopback (gloo): DDP over the task gives the single-process gradient of the global
batch, and a torchrun launch of the trainer ends where the single-process run with that batch does."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

import mumo
from mumo.train.distributed import DistInfo, average_gradients
from mumo.train.tasks import MultiTask

WORLD, B = 2, 4


LOSSES = {"clip": "clip_vit_tiny", "siglip": "siglip_vit_tiny"}  # loss -> model (SigLIP's has a bias)


def _model(loss: str):
    # float64: the comparison is then about the algorithm, not float32 summation order (which gives ~7e-7
    # relative differences on gradients of magnitude ~10)
    return mumo.create_model(LOSSES[loss], seed=0, **{"text.vocab_size": 300}).double()


def _global_batch(n=WORLD * B):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 10, (n,), generator=g)
    mask = (torch.arange(10) < lengths[:, None]).long()
    return {
        "images": torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64),
        "input_ids": torch.randint(3, 300, (n, 10), generator=g) * mask,
        "attention_mask": mask,
    }


def _worker(rank: int, port: int, out_dir: str, loss_name: str, grad_cache: bool, rows: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        model = _model(loss_name)
        task = MultiTask(model, ["itc"], loss=loss_name, rank=rank, world_size=WORLD)
        batch = {k: v[rank::WORLD] for k, v in _global_batch(rows).items()}  # as the batch sampler splits
        if grad_cache:  # chunks of one sample, then the trainer's gradient average
            losses = task.grad_cache_step(batch, chunk_size=1)
            average_gradients(task.parameters(), DistInfo(rank, WORLD))
        else:
            ddp = DistributedDataParallel(task)  # kept alive: its hooks average the gradients
            losses = ddp(batch)
            task.combine(losses).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        loss = losses["itc"].detach().reshape(1)
        dist.all_reduce(loss)
        save_file({**grads, "loss": loss / WORLD}, f"{out_dir}/rank{rank}.safetensors")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "grad_cache,rows",
    [(False, WORLD * B), (True, WORLD * B), (False, WORLD * B - 1)],
    ids=["ddp", "grad_cache", "uneven"],
)
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_ddp_gradients_equal_the_single_process_global_batch(
    tmp_path, free_port, loss_name, grad_cache, rows
):
    """Also when the ranks hold different numbers of samples, 4 and 3 (a batch lost an unreadable image)."""
    args = (free_port(), str(tmp_path), loss_name, grad_cache, rows)
    mp.spawn(_worker, args=args, nprocs=WORLD, join=True)
    model = _model(loss_name)
    task = MultiTask(model, ["itc"], loss=loss_name)
    loss = task.combine(task.training_forward(_global_batch(rows)))
    loss.backward()
    for rank in range(WORLD):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert abs(got.pop("loss").item() - loss.item()) <= 1e-6
        for name, p in model.named_parameters():
            torch.testing.assert_close(got[name], p.grad, rtol=0, atol=1e-6, msg=name)


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


def _single_process_run(tmp_path):
    """(environment, recipe) after training the reference into tmp_path/one: one process, batch 8."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 0\n")
    one = tmp_path / "one"
    subprocess.run(
        [sys.executable, "-m", "mumo", "train", str(recipe), *COMMON, "batch_size=8", f"out_dir={one}"],
        env=env,
        check=True,
        capture_output=True,
    )
    return env, recipe


def _assert_single_process_weights(tmp_path, run_dir):
    """The final weights of ``run_dir`` equal those of the reference run (Adam's steps amplify float32
    summation-order differences slightly, hence 1e-5)."""
    a = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    b = load_file(str(run_dir / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    return b


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["grad_cache_chunk=2"]], ids=["ddp", "grad_cache"])
def test_a_torchrun_launch_ends_with_the_single_process_weights(tmp_path, extra):
    """With GradCache too: chunks of 2 of each rank's 4 samples, the loss still over all 8."""
    env, recipe = _single_process_run(tmp_path)
    two = tmp_path / "two"
    _train(recipe, two, env, *extra, "--nproc", "2")
    _assert_single_process_weights(tmp_path, two)
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step_000003"]  # rank 0 alone wrote


@pytest.mark.slow
def test_two_nodes_on_loopback_end_with_the_single_process_weights(tmp_path, free_port):
    """Two torchrun launches, one per "node" (--nnodes 2, --node-rank 0 / 1), meet through a c10d
    rendezvous on 127.0.0.1 and train the recipe; rank 0's final weights equal the single-process run with
    the same global batch."""
    env, recipe = _single_process_run(tmp_path)
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
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in launches]
    assert all(p.returncode == 0 for p in launches), "\n".join(outputs)
    b = _assert_single_process_weights(tmp_path, nodes)
    c = load_file(str(nodes / "checkpoints" / "step_000003" / "model.safetensors"))
    assert all(torch.equal(c[k], b[k]) for k in b)  # rank 0's checkpoint is the final model


def _train(recipe, out_dir, env, *extra):
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
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and (out_dir / "final").is_dir(), run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.slow
def test_fsdp_trains_saves_shards_and_resumes_from_them(tmp_path):
    """FSDP2 over 2 processes: the single-process weights again; every rank writes its shards of the
    checkpoint; one process reads a sharded checkpoint whole; a run resumed from the step-2 shards ends
    where the uninterrupted run does."""
    from mumo.train.checkpoint import load_checkpoint

    env, recipe = _single_process_run(tmp_path)
    fsdp = tmp_path / "fsdp"
    _train(recipe, fsdp, env, "strategy=fsdp", "checkpoint_every=2", "--nproc", "2")
    final = _assert_single_process_weights(tmp_path, fsdp)

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
    _train(recipe, resumed, env, "strategy=fsdp", "--resume", "--nproc", "2")
    again = load_file(str(resumed / "final" / "model.safetensors"))
    for k in final:
        torch.testing.assert_close(again[k], final[k], rtol=0, atol=1e-6, msg=k)


def test_a_failed_launch_fails_the_command(tmp_path):
    """`mumo train --nproc 2` exits non-zero when its processes fail (here: no shards where the recipe
    says), not 0 as click's non-standalone mode would return it."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 0\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mumo", "train", str(recipe), *COMMON, "data.kind=shards"]
        + [f"data.path={tmp_path / 'none'}", f"out_dir={tmp_path / 'run'}", "--nproc", "2"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "does not exist" in run.stderr
