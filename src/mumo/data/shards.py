"""WebDataset shards: image–caption pairs in ``.tar`` files, written once and streamed back across
processes and loader workers, each sample exactly once per epoch, resumable at any batch.

    DIR/shard-000000.tar   000000000.png 000000000.txt 000000000.json  000000001.png …
    DIR/shard-000001.tar   …
    DIR/shards.json        {"format": "mumo-shards/1", "shards": [{"name": …, "samples": n}, …], …}

That is the layout ``img2dataset`` writes and OpenCLIP reads (one sample = the files sharing a key);
:mod:`mumo.data.shard_writer` writes it, and the ``webdataset`` library (the ``shards`` extra:
``pip install 'mumo[shards]'``) reads the tar members. ``shards.json`` holds each shard's sample count; a
folder of shards written by another tool is counted once when it has none.

How an epoch is read. With ``R`` ranks of ``W`` loader workers there are ``R * W`` readers. Epoch ``e``
orders the shards by a permutation drawn from ``(seed, e)`` and cuts that sample stream into ``R * W``
equal contiguous ranges, a multiple of ``batch_size`` each (the remainder, under one batch per reader, is
left out of that epoch; another permutation leaves out others). Reader ``(r, w)`` reads only its range:
a few shards, from the first sample it needs, shuffled in blocks of ``shuffle_block`` samples. Every reader
yields the same number of batches, so ranks stay in step, and the DataLoader's round robin over workers
makes batch ``k`` of rank ``r`` a pure function of ``(seed, layout, k)``: resuming at batch ``k`` opens the
shards at the right sample and replays nothing.

A damaged sample never ends the epoch: an image that does not decode, a missing image or caption, and the
samples of a shard that is missing or ends early are :class:`~mumo.data.pairs.Skipped` records with their
shard and key, in the batch where the sample would have been (a handler that counts, where webdataset's
default would stop). Random augmentations draw from a generator seeded by the sample's place in the epoch,
not by the worker that happens to read it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.transforms.v2 import functional as TF

from mumo._extras import require
from mumo.data.pairs import IMAGE_SUFFIXES, Skipped, decode_rgb
from mumo.errors import DataError

logger = logging.getLogger(__name__)

INDEX = "shards.json"
FORMAT = "mumo-shards/1"
IMAGE_EXTENSIONS = tuple(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)  # tar members: key.<ext>
CAPTION_EXTENSIONS = ("txt", "caption")
_PURPOSE = "data.kind=shards"  # what needs webdataset, for the missing-extra message


def _sample_key(name: str) -> str | None:
    """The key of a tar member ``key.ext`` (webdataset's rule: the extension starts at the first dot of the
    file name); None for names that are not sample files."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base or base.startswith("__"):
        return None
    return name[: len(name) - len(base)] + base.split(".", 1)[0]


def count_samples(path: Path) -> int:
    """Samples in one shard (distinct keys), read from the tar headers; a shard that ends early counts
    what it holds."""
    import tarfile

    keys: set[str] = set()
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                key = _sample_key(member.name) if member.isreg() else None
                if key is not None:
                    keys.add(key)
    except (tarfile.TarError, OSError, EOFError) as e:
        logger.warning("%s ends early (%s); counted the %d samples before", path, e, len(keys))
    return len(keys)


def read_index(root: str | Path) -> list[tuple[str, int]]:
    """``[(shard file name, samples), …]`` of a shard folder, from its ``shards.json``, or by counting
    the samples of every ``*.tar`` (sorted by name) when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"shard folder {root} does not exist; write one with `mumo data shard SRC --out {root}`"
        )
    index = root / INDEX
    if index.is_file():
        try:
            data = json.loads(index.read_text())
            return [(s["name"], int(s["samples"])) for s in data["shards"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{index} is not a shard index ({e}); delete it to count the shards again") from e
    tars = sorted(p for p in root.glob("*.tar"))
    if not tars:
        raise DataError(f"{root} holds no .tar shards")
    logger.warning("%s has no %s: counting the samples of %d shards", root, INDEX, len(tars))
    return [(p.name, count_samples(p)) for p in tars]


class _CountingHandler:
    """webdataset's exception handler that notes the error and carries on (its default re-raises, and
    ``warn_and_continue`` forgets): the reader turns the note into skipped records."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, exn: Exception) -> bool:
        self.errors.append(f"{type(exn).__name__}: {str(exn.args[0] if exn.args else exn)[:120]}")
        return True


def _shard_samples(path: Path, expected: int) -> Iterator[dict[str, Any] | Skipped]:
    """Exactly ``expected`` items from one shard: its samples (raw member bytes by extension, with
    ``__key__``), then a :class:`Skipped` for each sample it should have held but did not (missing or
    damaged shard). Members past ``expected`` are ignored (a stale index)."""
    require("webdataset", "shards", _PURPOSE)
    from webdataset.tariterators import group_by_keys, tar_file_expander

    handler = _CountingHandler()
    n, last = 0, None
    if path.is_file():
        with open(path, "rb") as stream:
            members = tar_file_expander([{"url": path.name, "stream": stream}], handler=handler)
            for sample in group_by_keys(members, handler=handler):
                if n == expected:
                    break
                n, last = n + 1, sample["__key__"]
                yield sample
        reason = "shard ends early" + (f" ({handler.errors[-1]})" if handler.errors else "")
        where = f"after key {last}" if last is not None else "at its start"
    else:
        reason, where = "shard file missing", ""
    for i in range(n, expected):
        yield Skipped(f"{path.name}#{i}" + (f" ({where})" if where else ""), reason, -1)


class ShardStream(IterableDataset):
    """Image–caption samples streamed from a shard folder; see the module docstring for the epoch plan.

    Call :meth:`plan` (the trainer does) before iterating: it fixes the batch size, this process's place,
    the number of loader workers and the batch to start from.

    Args:
        root: the shard folder.
        transform: PIL image -> (3, S, S) tensor (``train_transform``); None gives uint8 (3, H, W).
        seed: seed of the shard order, the block shuffles and the augmentations.
        shuffle_block: samples shuffled together within a reader's range (1: no shuffling within shards).

    Items: ``{"image", "caption", "key", "shard"}`` dicts, or :class:`Skipped` records.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Image.Image], Tensor] | None = None,
        seed: int = 0,
        shuffle_block: int = 1000,
    ) -> None:
        if shuffle_block < 1:
            raise DataError(f"shuffle_block must be >= 1, got {shuffle_block}")
        require("webdataset", "shards", _PURPOSE)  # here, not first in a loader worker
        self.root = Path(root)
        self.shards = read_index(self.root)
        self.total = sum(n for _, n in self.shards)
        self.transform, self.seed, self.shuffle_block = transform, seed, shuffle_block
        self.plan(batch_size=1)

    def plan(
        self, batch_size: int, rank: int = 0, world_size: int = 1, num_workers: int = 0, start: int = 0
    ) -> ShardStream:
        """Fix the epoch layout: ``world_size`` ranks of ``max(1, num_workers)`` readers, ``batch_size``
        samples per batch, starting at this rank's batch ``start`` (counted from the start of training)."""
        self.batch_size, self.rank, self.world_size, self.start = batch_size, rank, world_size, start
        self.readers_per_rank = max(1, num_workers)
        readers = world_size * self.readers_per_rank
        self.per_reader = self.total // (readers * batch_size) * batch_size
        if self.per_reader == 0:
            raise DataError(
                f"{self.root} holds {self.total} samples: too few for one batch of {batch_size} for each of "
                f"{readers} readers ({world_size} ranks x {self.readers_per_rank} loader workers); "
                "lower batch_size or data.num_workers, or add data"
            )
        self.batches_per_epoch = self.readers_per_rank * self.per_reader // batch_size
        return self

    def __len__(self) -> int:
        """Samples this rank reads per epoch (skipped records included)."""
        return self.batches_per_epoch * self.batch_size

    def texts(self, limit: int) -> list[str]:
        """The first ``limit`` captions in shard order (for learning a tokenizer), without decoding images."""
        out: list[str] = []
        for name, n in self.shards:
            for sample in _shard_samples(self.root / name, n):
                if len(out) == limit:
                    return out
                caption = _caption(sample) if isinstance(sample, dict) else None
                if caption is not None:
                    out.append(caption)
        return out

    def _shard_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(_seed(self.seed, epoch))
        return torch.randperm(len(self.shards), generator=g).tolist()

    def _raw(self, epoch: int, first: int, last: int) -> Iterator[tuple[int, dict[str, Any] | Skipped]]:
        """Positions ``[first, last)`` of epoch ``epoch``'s sample stream, raw, with their positions."""
        position = 0
        for shard in self._shard_order(epoch):
            name, n = self.shards[shard]
            if position + n > first:
                for i, sample in enumerate(_shard_samples(self.root / name, n)):
                    if position + i >= last:
                        return
                    if position + i >= first:
                        yield position + i, sample
            position += n
            if position >= last:
                return

    def _reader(self, epoch: int, reader: int, offset: int) -> Iterator[dict[str, Any] | Skipped]:
        """Reader ``reader``'s samples of epoch ``epoch``, from its ``offset``-th on: decoded, shuffled in
        blocks."""
        lo = reader * self.per_reader
        block = self.shuffle_block
        first_block = offset // block
        raw = self._raw(epoch, lo + first_block * block, lo + self.per_reader)
        for b in range(first_block, -(-self.per_reader // block)):
            items = [next(raw) for _ in range(min(block, self.per_reader - b * block))]
            g = torch.Generator().manual_seed(_seed(self.seed, epoch, reader, b))
            order = torch.randperm(len(items), generator=g).tolist()
            skip = offset - b * block if b == first_block else 0
            for j in order[skip:]:
                yield self._decode(epoch, *items[j])

    def _decode(
        self, epoch: int, position: int, sample: dict[str, Any] | Skipped
    ) -> dict[str, Any] | Skipped:
        if isinstance(sample, Skipped):
            return sample
        where = f"{sample['__url__']}/{sample['__key__']}"
        ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        caption = _caption(sample)
        if ext is None:
            return Skipped(where, "no image in the sample", -1)
        if caption is None:
            return Skipped(where, "no caption (.txt) in the sample", -1)
        image = decode_rgb(sample[ext])
        if isinstance(image, str):
            return Skipped(where, image, -1)
        if self.transform is None:
            tensor = TF.pil_to_tensor(image)
        else:  # the augmentation depends on the sample's place in the epoch, not on who reads it
            with torch.random.fork_rng(devices=[]):
                # the CPU generator alone: torch.manual_seed also queues CUDA seeding, ~1 ms a call
                torch.default_generator.manual_seed(_seed(self.seed, epoch, position, 1 << 40))
                tensor = self.transform(image)
        return {"image": tensor, "caption": caption, "key": sample["__key__"], "shard": sample["__url__"]}

    def __iter__(self) -> Iterator[dict[str, Any] | Skipped]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.readers_per_rank:
            raise DataError(
                f"ShardStream was planned for {self.readers_per_rank} readers per rank but runs in "
                f"{workers}; call plan(num_workers=…) with the DataLoader's num_workers"
            )
        # This worker makes every readers_per_rank-th batch of the rank from `start` on; all of them come
        # from one reader (batches_per_epoch is a multiple of readers_per_rank), batch after batch.
        q, stream, expected = self.start + worker, None, None
        while True:
            epoch, k = divmod(q, self.batches_per_epoch)
            reader = self.rank * self.readers_per_rank + k % self.readers_per_rank
            offset = k // self.readers_per_rank * self.batch_size
            if (epoch, reader, offset) != expected:
                stream = self._reader(epoch, reader, offset)
            for _ in range(self.batch_size):
                yield next(stream)
            expected = (epoch, reader, offset + self.batch_size)
            q += self.readers_per_rank


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from non-negative integers (numpy's SeedSequence: no overflow, no collisions
    between, say, (epoch 1, block 0) and (epoch 0, block 65537))."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _caption(sample: dict[str, Any]) -> str | None:
    ext = next((e for e in CAPTION_EXTENSIONS if e in sample), None)
    if ext is None:
        return None
    try:
        return sample[ext].decode("utf-8").strip()
    except UnicodeDecodeError:
        return None


# The writer moved to mumo.data.shard_writer; its names stay importable from here for one release. Looked
# up lazily: shard_writer imports this module (INDEX, FORMAT), so an import at the top would be a cycle.
_MOVED_TO_WRITER = (
    "ShardPair",
    "pairs_from_annotations",
    "pairs_from_folder",
    "pairs_from_shapes",
    "shard_source",
    "write_shards",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_WRITER:
        from mumo.data import shard_writer

        return getattr(shard_writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
