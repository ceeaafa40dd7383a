"""Decoding speed against the memory floor: mumo's cached greedy decoding on plain and frozen weights (fp32,
bf16, int8) and Hugging Face's ``generate`` on a GPT-2 of the same shape, at batch 1 and 16.

    python -m benchmarks.generate [--model gpt_small|gpt_mini|coca] [--new-tokens N] [--prompt P]
                                  [--repeats 3] [--uncached]

``gpt_small`` is 8 blocks of width 512, 8 heads, vocabulary 8192 (29.5 M parameters); ``gpt_mini`` the
text shape of the recipes' captioners (4 blocks of width 128, 2 heads, vocabulary 1000); ``coca`` the model
of the CoCa recipe (``coca_conv_mini_64`` with its overrides), decoding captions from ``<bos>`` with the
image context (of random images, computed once) in its cross-attention. Random weights, room for prompt +
new tokens. transformers' ``GPT2LMHeadModel`` gets the same widths, depth, heads, vocabulary and context (SDPA
attention); for ``coca`` it cross-attends in every block (it cannot in only some), where mumo's CoCa does
in its 2 multimodal blocks.

Greedy decoding of exactly ``--new-tokens`` tokens (no stop token), every candidate timed in rotation;
tokens/s = batch x new tokens / median seconds. The floor: a cached step reads every weight of the decoder
once (the cross-attention's context projections excepted: their keys and values are computed once), so at
batch b no decoder makes more than b x bandwidth / weight bytes tokens a second; the bandwidth is this
machine's best 1 GiB copy (read + write counted), measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics

import torch

import mumo
from benchmarks._common import memory_bandwidth, rotate, setup
from mumo.generation import GenerationConfig, generate
from mumo.inference import freeze
from mumo.layers.frozen_linear import FrozenLinear, bf16_supported

TRANSFORMERS = "transformers"


def build(name: str, context_length: int) -> mumo.Captioner:
    """The benchmark's decoder (random weights) with room for ``context_length`` positions."""
    overrides: dict = {}
    if name == "coca":  # the recipe's model, as `mumo train coca` builds it
        from mumo.run.recipes import load

        recipe = load("coca", [])
        name, overrides = recipe.model, dict(recipe.model_overrides)
    base = mumo.get_model_config(name, **overrides).text.context_length
    overrides["text.context_length"] = max(base, context_length)
    return mumo.create_model(name, seed=0, **overrides).eval()


def hf_gpt2(config: mumo.CaptionerConfig) -> torch.nn.Module:
    """transformers' GPT-2 with the shapes of a mumo decoder (cross-attention when it has an image tower)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    t = config.text
    cfg = GPT2Config(
        vocab_size=t.vocab_size,
        n_positions=t.context_length,
        n_embd=t.embed_dim,
        n_layer=t.depth + config.decoder_depth,
        n_head=t.num_heads,
        n_inner=int(t.embed_dim * t.mlp_ratio),
        activation_function="gelu",
        layer_norm_epsilon=t.norm_eps,
        bos_token_id=1,
        eos_token_id=1,
        add_cross_attention=config.vision is not None,
        attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(cfg).eval()


def step_bytes(model: torch.nn.Module) -> int:
    """Bytes of weights one cached decoding step reads: the decoder's matrices and vectors, the output layer
    (the tied embedding, or the frozen copy), not the position codes or the image side."""
    decoder = ("text.", "decoder.", "decoder_norm.", "frozen_head")
    total = 0
    for name, module in model.named_modules():
        read = name.startswith(decoder) and not name.endswith("cross_attn.kv")
        if isinstance(module, FrozenLinear) and read:
            total += module.nbytes
    for name, p in model.named_parameters():
        skip = name.endswith(("pos_embed", "cross_attn.kv.weight", "cross_attn.kv.bias"))
        if model.frozen_head is not None and name == "text.token_embed.weight":
            skip = True  # a frozen model's step looks up one row; its output layer has its own copy
        if name.startswith(decoder) and not skip:
            total += p.numel() * p.element_size()
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt_small", help="gpt_small, gpt_mini, coca or another decoder")
    p.add_argument("--new-tokens", type=int, default=None, help="default: 64 (coca: 31, a full caption)")
    p.add_argument("--prompt", type=int, default=None, help="prompt tokens; default 16 (coca: <bos> alone)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--uncached", action="store_true", help="also time both without their KV cache")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    setup(args.threads)

    captions = args.model == "coca"
    new = args.new_tokens or (31 if captions else 64)
    prompt_len = args.prompt or (1 if captions else 16)
    ours = build(args.model, prompt_len + new)
    hf = hf_gpt2(ours.config)
    precisions = [x for x in args.precisions if x != "bf16" or bf16_supported()]
    if precisions != args.precisions:
        print("bf16 left out: this CPU has no bf16 instructions (AVX-512 BF16 or AMX)")
    frozen = {x: freeze(copy.deepcopy(ours), x) for x in precisions}
    bandwidth = memory_bandwidth()
    weight_bytes = {"fp32": step_bytes(ours), **{x: step_bytes(m) for x, m in frozen.items()}}
    weight_bytes[TRANSFORMERS] = sum(p.numel() * p.element_size() for p in hf.parameters())
    n_ours = sum(x.numel() for x in ours.parameters())
    print(
        f"decoder {args.model}: mumo {n_ours / 1e6:.2f} M parameters, GPT-2 "
        f"{sum(x.numel() for x in hf.parameters()) / 1e6:.2f} M; {new} new tokens after {prompt_len}; "
        f"copy bandwidth {bandwidth:.1f} GB/s; fp32 weights read per step {weight_bytes['fp32'] / 1e6:.1f} MB"
    )
    cached = GenerationConfig(max_new_tokens=new)
    uncached = GenerationConfig(max_new_tokens=new, use_cache=False)

    rows, figures = [], {}
    for b in args.batch_sizes:
        g = torch.Generator().manual_seed(b)
        prompt = torch.randint(4, ours.config.text.vocab_size, (b, prompt_len), generator=g)
        context = None
        if captions:
            with torch.inference_mode():
                images = torch.randn(b, 3, ours.image_size, ours.image_size, generator=g)
                context = ours.image_context(images)

        def hf_generate(use_cache: bool, prompt: torch.Tensor = prompt, context=context) -> None:
            extra = {"encoder_hidden_states": context} if context is not None else {}
            hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                use_cache=use_cache,
                pad_token_id=0,
                eos_token_id=None,
                **extra,
            )

        def ours_generate(model, config=cached, prompt=prompt, context=context):
            return lambda: generate(model, prompt, context=context, config=config)

        candidates = {"mumo fp32": ours_generate(ours)}
        candidates.update({f"mumo {x}, frozen": ours_generate(m) for x, m in frozen.items()})
        candidates[TRANSFORMERS] = lambda: hf_generate(True)
        if args.uncached:
            candidates["mumo fp32, no cache"] = ours_generate(ours, uncached)
            candidates[f"{TRANSFORMERS}, no cache"] = lambda: hf_generate(False)
        with torch.inference_mode():
            for name, fn in candidates.items():
                if name.startswith("mumo"):  # exactly the asked tokens, no early stop
                    assert fn().sequences.shape == (b, new), name
            times = rotate(candidates, warmup=1, repeats=args.repeats)
        rate = {k: b * new / statistics.median(v) for k, v in times.items()}
        figures[b] = rate
        for name, r in rate.items():
            kind = TRANSFORMERS if name.startswith(TRANSFORMERS) else name.split()[1].rstrip(",")
            floor = b * bandwidth * 1e9 / weight_bytes[kind]
            share = f"{100 * r / floor:.0f} %" if "no cache" not in name else ""
            rows.append(
                [
                    str(b),
                    name,
                    f"{r:.1f}",
                    f"{1000 * statistics.median(times[name]) / new:.2f}",
                    f"{weight_bytes[kind] / 1e6:.1f}",
                    share,
                    f"{r / rate[TRANSFORMERS]:.2f}x",
                ]
            )
    print("| batch | decoder | tokens/s | ms / step | MB read / step | share of floor | / transformers |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bandwidth_gb_s": bandwidth, **{str(k): v for k, v in figures.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
