"""Image–caption pairs listed in a CSV / TSV or JSONL file, with images in a folder.

A bad image never stops training and never disappears silently: ``PairsDataset[i]`` returns a
:class:`Skipped` record instead of a sample, :func:`collate_skipping` splits a batch into the samples
and the skipped records, and a :class:`SkipReport` in the training loop counts them and prints every
path with its reason at the end of an epoch. The records travel inside the batch (not through a side
channel) because DataLoader workers are separate processes: the batch is the one thing that comes back.

    loader = DataLoader(dataset, batch_size=256, num_workers=8, collate_fn=collate_skipping)
    report = SkipReport()
    for samples, skipped in loader:
        report.add(skipped)
        images = torch.stack([s["image"] for s in samples])  # (B', 3, S, S), B' <= 256
        ...
    print(report.summary())
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from mumo.errors import DataError

IMAGE_KEYS = ("image", "filepath", "file", "path", "image_path")  # accepted image columns, in order
CAPTION_KEYS = ("caption", "title", "text")  # accepted caption columns, in order
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")  # a tab in the header makes either one tab-separated

Sample = dict[str, Any]  # {"image": (3, H, W) tensor, "caption": str, "index": int}


@dataclass(frozen=True)
class Skipped:
    """An image that could not be used, and why.

    Attributes:
        path: the image path as opened (``image_root / <annotation value>``).
        reason: short and specific: "file not found", "zero bytes", "not a decodable image",
            "truncated image", or another short phrase for rarer failures.
        index: the row of the annotation file (0-based, header excluded); -1 when unknown.
    """

    path: str
    reason: str
    index: int = -1


class PairsDataset(Dataset):
    """Image–caption pairs from an annotation file.

    The file is a CSV or TSV with a header row (the delimiter is sniffed from the header: a tab makes it
    TSV, OpenCLIP's default with columns ``filepath`` and ``title``) or, for ``.jsonl`` / ``.ndjson``
    files, one JSON object per line. Annotations are read and checked once, here; images are decoded
    lazily in ``__getitem__``.

    Args:
        annotations: path of the annotation file.
        image_root: folder that relative image paths start from; defaults to the annotation file's folder.
            Absolute image paths are used as they are.
        transform: maps an RGB PIL image to a (3, H, W) tensor, e.g. ``train_transform(224)``. Without
            one, the sample holds the uint8 (3, H, W) tensor at the file's own size. An exception from
            the transform propagates: it is a bug to fix, not a bad file to skip.
        image_key: the image column; auto-detected among :data:`IMAGE_KEYS` when None.
        caption_key: the caption column; auto-detected among :data:`CAPTION_KEYS` when None.

    Raises:
        DataError: the file is missing, empty or malformed, a column is not found, or a row lacks a value.
    """

    def __init__(
        self,
        annotations: str | Path,
        image_root: str | Path | None = None,
        transform: Callable[[Image.Image], Tensor] | None = None,
        image_key: str | None = None,
        caption_key: str | None = None,
    ) -> None:
        self.annotations = Path(annotations)
        if not self.annotations.is_file():
            raise DataError(f"annotation file {str(self.annotations)!r} not found")
        self.image_root = Path(image_root) if image_root is not None else self.annotations.parent
        self.transform = transform
        rows, keys = _read_rows(self.annotations)
        where = str(self.annotations)
        self.image_key = _pick_key(keys, image_key, IMAGE_KEYS, "image", where)
        self.caption_key = _pick_key(keys, caption_key, CAPTION_KEYS, "caption", where)
        # Two flat lists of str, not a list of row dicts: far less memory per row for large files.
        self.image_paths: list[str] = []
        self.captions: list[str] = []
        for line, row in rows:
            image, caption = row.get(self.image_key), row.get(self.caption_key)
            if not isinstance(image, str) or not image:
                raise DataError(f"{where}, line {line}: no image path in column {self.image_key!r}")
            if not isinstance(caption, str):
                raise DataError(f"{where}, line {line}: no caption text in column {self.caption_key!r}")
            self.image_paths.append(image)
            self.captions.append(caption)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> Sample | Skipped:
        """Sample ``index`` as ``{"image": (3, H, W), "caption": str, "index": int}``, or a
        :class:`Skipped` record when its image cannot be read. Never raises for a bad image."""
        path = self.image_root / self.image_paths[index]
        image = load_rgb(path)
        if isinstance(image, str):
            return Skipped(path=str(path), reason=image, index=index)
        tensor = self.transform(image) if self.transform is not None else TF.pil_to_tensor(image)
        return {"image": tensor, "caption": self.captions[index], "index": index}


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, by suffix), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# Decoded pixels at most, on every path that decodes images (training, evaluation, the CLI, the server):
# about 160 MB as RGB (Pillow holds 4 bytes a pixel). Pillow's own guard warns from 89 M, refuses from 179 M.
MAX_PIXELS = 40_000_000
# Modes Image.reduce averages correctly; others (palette, 1-bit, CMYK, 32-bit) are converted to RGB first.
_REDUCIBLE = ("RGB", "RGBA", "L", "LA")


class TooManyPixels(ValueError):
    """An image whose header declares more than ``limit`` pixels; raised before any pixel is decoded."""

    def __init__(self, width: int, height: int, limit: int) -> None:
        super().__init__(f"too many pixels ({width} x {height}; the limit is {limit:,})")
        self.width, self.height, self.limit = width, height, limit


def decode_image(
    source: str | Path | BinaryIO,
    max_pixels: int = MAX_PIXELS,
    min_side: int | None = None,
    hold: Callable[[int], AbstractContextManager[Any]] | None = None,
) -> Image.Image:
    """Decode an image into RGB after checking its size from the header: the one decoder of mumo.

    Args:
        source: a file path or a binary file object.
        max_pixels: refuse (with :class:`TooManyPixels`) an image whose header declares more pixels.
        min_side: when set, the image may come out smaller, by an integer factor, as long as its shorter
            side stays at least this: JPEG decodes at 1/2, 1/4 or 1/8 scale (``Image.draft``, which never
            allocates the full image); other formats are decoded in full, then reduced before the RGB copy.
            None decodes at the file's own size.
        hold: called with the number of pixels the decode will hold (after any JPEG draft), as a context
            manager around the decoding; the server's pixel budget (it may raise to refuse).

    Raises:
        TooManyPixels: from the header. ``UnidentifiedImageError``, ``Image.DecompressionBombError``,
            ``OSError``, ``SyntaxError``, ``ValueError``, ``EOFError``: Pillow's, for files it cannot read.
    """
    with Image.open(source) as im:
        width, height = im.size
        if width * height > max_pixels:
            raise TooManyPixels(width, height, max_pixels)
        if min_side:
            im.draft("RGB", (min_side, min_side))  # JPEG only (no-op elsewhere); both sides stay >= min_side
        with hold(im.width * im.height) if hold is not None else contextlib.nullcontext():
            im.load()  # inside the try of the callers: a truncated file fails here, not inside a transform
            out: Image.Image = im
            factor = min(im.size) // min_side if min_side else 1
            if factor >= 2:
                # Integer box averaging, as Pillow's own thumbnail() does before its final resampling
                # (reducing gap 2: callers pass min_side = 2 x their output size, so the resize after it
                # still antialiases). Whole boxes only, centred: a partial box at an edge would shift the
                # picture.
                dx, dy = (im.width % factor) // 2, (im.height % factor) // 2
                box = (dx, dy, dx + im.width // factor * factor, dy + im.height // factor * factor)
                out = (out if out.mode in _REDUCIBLE else out.convert("RGB")).reduce(factor, box)
            return out.convert("RGB")


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image | str:
    """Decode an image file fully into RGB, or return a short reason why it cannot be.

    ``load()`` runs inside the try so that a truncated file fails here, not later inside a transform.
    Note that a global ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` (set by some libraries) makes
    Pillow pad truncated files silently; this function does not change that global.

    Args:
        path: the image file.
        max_pixels: an image of more pixels (read from its header, before decoding) is refused.

    Returns:
        An RGB image, or the reason as a string.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "zero bytes"
        return decode_image(path, max_pixels)
    except FileNotFoundError:
        return "file not found"
    except IsADirectoryError:
        return "a folder, not a file"
    except PermissionError:
        return "permission denied"
    except Exception as e:  # noqa: BLE001 - mapped to a reason, or re-raised, by _decode_failure
        return _decode_failure(e)


def decode_rgb(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image | str:
    """:func:`load_rgb` for an image already in memory (a member of a shard, say)."""
    if not data:
        return "zero bytes"
    try:
        return decode_image(io.BytesIO(data), max_pixels)
    except Exception as e:  # noqa: BLE001 - mapped to a reason, or re-raised, by _decode_failure
        return _decode_failure(e)


def _decode_failure(e: Exception) -> str:
    """The short reason for a failed decode; an exception that is no image's fault propagates."""
    if isinstance(e, TooManyPixels):
        return str(e)
    if isinstance(e, UnidentifiedImageError):
        return "not a decodable image"
    if isinstance(e, Image.DecompressionBombError):
        return "too many pixels (Pillow's decompression-bomb guard)"
    if isinstance(e, (OSError, SyntaxError, ValueError, EOFError)):
        # Pillow reports a cut file as OSError("image file is truncated ...") for JPEG, PNG and GIF, and
        # as EOFError for a few formats; anything else is damaged data, reported with Pillow's words.
        if "truncated" in str(e).lower() or isinstance(e, EOFError):
            return "truncated image"
        return f"corrupt image data ({type(e).__name__}: {str(e)[:80]})"
    raise e


def collate_skipping(samples: Sequence[Sample | Skipped]) -> tuple[list[Sample], list[Skipped]]:
    """``collate_fn`` for a DataLoader over :class:`PairsDataset`: split the batch in two.

    Args:
        samples: what the dataset returned for each index of the batch.

    Returns:
        ``(kept, skipped)``: the sample dicts in batch order (possibly fewer than asked, possibly none)
        and the :class:`Skipped` records. Stacking and tokenising are left to the caller, which knows
        the image size and the tokenizer.
    """
    kept: list[Sample] = []
    skipped: list[Skipped] = []
    for s in samples:
        (skipped if isinstance(s, Skipped) else kept).append(s)
    return kept, skipped


@dataclass
class SkipReport:
    """Accumulates :class:`Skipped` records over an epoch and summarises them in one message."""

    skipped: list[Skipped] = field(default_factory=list)

    def add(self, skipped: Sequence[Skipped]) -> None:
        """Record the skipped images of one batch."""
        self.skipped.extend(skipped)

    @property
    def count(self) -> int:
        """How many images were skipped so far."""
        return len(self.skipped)

    def by_reason(self) -> dict[str, int]:
        """Counts per reason, most frequent first."""
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def summary(self, max_listed: int | None = None) -> str:
        """One line: how many images were skipped, then each path with its reason.

        Args:
            max_listed: list at most this many paths, then say how many more there are (by reason);
                None lists every one.
        """
        n = self.count
        if n == 0:
            return "no images were skipped"
        head = "1 image was skipped" if n == 1 else f"{n} images were skipped"
        shown = self.skipped if max_listed is None else self.skipped[:max_listed]
        text = f"{head}: " + ", ".join(f"{s.path} ({s.reason})" for s in shown)
        if len(shown) < n:
            rest = Counter(s.reason for s in self.skipped[len(shown) :]).most_common()
            text += f", and {n - len(shown)} more (" + ", ".join(f"{r}: {c}" for r, c in rest) + ")"
        return text

    def reset(self) -> None:
        """Forget everything, e.g. at the start of an epoch."""
        self.skipped.clear()


def _read_rows(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """Rows as ``(line number, mapping)`` and the column names (for JSONL: the union of keys)."""
    where = str(path)
    suffix = path.suffix.lower()
    if suffix not in (*CSV_SUFFIXES, *JSONL_SUFFIXES):
        raise DataError(
            f"{where}: an annotation file is CSV ({', '.join(CSV_SUFFIXES)}) or JSON Lines "
            f"({', '.join(JSONL_SUFFIXES)}), named so; got {suffix or 'no suffix'!r}"
        )
    data = path.read_bytes()
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark, which would glue itself to
        # the first column name.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{where}, line {line}: not UTF-8 text (byte {data[e.start]:#04x}); save the file as UTF-8, "
            f"e.g. `iconv -f latin1 -t utf-8 {path.name}` for a Latin-1 file"
        ) from None
    rows: list[tuple[int, dict[str, Any]]] = []
    if suffix in JSONL_SUFFIXES:
        keys: dict[str, None] = {}  # ordered set
        for line, record in enumerate(text.splitlines(), start=1):
            if not record.strip():
                continue
            try:
                obj = json.loads(record)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}, line {line}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}, line {line}: expected a JSON object, got {type(obj).__name__}")
            keys.update(dict.fromkeys(obj))
            rows.append((line, obj))
        columns = list(keys)
    else:
        header = text.split("\n", 1)[0]
        # Sniff from the header only: captions are free text full of commas and quotes, which is
        # what confuses csv.Sniffer on data rows; column names are not.
        delimiter = "\t" if "\t" in header else ","
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            columns = [c for c in (reader.fieldnames or []) if c]
            rows.extend((reader.line_num, row) for row in reader)
        except csv.Error as e:  # a NUL byte, a quote left open at the end of the file
            raise DataError(f"{where}, line {reader.line_num + 1}: not valid CSV ({e})") from None
    if not rows:
        raise DataError(f"annotation file {where!r} has no rows")
    return rows, columns


def _pick_key(found: list[str], asked: str | None, accepted: tuple[str, ...], what: str, where: str) -> str:
    if asked is not None:
        if asked not in found:
            raise DataError(f"{where!r} has no column {asked!r} for the {what}; its columns are {found}")
        return asked
    for key in accepted:
        if key in found:
            return key
    raise DataError(
        f"{where!r} has no {what} column: found {found}, expected one of {list(accepted)}; "
        f"pass {what}_key=... to name it"
    )
