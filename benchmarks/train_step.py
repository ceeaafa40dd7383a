"""Training and inference throughput of mumo against OpenCLIP and Hugging Face CLIP on the same config.

    python benchmarks/train_step.py [--model clip_vit_small_64] [--batch-size 128] [--steps 10]

Train step = forward + CLIP loss + backward + AdamW, fp32. Each candidate is timed in rotation in one
process; the table shows median samples/s and the ratio to OpenCLIP. ``--profile`` prints mumo's top
operators. Numbers are for comparison on one machine, never a CI gate.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F

import mumo
from benchmarks._common import (
    hf_clip_model,
    matmul_peak,
    open_clip_model,
    print_table,
    random_batch,
    rotate,
    setup,
)


def _openclip_loss(model: torch.nn.Module) -> Callable[[dict], torch.Tensor]:
    from open_clip.loss import ClipLoss

    loss_fn = ClipLoss()

    def step(b: dict) -> torch.Tensor:
        img, txt, scale = model(b["images"], b["input_ids"])
        return loss_fn(img, txt, scale)

    return step


def _mumo_loss(model: mumo.CLIP) -> Callable[[dict], torch.Tensor]:
    def step(b: dict) -> torch.Tensor:
        out = model(b["images"], b["input_ids"], b["attention_mask"])
        return mumo.clip_loss(out.image_embeds, out.text_embeds, out.logit_scale)

    return step


def _hf_loss(model: torch.nn.Module) -> Callable[[dict], torch.Tensor]:
    def step(b: dict) -> torch.Tensor:
        out = model(pixel_values=b["images"], input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        labels = torch.arange(b["images"].shape[0])
        return (
            F.cross_entropy(out.logits_per_image, labels) + F.cross_entropy(out.logits_per_text, labels)
        ) / 2

    return step


def _train_step(
    model: torch.nn.Module, loss_of: Callable[[dict], torch.Tensor], batch: dict
) -> Callable[[], None]:
    # One optimizer setting for every candidate, so the ratio measures the models.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

    def step() -> None:
        loss = loss_of(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _flops(fn: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="clip_vit_small_64")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--infer-batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-hf", action="store_true", help="leave out Hugging Face CLIPModel")
    p.add_argument("--no-infer", action="store_true", help="skip the inference comparison")
    p.add_argument("--profile", action="store_true", help="print mumo's top operators in one train step")
    p.add_argument("--json", help="write the results to this file too")
    args = p.parse_args()
    setup(args.threads)

    config = mumo.get_model_config(args.model)
    ours = mumo.create_model(args.model, seed=0)
    peers: dict[str, torch.nn.Module] = {"open_clip": open_clip_model(config)}
    if not args.no_hf:
        peers["hf"] = hf_clip_model(config, eos_token_id=config.text.vocab_size - 1)
    n_ours = sum(q.numel() for q in ours.parameters())
    for name, m in peers.items():
        n = sum(q.numel() for q in m.parameters())
        print(f"{name}: {n:,} parameters (mumo {n_ours:,})")

    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s, threads {torch.get_num_threads()}")
    batch = random_batch(config, args.batch_size)
    loss_fns = {"mumo": _mumo_loss(ours), "open_clip": _openclip_loss(peers["open_clip"])}
    models = {"mumo": ours, **peers}
    if "hf" in peers:
        loss_fns["hf"] = _hf_loss(peers["hf"])
    steps = {k: _train_step(models[k], loss_fns[k], batch) for k in loss_fns}
    flops = {k: _flops(steps[k]) for k in steps}
    times = rotate(steps, args.warmup, args.steps)
    results: dict[str, dict] = {"train": {}, "peak_gflops": peak}
    ref = args.batch_size / statistics.median(times["open_clip"])
    rows = []
    for k, ts in times.items():
        sps = args.batch_size / statistics.median(ts)
        mfu = flops[k] / statistics.median(ts) / 1e9 / peak
        results["train"][k] = {
            "samples_per_s": sps,
            "ratio": sps / ref,
            "mfu": mfu,
            "gflop_per_step": flops[k] / 1e9,
        }
        rows.append(
            (
                k,
                sps,
                f"x{sps / ref:.2f} vs open_clip  {flops[k] / 1e9:6.1f} GFLOP/step  {100 * mfu:4.1f}% of peak",
            )
        )
    print_table(f"train step, batch {args.batch_size}, median of {args.steps} (rotated)", rows)

    if not args.no_infer:
        results["infer"] = _inference(ours, peers, config, args)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            steps["mumo"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def _inference(ours: mumo.CLIP, peers: dict, config: mumo.CLIPConfig, args: argparse.Namespace) -> dict:
    b = random_batch(config, args.infer_batch_size, seed=1)
    img, ids, mask = b["images"], b["input_ids"], b["attention_mask"]
    for m in (ours, *peers.values()):
        m.eval()
    image_fns = {
        "mumo": lambda: ours.encode_image(img),
        "open_clip": lambda: peers["open_clip"].encode_image(img),
    }
    text_fns = {
        "mumo": lambda: ours.encode_text(ids, mask),
        "open_clip": lambda: peers["open_clip"].encode_text(ids),
    }
    if "hf" in peers:
        image_fns["hf"] = lambda: peers["hf"].get_image_features(pixel_values=img)
        text_fns["hf"] = lambda: peers["hf"].get_text_features(input_ids=ids, attention_mask=mask)
    out = {}
    with torch.inference_mode():
        for what, fns in (("encode_image", image_fns), ("encode_text", text_fns)):
            times = rotate(fns, 1, args.steps)
            ref = args.infer_batch_size / statistics.median(times["open_clip"])
            rows = []
            out[what] = {}
            for k, ts in times.items():
                sps = args.infer_batch_size / statistics.median(ts)
                out[what][k] = {"samples_per_s": sps, "ratio": sps / ref}
                rows.append((k, sps, f"x{sps / ref:.2f} vs open_clip"))
            print_table(f"{what}, batch {args.infer_batch_size}, median of {args.steps} (rotated)", rows)
    return out


if __name__ == "__main__":
    main()
