"""Throughput of the built-in shapes data set on one thread.

    python -m benchmarks.shapes_speed [--images 2000] [--repeats 5] [--image-size 64]

Three stages, timed in rotation: drawing scenes (``generate_scene``), drawing + rendering pixels, and a
full ``ShapesDataset`` item (+ captions and the float tensor). Prints the median images/s of the runs.
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks._common import rotate, setup
from mumo.data import ShapesConfig, ShapesDataset, generate_scene, render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    setup(threads=1)
    config = ShapesConfig(image_size=args.image_size)
    dataset = ShapesDataset("train", args.images, config)
    n = args.images

    def scenes() -> None:
        for i in range(n):
            generate_scene(config, "train", i)

    def scenes_and_pixels() -> None:
        for i in range(n):
            render(generate_scene(config, "train", i), config.image_size)

    def dataset_items() -> None:
        for i in range(n):
            dataset[i]

    candidates = {
        "generate_scene": scenes,
        "generate + render": scenes_and_pixels,
        "ShapesDataset[i]": dataset_items,
    }
    times = rotate(candidates, warmup=1, repeats=args.repeats)
    print(
        f"\nshapes, {n} images of {args.image_size}×{args.image_size} per run, 1 thread, {args.repeats} runs"
    )
    width = max(len(k) for k in times)
    for name, seconds in times.items():
        runs = ", ".join(f"{n / s:.0f}" for s in seconds)
        print(f"  {name:<{width}}  {n / statistics.median(seconds):8.0f} images/s  (runs: {runs})")


if __name__ == "__main__":
    main()
