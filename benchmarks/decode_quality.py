"""What frozen and quantized weights cost a trained captioner: CIDEr-D, attribute accuracy and speed of its
captions of the built-in test scenes, as trained and frozen at fp32, bf16 and int8.

    python -m benchmarks.decode_quality RUN [--scenes 500] [--batch-size 100] [--beam 1]

RUN is a captioner's model or run folder (the CoCa recipe's: ``mumo train coca``). bf16 freezes every
layer (by default layers under ``MIN_PACKED_SIZE`` weights keep fp32: all of a mini model's). Every variant
captions the same ``--scenes`` test scenes, greedy unless ``--beam``; captions/s is the rate of
``caption_images`` on the first ``--batch-size`` of them (image tower and decoding; median of 3, rotated).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from benchmarks._common import rotate, setup
from mumo.data.shapes import ShapesConfig, ShapesDataset
from mumo.data.transforms import normalize
from mumo.eval.captioning import evaluate_captions
from mumo.generation import GenerationConfig, caption_images
from mumo.inference import freeze, load
from mumo.layers.frozen_linear import bf16_supported


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a captioner's model or run folder")
    p.add_argument("--scenes", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    setup(args.threads)
    model, tokenizer = load(args.run)
    config = ShapesConfig(image_size=model.image_size, seed=0)
    generation = GenerationConfig(max_new_tokens=model.context_length, num_beams=args.beam)
    variants = {"fp32 (as trained)": model, "fp32, frozen": freeze(copy.deepcopy(model), "fp32")}
    if bf16_supported():  # every layer: by default layers this small keep fp32, which would measure nothing
        variants["bf16, frozen (every layer)"] = freeze(copy.deepcopy(model), "bf16", min_size=0)
    variants["int8, frozen"] = freeze(copy.deepcopy(model), "int8")
    dataset = ShapesDataset("test", args.batch_size, config)
    images = normalize(torch.stack([dataset[i]["image"] for i in range(args.batch_size)]))
    with torch.inference_mode():
        times = rotate(
            {k: lambda m=m: caption_images(m, tokenizer, images, generation) for k, m in variants.items()},
            warmup=1,
            repeats=3,
        )
    print(f"{args.run}: {args.scenes} test scenes, {'greedy' if args.beam == 1 else f'beam {args.beam}'}")
    print("| weights | CIDEr-D | attribute accuracy | captions exact | captions/s | CIDEr-D / fp32 |")
    print("|---|---|---|---|---|---|")
    reference = None
    for name, m in variants.items():
        metrics = evaluate_captions(
            m, tokenizer, config, "test", args.scenes, generation, args.batch_size, meteor=False
        )
        reference = reference or metrics
        rate = args.batch_size / statistics.median(times[name])
        print(
            f"| {name} | {metrics['CIDEr-D']:.3f} | {100 * metrics['attribute_accuracy']:.2f} % | "
            f"{100 * metrics['caption_exact']:.1f} % | {rate:.1f} | "
            f"{metrics['CIDEr-D'] / reference['CIDEr-D']:.4f} |"
        )


if __name__ == "__main__":
    main()
