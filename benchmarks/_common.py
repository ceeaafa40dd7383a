"""Shared benchmark plumbing: thread setup, peers built from a mumo config, rotation timing, tables.

Candidates are timed in rotation (A B A B …) in one process, so drifting machine load hits them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

import mumo


def setup(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)


def matmul_peak(n: int = 4096, repeats: int = 10, warmup: int = 3) -> float:
    """Best fp32 GEMM throughput in GFLOP/s over ``repeats`` timed products after ``warmup`` untimed ones:
    the denominator of model FLOP utilisation. The best, not the median: a peak is what the machine can
    do, and a median of cold or disturbed runs understates it, so utilisation came out above 100 %."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    for _ in range(warmup):  # thread pool, page faults of the output, CPU frequency
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def memory_bandwidth(nbytes: int = 2**30, repeats: int = 5) -> float:
    """Best copy rate of a ``nbytes`` buffer in GB/s, read and write counted (the memory traffic), after one
    untimed copy: what streaming weights from memory can reach. The buffers are filled first, since an
    untouched one maps the kernel's zero page and reads from cache."""
    src, dst = torch.ones(nbytes // 4), torch.zeros(nbytes // 4)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best / 1e9


def rotate(candidates: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Run each candidate ``warmup`` times, then ``repeats`` rounds of one call each; seconds per call."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def open_clip_model(config: mumo.CLIPConfig, custom_block: bool = False) -> torch.nn.Module:
    """OpenCLIP's CLIP with the same shapes as a mumo ViT CLIP config (GELU, LayerNorm, class token)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    v, t = config.vision, config.text
    block = {"block_type": "custom"} if custom_block else {}
    vision = CLIPVisionCfg(
        layers=v.depth,
        width=v.embed_dim,
        head_width=v.embed_dim // v.num_heads,
        mlp_ratio=v.mlp_ratio,
        patch_size=v.patch_size,
        image_size=v.image_size,
        **block,
    )
    text = CLIPTextCfg(
        context_length=t.context_length,
        vocab_size=t.vocab_size,
        width=t.embed_dim,
        heads=t.num_heads,
        layers=t.depth,
        mlp_ratio=t.mlp_ratio,
        **block,
    )
    return open_clip.CLIP(embed_dim=config.embed_dim, vision_cfg=vision, text_cfg=text)


def hf_clip_model(config: mumo.CLIPConfig, eos_token_id: int) -> torch.nn.Module:
    """transformers' CLIPModel with the same shapes (GELU, SDPA attention)."""
    from transformers import CLIPConfig, CLIPModel

    v, t = config.vision, config.text
    hf = CLIPConfig(
        text_config=dict(
            vocab_size=t.vocab_size,
            hidden_size=t.embed_dim,
            intermediate_size=int(t.embed_dim * t.mlp_ratio),
            num_hidden_layers=t.depth,
            num_attention_heads=t.num_heads,
            max_position_embeddings=t.context_length,
            hidden_act="gelu",
            eos_token_id=eos_token_id,
            pad_token_id=0,
            bos_token_id=1,
        ),
        vision_config=dict(
            hidden_size=v.embed_dim,
            intermediate_size=int(v.embed_dim * v.mlp_ratio),
            num_hidden_layers=v.depth,
            num_attention_heads=v.num_heads,
            image_size=v.image_size,
            patch_size=v.patch_size,
            hidden_act="gelu",
        ),
        projection_dim=config.embed_dim,
    )
    return CLIPModel._from_config(hf, attn_implementation="sdpa")


def random_batch(config: mumo.CLIPConfig, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images and right-padded token rows whose last real token is the end token (id vocab-1, the
    largest, so OpenCLIP's argmax pooling finds it too)."""
    g = torch.Generator().manual_seed(seed)
    v, t = config.vision, config.text
    images = torch.randn(batch_size, v.in_chans, v.image_size, v.image_size, generator=g)
    eot = t.vocab_size - 1
    lengths = torch.randint(4, t.context_length + 1, (batch_size,), generator=g)
    ids = torch.randint(3, eot, (batch_size, t.context_length), generator=g)
    pos = torch.arange(t.context_length)[None]
    mask = (pos < lengths[:, None]).long()
    ids = torch.where(pos == lengths[:, None] - 1, torch.full_like(ids, eot), ids) * mask
    return {"images": images, "input_ids": ids, "attention_mask": mask}


def print_table(title: str, rows: list[tuple[str, float, str]]) -> None:
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:8.1f} samples/s  {note}")
