"""Reading image-caption pairs for training: a folder of PNGs + captions.jsonl, mumo's shard stream, and the
webdataset pipeline OpenCLIP's training script builds over the same shards.

    python -m benchmarks.data_loading [--samples 4096] [--batch 128] [--workers 0 2] [--repeats 3]

Every candidate decodes PNGs, applies ``train_transform`` (random resized crop to 64 px, normalise) and
stacks batches of images with their caption strings (no tokenising, same for all). Each run reads
``--samples`` samples from a fresh DataLoader (worker start-up included, as at every epoch start of a
non-persistent loader); candidates run in rotation; the median samples/s is printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks._common import rotate, setup
from mumo.data.pairs import PairsDataset
from mumo.data.sampler import ResumableBatchSampler
from mumo.data.shapes import ShapesConfig, write_shapes
from mumo.data.shard_writer import pairs_from_annotations, write_shards
from mumo.data.shards import ShardStream
from mumo.data.transforms import train_transform


def _stack(samples: list) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([s["image"] for s in samples]), [s["caption"] for s in samples]


def _stack_tuples(samples: list) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


def _identity(x):
    return x


def open_clip_pipeline(urls: list[str], transform, batch: int, workers: int):
    """OpenCLIP's ``get_wds_dataset`` for training, reduced to what these shards need: split shards by
    node and worker, samples through a shuffle buffer, decode to RGB PIL, map the transform, batch in the
    workers (``wds.WebLoader``)."""
    import webdataset as wds

    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_node,
        wds.split_by_worker,
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.shuffle(1000, initial=1000),
        wds.decode("pilrgb", handler=wds.warn_and_continue),
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.map_dict(image=transform, text=_identity),
        wds.to_tuple("image", "text"),
        wds.batched(batch, collation_fn=_stack_tuples, partial=False),
    )
    return wds.WebLoader(pipeline, batch_size=None, shuffle=False, num_workers=workers)


def candidates(folder: Path, shards: Path, transform, batch: int, n_batches: int, workers: int) -> dict:
    """One read of ``n_batches`` batches per candidate, each from a fresh loader with ``workers`` workers."""
    pairs = PairsDataset(folder / "captions.jsonl", transform=transform)
    urls = sorted(str(p) for p in shards.glob("*.tar"))

    def read(loader) -> None:
        it = iter(loader)
        for _ in range(n_batches):
            next(it)

    def folder_run() -> None:
        sampler = ResumableBatchSampler(len(pairs), batch, seed=0)
        read(DataLoader(pairs, batch_sampler=sampler, collate_fn=_stack, num_workers=workers))

    def shards_run() -> None:
        stream = ShardStream(shards, transform, shuffle_block=1000).plan(batch, num_workers=workers)
        read(DataLoader(stream, batch_size=batch, collate_fn=_stack, num_workers=workers))

    def open_clip_run() -> None:
        read(open_clip_pipeline(urls, transform, batch, workers))

    return {
        "folder + captions.jsonl (PairsDataset)": folder_run,
        "shards, mumo ShardStream": shards_run,
        "shards, OpenCLIP's webdataset pipeline": open_clip_run,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup(threads=1)
    transform = train_transform(64)
    n_batches = args.samples // args.batch
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_shapes(Path(tmp) / "folder", args.samples, config=ShapesConfig(image_size=64))
        shards = Path(tmp) / "shards"
        write_shards(pairs_from_annotations(folder / "captions.jsonl"), shards, shard_size=256)
        mib = sum(p.stat().st_size for p in shards.glob("*.tar")) / 2**20
        print(
            f"{args.samples} shapes PNGs of 64x64 ({mib:.1f} MiB of shards of 256); batch {args.batch}; "
            "1 thread per process"
        )
        for workers in args.workers:
            runs = candidates(folder, shards, transform, args.batch, n_batches, workers)
            times = rotate(runs, warmup=1, repeats=args.repeats)
            samples = n_batches * args.batch
            print(f"\n{workers} loader workers")
            width = max(len(k) for k in times)
            for name, seconds in times.items():
                each = ", ".join(f"{samples / s:.0f}" for s in seconds)
                median = samples / statistics.median(seconds)
                print(f"  {name:<{width}}  {median:7.0f} samples/s  (runs: {each})")


if __name__ == "__main__":
    main()
