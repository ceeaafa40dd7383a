"""Peak memory of the memory levers: the chunked contrastive loss, and GradCache against a one-pass batch.

Each case runs in a fresh Python process; its peak is the growth of the process's maximum resident set
(``ru_maxrss``) from just before the measured work (inputs and model already built) to its end, so import
and set-up memory is not counted. Wall time is reported too (one run each: a memory benchmark, not a speed
one).

    .venv/bin/python -m benchmarks.memory                 # all cases
    .venv/bin/python -m benchmarks.memory --case loss     # the contrastive loss at 16,384 x 256 only
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
    p.add_argument("--case", choices=["loss", "step", "all"], default="all")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, settings = CASES[args.child]
        _child(kind, settings)
        return
    print("| case | peak above set-up, glibc default | with MALLOC_MMAP_THRESHOLD_=131072 | seconds |")
    print("|---|---|---|---|")
    for name, (kind, _) in CASES.items():
        if args.case not in ("all", kind):
            continue
        r = [_run(name, env) for env in ({}, {"MALLOC_MMAP_THRESHOLD_": "131072"})]
        print(f"| {name} | {r[0]['peak_mib']:.0f} MiB | {r[1]['peak_mib']:.0f} MiB | {r[0]['seconds']:.2f} |")


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


if __name__ == "__main__":
    main()
