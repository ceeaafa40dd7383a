"""Writing WebDataset shards: image–caption pairs from the built-in set, an annotation file or a folder of
captioned images, into the ``.tar`` layout that :class:`~mumo.data.shards.ShardStream` streams back
(``DIR/shard-NNNNNN.tar`` + ``DIR/shards.json``; see :mod:`mumo.data.shards`).

Writing needs the ``webdataset`` package (``pip install 'mumo[shards]'``); listing the pairs does not.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mumo._extras import require
from mumo._io import atomic_write_json
from mumo.data.pairs import IMAGE_SUFFIXES, PairsDataset, Skipped, SkipReport, list_images, load_rgb
from mumo.data.shapes import ShapesConfig, render, scene_and_caption
from mumo.data.shards import FORMAT, INDEX
from mumo.errors import DataError


@dataclass(frozen=True)
class ShardPair:
    """One sample to write: its ``key``, the encoded image (``ext`` names its format), the caption and
    whatever else should travel with it (``meta``, stored as the sample's ``.json``)."""

    key: str
    image: bytes
    ext: str
    caption: str
    meta: dict[str, Any]


def write_shards(
    pairs: Iterable[ShardPair | Skipped],
    out_dir: str | Path,
    shard_size: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``pairs`` into ``out_dir/shard-NNNNNN.tar`` files of ``shard_size`` samples each, then the
    index ``shards.json``.

    Each shard is written under a temporary name and renamed when complete, and the index goes last, so an
    interrupted conversion never leaves a shard that looks whole. :class:`Skipped` items (unreadable
    sources) are not written; they are counted and listed in the returned summary.

    Returns:
        ``{"shards": n, "samples": n, "skipped": [{"path", "reason"}, …]}``.
    """
    wds = require("webdataset", "shards", "writing shards")
    if shard_size < 1:
        raise DataError(f"shard size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.tar")):
        raise DataError(f"{out} already holds .tar files; write the shards to a new folder")
    shards: list[dict[str, Any]] = []
    skipped = SkipReport()
    writer, tmp, count = None, None, 0

    def close() -> None:
        nonlocal writer, count
        if writer is None:
            return
        writer.close()
        name = f"shard-{len(shards):06d}.tar"
        os.replace(tmp, out / name)
        shards.append({"name": name, "samples": count})
        writer, count = None, 0

    for pair in pairs:
        if isinstance(pair, Skipped):
            skipped.add([pair])
            continue
        if writer is None:
            tmp = out / f".shard-{len(shards):06d}.tar.tmp"
            writer = wds.TarWriter(str(tmp))
        writer.write({"__key__": pair.key, pair.ext: pair.image, "txt": pair.caption, "json": pair.meta})
        count += 1
        if progress is not None:
            progress(1)
        if count == shard_size:
            close()
    close()
    if not shards:
        raise DataError("no readable samples to write: " + skipped.summary(max_listed=20))
    total = sum(s["samples"] for s in shards)
    atomic_write_json(out / INDEX, {"format": FORMAT, "samples": total, "shards": shards})
    return {
        "shards": len(shards),
        "samples": total,
        "skipped": [{"path": s.path, "reason": s.reason} for s in skipped.skipped],
    }


def _encoded(path: Path) -> tuple[bytes, str] | str:
    """The file's bytes and extension when it decodes as an image (checked, not trusted), or the reason."""
    image = load_rgb(path)
    if isinstance(image, str):
        return image
    ext = path.suffix.lower().lstrip(".")
    return path.read_bytes(), "jpg" if ext == "jpeg" else ext


def pairs_from_annotations(annotations: str | Path, image_root: str | Path | None = None) -> Iterator:
    """:class:`ShardPair` items (or :class:`Skipped`) from a CSV / TSV / JSONL file, as
    :class:`~mumo.data.pairs.PairsDataset` reads it; the image files are copied byte for byte."""
    data = PairsDataset(annotations, image_root)
    for i, (name, caption) in enumerate(zip(data.image_paths, data.captions, strict=True)):
        path = data.image_root / name
        encoded = _encoded(path)
        if isinstance(encoded, str):
            yield Skipped(str(path), encoded, i)
        else:
            yield ShardPair(f"{i:09d}", encoded[0], encoded[1], caption, {"source": name})


def pairs_from_folder(folder: str | Path) -> Iterator:
    """:class:`ShardPair` items from a folder of images with same-named ``.txt`` captions beside them
    (``a/b.jpg`` + ``a/b.txt``, as img2dataset's ``files`` output), in sorted path order."""
    root = Path(folder)
    images = list_images(root)
    if not images:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for i, path in enumerate(images):
        text = path.with_suffix(".txt")
        if not text.is_file():
            yield Skipped(str(path), f"no caption file {text.name}", i)
            continue
        encoded = _encoded(path)
        if isinstance(encoded, str):
            yield Skipped(str(path), encoded, i)
        else:
            caption = text.read_text(encoding="utf-8").strip()
            yield ShardPair(
                f"{i:09d}", encoded[0], encoded[1], caption, {"source": str(path.relative_to(root))}
            )


def pairs_from_shapes(
    n: int, split: str = "train", config: ShapesConfig | None = None
) -> Iterator[ShardPair]:
    """``n`` scenes of the built-in shapes set as PNG + caption (the caption :class:`ShapesDataset`
    gives scene ``i``), with the scene's objects and relation in the metadata."""
    config = config or ShapesConfig()
    for i in range(n):
        scene, caption = scene_and_caption(config, split, i)
        buffer = io.BytesIO()
        Image.fromarray(render(scene, config.image_size)).save(buffer, format="PNG")
        meta = {
            "split": split,
            "index": i,
            "objects": [dataclasses.asdict(o) for o in scene.objects],
            "relation": scene.relation,
        }
        yield ShardPair(f"{i:09d}", buffer.getvalue(), "png", caption, meta)


def shard_source(src: str, size: int = 1000, image_size: int = 64, seed: int = 0) -> Iterator:
    """The pairs of a ``mumo data shard`` source: 'shapes' (the built-in set, ``size`` scenes), a CSV /
    TSV / JSONL annotation file, or a folder of images with ``.txt`` captions."""
    if src == "shapes":
        return pairs_from_shapes(size, config=ShapesConfig(image_size=image_size, seed=seed))
    path = Path(src)
    if path.is_dir():
        return pairs_from_folder(path)
    if path.is_file():
        return pairs_from_annotations(path)
    raise DataError(
        f"{src!r} is neither 'shapes', an annotation file (CSV / TSV / JSONL) nor a folder of images"
    )
