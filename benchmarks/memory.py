"""Peak memory of the memory levers: the chunked contrastive loss, and GradCache against a one-pass batch.

Each case runs in a fresh Python process; its peak is the growth of the process's maximum resident set
(``ru_maxrss``) from just before the measured work (inputs and model already built) to its end, so import
and set-up memory is not counted. Wall time is reported too (one run each: a memory benchmark, not a speed
one).

    .venv/bin/python -m benchmarks.memory                 # all cases
    .venv/bin/python -m benchmarks.memory --case loss     # the contrastive loss at 16,384 x 256 only
    .venv/bin/python -m benchmarks.memory --case ranks    # DDP vs FSDP2, per rank, 2 processes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASES = {
    # name: (kind, settings)
    "loss 16384x256, one (N, N) pass": ("loss", {"n": 16384, "dim": 256, "chunk": None}),
    "loss 16384x256, chunks of 1024 rows": ("loss", {"n": 16384, "dim": 256, "chunk": 1024}),
    "loss 16384x256, chunks of 256 rows": ("loss", {"n": 16384, "dim": 256, "chunk": 256}),
    "clip_vit_small_64 batch 512, one pass": ("step", {"batch": 512, "chunk": None}),
    "clip_vit_small_64 batch 512, GradCache chunks of 64": ("step", {"batch": 512, "chunk": 64}),
}

# Two processes (torchrun, gloo) training a 115 M-parameter CLIP: per-rank memory with DDP and with FSDP2.
WIDE = {
    "vision.embed_dim": 768,
    "vision.depth": 8,
    "vision.num_heads": 12,
    "text.embed_dim": 768,
    "text.depth": 8,
    "text.num_heads": 12,
}
RANK_CASES = ["ddp", "fsdp"]


def _rank_child(strategy: str) -> None:
    """One rank of a 2-process run: 2 AdamW steps of batch 4 per rank; prints (on rank 0) the largest
    per-rank growth of the resident set during the steps and the training state each rank holds."""
    import resource
    import time

    import torch
    import torch.distributed as dist

    import mumo
    from mumo.train.distributed import DistInfo, average_gradients, fully_shard_task
    from mumo.train.tasks import MultiTask

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    model = mumo.create_model("clip_vit_small_64", seed=0, **WIDE)
    task = MultiTask(model, ["itc"], rank=rank, world_size=world)
    replicated: list = []
    if strategy == "fsdp":
        replicated = fully_shard_task(task)
        forward = task
    else:
        forward = torch.nn.parallel.DistributedDataParallel(task)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(rank)
    batch = {
        "images": torch.randn(4, 3, 64, 64, generator=g),
        "input_ids": torch.randint(3, 1000, (4, 32), generator=g),
        "attention_mask": torch.ones(4, 32, dtype=torch.long),
    }
    dist.barrier()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    for _ in range(2):
        task.combine(forward(batch)).backward()
        average_gradients(replicated, DistInfo(rank, world))
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradients' memory, as a training loop's peak has it

    def local(t: torch.Tensor) -> int:
        return (t.to_local() if hasattr(t, "to_local") else t).numel()

    params = sum(local(p) for p in task.parameters())
    state = sum(local(v) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    grads = sum(local(p.grad) for p in task.parameters() if p.grad is not None)
    seconds = time.perf_counter() - start
    with open("/proc/self/statm") as f:  # resident pages now: the live tensors, with a fixed mmap threshold
        resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    worst = torch.tensor([growth, resident])
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    if rank == 0:
        print(
            json.dumps(
                {
                    "peak_mib": worst[0].item(),
                    "resident_mib": worst[1].item(),
                    "seconds": seconds,
                    "state_mib": 4 * (params + grads + state) / 2**20,
                }
            )
        )
    dist.destroy_process_group()


def _child(kind: str, settings: dict) -> None:
    import resource
    import time

    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    if kind == "loss":
        from mumo.losses import ClipLoss

        n, dim = settings["n"], settings["dim"]
        image = torch.nn.functional.normalize(torch.randn(n, dim), dim=-1).requires_grad_(True)
        text = torch.nn.functional.normalize(torch.randn(n, dim), dim=-1).requires_grad_(True)
        loss_fn = ClipLoss(chunk_size=settings["chunk"])

        def work() -> None:
            loss_fn(image, text, 100.0).backward()

    else:
        import mumo
        from mumo.train.tasks import MultiTask

        model = mumo.create_model("clip_vit_small_64", seed=0)
        task = MultiTask(model, ["itc"])
        b = settings["batch"]
        batch = {
            "images": torch.randn(b, 3, 64, 64),
            "input_ids": torch.randint(3, 1000, (b, 32)),
            "attention_mask": torch.ones(b, 32, dtype=torch.long),
        }

        def work() -> None:
            if settings["chunk"]:
                task.grad_cache_step(batch, settings["chunk"])
            else:
                task.combine(task.training_forward(batch)).backward()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": (after - before) / 1024, "seconds": seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=["loss", "step", "ranks", "all"], default="all")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--rank-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, settings = CASES[args.child]
        _child(kind, settings)
        return
    if args.rank_child:
        _rank_child(args.rank_child)
        return
    print("| case | peak above set-up, glibc default | with MALLOC_MMAP_THRESHOLD_=131072 | seconds |")
    print("|---|---|---|---|")
    for name, (kind, _) in CASES.items():
        if args.case not in ("all", kind):
            continue
        r = [_run(name, env) for env in ({}, {"MALLOC_MMAP_THRESHOLD_": "131072"})]
        print(f"| {name} | {r[0]['peak_mib']:.0f} MiB | {r[1]['peak_mib']:.0f} MiB | {r[0]['seconds']:.2f} |")
    if args.case not in ("all", "ranks"):
        return
    print("\n2 processes (gloo), CLIP of width 768 and depth 8 per tower, 2 AdamW steps of batch 4 per rank")
    print("(MALLOC_MMAP_THRESHOLD_=131072, so freed tensors leave the resident set; largest rank shown)")
    head = ["strategy", "params + grads + AdamW state per rank", "resident after the steps", "peak growth"]
    print("| " + " | ".join([*head, "seconds"]) + " |")
    print("|---|---|---|---|---|")
    for strategy in RANK_CASES:
        r = _run_ranks(strategy)
        mib = " | ".join(f"{r[k]:.0f} MiB" for k in ("state_mib", "resident_mib", "peak_mib"))
        print(f"| {strategy} | {mib} | {r['seconds']:.2f} |")


def _run(name: str, env: dict[str, str]) -> dict:
    """One case in a fresh process. glibc raises its mmap threshold after freeing a large block, so later
    blocks of that size come from the heap and freed ones stay resident: the default column is what a run
    sees, the fixed-threshold column is closer to the tensors' own peak."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--child", name],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _run_ranks(strategy: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "benchmarks.memory", "--rank-child", strategy],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072"},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
