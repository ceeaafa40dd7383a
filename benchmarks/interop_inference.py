"""Inference speed of mumo, OpenCLIP and Hugging Face CLIP on the same ViT-B-32 weights.

    python -m benchmarks.interop_inference [--model ViT-B-32] [--batch-size 32] [--repeats 5]

OpenCLIP's model is built with random weights (no download here); mumo imports them with
``load_open_clip`` and HF gets them through ``save_hf_clip``, so all three compute the same function
(checked before timing). encode_image and encode_text are timed in rotation under ``inference_mode``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from benchmarks._common import print_table, rotate, setup


def main() -> None:
    import open_clip
    from transformers import CLIPModel

    from mumo.interop.hf_clip import save_hf_clip
    from mumo.interop.open_clip import load_open_clip

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    setup(args.threads)

    ref = open_clip.create_model(args.model, pretrained=None).eval()
    ours = load_open_clip(open_clip.get_model_config(args.model), ref.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_clip(ours, tmp)
        hf = CLIPModel.from_pretrained(tmp, attn_implementation="sdpa").eval()
    size = ours.config.vision.image_size
    images = torch.randn(args.batch_size, 3, size, size)
    tokens = open_clip.get_tokenizer(args.model)(
        [f"a photo of object number {i}" for i in range(args.batch_size)]
    )
    mask = (tokens != 0).long()

    with torch.inference_mode():
        a, b, c = (
            ours.encode_image(images),
            ref.encode_image(images, normalize=True),
            hf.get_image_features(pixel_values=images),
        )
        c = c.pooler_output  # transformers 5 returns the projected features here
        c = c / c.norm(dim=-1, keepdim=True)
        print(
            f"max |mumo - open_clip| image embedding: {(a - b).abs().max():.2e}, "
            f"|mumo - hf|: {(a - c).abs().max():.2e}"
        )
        t_ours, t_ref = ours.encode_text(tokens, mask), ref.encode_text(tokens, normalize=True)
        print(
            f"max |mumo - open_clip| text embedding: {(t_ours - t_ref).abs().max():.2e}; texts are "
            f"{int(mask.sum(1).min())}-{int(mask.sum(1).max())} tokens padded to {tokens.shape[1]} "
            "(mumo drops the padding columns after the longest text: no pooled output depends on them)"
        )
        image_fns = {
            "mumo": lambda: ours.encode_image(images),
            "open_clip": lambda: ref.encode_image(images),
            "hf": lambda: hf.get_image_features(pixel_values=images),
        }
        text_fns = {
            "mumo": lambda: ours.encode_text(tokens, mask),
            "open_clip": lambda: ref.encode_text(tokens),
            "hf": lambda: hf.get_text_features(input_ids=tokens, attention_mask=mask),
        }
        for what, fns in (("encode_image", image_fns), ("encode_text", text_fns)):
            times = rotate(fns, 1, args.repeats)
            ref_sps = args.batch_size / statistics.median(times["open_clip"])
            rows = []
            for name, ts in times.items():
                sps = args.batch_size / statistics.median(ts)
                rows.append((name, sps, f"x{sps / ref_sps:.2f} vs open_clip"))
            print_table(
                f"{args.model} {what}, batch {args.batch_size}, {size} px, median of {args.repeats}", rows
            )


if __name__ == "__main__":
    main()
