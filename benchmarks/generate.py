"""Decoding speed: mumo's generate with and without its KV cache, and Hugging Face's ``generate`` on a GPT-2
of the same shape, at batch 1 and 16.

    python -m benchmarks.generate [--model gpt_mini] [--new-tokens 64] [--prompt 16] [--repeats 3]

The decoder is ``gpt_small`` (8 blocks of width 512, 8 heads, vocabulary 8192; 29.5 M parameters) or,
with ``--model gpt_mini``, the text shape of the captioners the recipes train (4 blocks of width 128,
2 heads, vocabulary 1000), with random weights and room for prompt + new tokens; transformers'
``GPT2LMHeadModel`` gets the same widths, depth, heads, vocabulary and context (SDPA attention). Greedy
decoding of exactly ``--new-tokens`` tokens (no stop token) after a random prompt, timed in rotation;
tokens/s = batch x new tokens / seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

import mumo
from benchmarks._common import rotate, setup
from mumo.generation import GenerationConfig, generate


def hf_gpt2(config: mumo.CaptionerConfig) -> torch.nn.Module:
    """transformers' GPT-2 with the shapes of a text-only mumo decoder."""
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
        attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(cfg).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt_small")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    setup(args.threads)

    # Room for the prompt and every new token (gpt_mini, say, is built for 32-token captions).
    context = max(mumo.get_model_config(args.model).text.context_length, args.prompt + args.new_tokens)
    ours = mumo.create_model(args.model, seed=0, **{"text.context_length": context}).eval()
    hf = hf_gpt2(ours.config)
    n_ours = sum(x.numel() for x in ours.parameters())
    n_hf = sum(x.numel() for x in hf.parameters())
    print(f"decoder {args.model}: mumo {n_ours / 1e6:.2f} M parameters, GPT-2 {n_hf / 1e6:.2f} M")
    new = args.new_tokens
    cached = GenerationConfig(max_new_tokens=new)
    uncached = GenerationConfig(max_new_tokens=new, use_cache=False)

    rows, figures = [], {}
    for b in args.batch_sizes:
        prompt = torch.randint(
            4, ours.config.text.vocab_size, (b, args.prompt), generator=torch.Generator().manual_seed(b)
        )

        def hf_generate(use_cache: bool, prompt: torch.Tensor = prompt) -> None:
            hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                use_cache=use_cache,
                pad_token_id=0,
                eos_token_id=None,
            )

        candidates = {
            "mumo, KV cache": lambda prompt=prompt: generate(ours, prompt, config=cached),
            "mumo, no cache": lambda prompt=prompt: generate(ours, prompt, config=uncached),
            "transformers generate, KV cache": lambda: hf_generate(True),
            "transformers generate, no cache": lambda: hf_generate(False),
        }
        with torch.inference_mode():
            out = generate(ours, prompt, config=cached)
            assert out.sequences.shape == (b, new)  # exactly the asked tokens, no early stop
            times = rotate(candidates, warmup=1, repeats=args.repeats)
        rate = {k: b * new / statistics.median(v) for k, v in times.items()}
        figures[b] = rate
        for name, r in rate.items():
            rows.append([str(b), name, f"{r:.1f}", f"{1000 * statistics.median(times[name]) / new:.2f}"])
        ratio = rate["mumo, KV cache"] / rate["mumo, no cache"]
        vs_hf = rate["mumo, KV cache"] / rate["transformers generate, KV cache"]
        rows.append([str(b), f"cache / no cache: {ratio:.2f}x;  mumo / transformers: {vs_hf:.2f}x", "", ""])
    print("| batch | decoder | tokens/s | ms / token step |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({str(k): v for k, v in figures.items()}, f, indent=2)


if __name__ == "__main__":
    main()
