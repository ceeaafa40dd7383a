"""A searchable index of a folder of images: unit image embeddings in FAISS, with the paths they came from.

    INDEX/
        index.json        format, model (checkpoint path + weights checksum), width, count, FAISS kind
        vectors.npy       (N, E) float32 unit embeddings, row i = manifest line i
        manifest.jsonl    {"path": relative to the images folder, "size": bytes, "mtime_ns": …} per row
        skipped.json      files that could not be read, with reasons
        index.faiss       exact inner product (IndexFlatIP) below ``ivf_threshold`` vectors, IVF above
        pending/          embedded batches of a run still in progress (kept if it is interrupted), and
                          model.json: the weights checksum of the model that embedded them

Updating is incremental: files whose path, size and modification time are unchanged keep their vectors;
new or changed files are embedded; deleted ones drop out. Embeddings are written to ``pending/`` every
``commit_every`` images, so an interrupted run (Ctrl-C, ``kill -9``) resumes where it stopped; a run with
another model drops them (with a warning) rather than mixing two models' vectors. The FAISS index is always
rebuilt from ``vectors.npy`` (seconds even at 100k vectors), so it never drifts from it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from mumo._extras import require
from mumo._io import atomic_write, atomic_write_json, sha256_file
from mumo.data.pairs import IMAGE_SUFFIXES, Skipped, load_rgb
from mumo.errors import DataError
from mumo.inference import embed_images, embed_texts, image_transform, images_under

logger = logging.getLogger(__name__)

FORMAT = "mumo-index/1"
IVF_THRESHOLD = 50_000  # below: exact search; above: IVF, a few % of the exact search's time per query


def _faiss() -> ModuleType:
    """faiss (the [serve] extra, package faiss-cpu), or the one-line MissingExtraError naming it; imported
    when an index is built or read, so the rest of mumo never needs it."""
    return require("faiss", "serve", "the image index (mumo index / search / serve)")


@dataclass(frozen=True)
class Hit:
    """One search result: the image's path (relative to the indexed folder), its absolute path, the
    cosine similarity to the query, and its row in the index."""

    path: str
    file: Path
    score: float
    row: int


def weights_checksum(model_dir: str | Path) -> str:
    """SHA-256 of a model folder's ``model.safetensors``: vectors of two different models do not mix."""
    return sha256_file(Path(model_dir) / "model.safetensors")


def check_model(meta: dict[str, Any] | None, model_dir: str | Path, index_dir: str | Path) -> str:
    """The checksum of ``model_dir``'s weights, after making sure the index described by ``meta`` (its
    ``index.json``; None for a new index) was built with those same weights."""
    checksum = weights_checksum(model_dir)
    if meta is not None and meta.get("weights_sha256") != checksum:
        raise DataError(
            f"{index_dir} was built with another model ({meta.get('model')}); its vectors do not match "
            f"{model_dir}'s: index into a new folder, or rebuild {index_dir}"
        )
    return checksum


def _saved_rows(
    out: Path, meta: dict[str, Any] | None, checksum: str, model_dir: str | Path
) -> list[tuple[Path, Path]]:
    """The (vectors, manifest) files whose rows ``model_dir`` (weights ``checksum``) may reuse: the
    committed ``vectors.npy`` when an ``index.json`` vouches for it (``check_model`` has compared the
    checksums), then the parts in ``pending/`` when its ``model.json`` names the same weights. Rows of another
    (or an unknown) model are dropped with a warning, never mixed in."""
    committed = (out / "vectors.npy", out / "manifest.jsonl")
    usable = [committed] if meta is not None else []
    if meta is None and committed[0].is_file():  # a first build killed between vectors.npy and index.json
        logger.warning(
            "dropped %d embedded rows in %s: no index.json says which model made them",
            _count_rows(committed[1]),
            committed[0],
        )
    pending = out / "pending"
    parts = sorted(pending.glob("part-*.npy"))
    owner_file = pending / "model.json"
    owner = json.loads(owner_file.read_text()) if owner_file.is_file() else {}
    if parts and owner.get("weights_sha256") != checksum:
        logger.warning(
            "dropped %d embedded rows in %s: they were made by another model (%s), not by %s; embedding "
            "again",
            sum(_count_rows(part.with_suffix(".jsonl")) for part in parts),
            pending,
            owner.get("model", "unknown: no pending/model.json"),
            model_dir,
        )
        shutil.rmtree(pending)
        parts = []
    return usable + [(part, part.with_suffix(".jsonl")) for part in parts]


def _count_rows(manifest: Path) -> int:
    return len(manifest.read_text(encoding="utf-8").splitlines()) if manifest.is_file() else 0


def _file_entry(root: Path, path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_rows(vectors: Path, manifest: Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line]
    array = np.load(vectors)
    if array.shape[0] != len(rows):
        raise DataError(f"{vectors} has {array.shape[0]} rows but {manifest} lists {len(rows)}; rebuild it")
    return array, rows


def _write_rows(vectors: Path, manifest: Path, array: np.ndarray, rows: list[dict[str, Any]]) -> None:
    # manifest first, vectors last: a reader that finds both with equal lengths has a consistent pair
    atomic_write(
        manifest, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    )
    atomic_write(vectors, lambda p: _save_npy(p, array))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a temporary name
        np.save(f, array)


def build_faiss(vectors: np.ndarray, ivf_threshold: int = IVF_THRESHOLD, nprobe: int = 16) -> Any:
    """A FAISS inner-product index over (N, E) unit vectors: exact (``IndexFlatIP``) for N below
    ``ivf_threshold``, else ``IndexIVFFlat`` with about 4 sqrt(N) lists (trained on the vectors themselves)
    searching ``nprobe`` of them."""
    faiss = _faiss()
    n, dim = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if n < ivf_threshold:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # FAISS wants >= 39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(nprobe, nlist)
    index.add(vectors)
    return index


class ImageIndex:
    """An index folder, loaded for search (see the module docstring for the layout).

    Attributes:
        root: the index folder.
        images_dir: the folder the indexed paths are relative to.
        rows: one manifest entry per vector.
        meta: ``index.json``.
    """

    def __init__(self, root: str | Path) -> None:
        faiss = _faiss()
        self.root = Path(root)
        if not (self.root / "index.json").is_file():
            raise DataError(f"{self.root} is not an index (no index.json); build one with `mumo index`")
        self.meta = json.loads((self.root / "index.json").read_text())
        if self.meta.get("format") != FORMAT:
            raise DataError(f"{self.root}: index format {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.images_dir = Path(self.meta["images_dir"])
        _, self.rows = _read_rows(self.root / "vectors.npy", self.root / "manifest.jsonl")
        self.faiss = faiss.read_index(str(self.root / "index.faiss"))
        if self.faiss.ntotal != len(self.rows):
            raise DataError(
                f"{self.root}: index.faiss holds {self.faiss.ntotal} vectors, manifest {len(self.rows)}"
            )

    def __len__(self) -> int:
        return len(self.rows)

    def file(self, row: int) -> Path | None:
        """The image file of row ``row``, resolved; None when there is no such row or its manifest path
        does not lead to an image file under ``images_dir``: an absolute path, a ``..``, a symlink out of the
        folder, a suffix no index lists, a file deleted since. (A manifest is only a file: it may be crafted.)
        """
        if not 0 <= row < len(self.rows):
            return None
        name = self.rows[row].get("path")
        relative = PurePosixPath(name) if isinstance(name, str) else None
        if relative is None or relative.is_absolute() or ".." in relative.parts:
            return None
        root = self.images_dir.resolve()
        path = (root / relative).resolve()  # follows symlinks: where the bytes really are
        if not path.is_relative_to(root) or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            return None
        return path

    def search_vectors(self, queries: torch.Tensor | np.ndarray, k: int = 10) -> list[list[Hit]]:
        """The ``k`` best images for each of (M, E) unit query vectors, best first."""
        if k < 1:
            raise DataError(f"k must be >= 1, got {k}")
        q = queries.detach().cpu().float().numpy() if isinstance(queries, torch.Tensor) else queries
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1, self.meta["embed_dim"])
        scores, ids = self.faiss.search(q, min(k, len(self.rows)))
        return [
            [
                Hit(self.rows[i]["path"], self.images_dir / self.rows[i]["path"], float(s), int(i))
                for s, i in zip(row_scores, row_ids, strict=True)
                if i >= 0
            ]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    def search(self, model: nn.Module, tokenizer: Any, queries: list[str], k: int = 10) -> list[list[Hit]]:
        """The ``k`` best images for each text query, embedded by ``model`` (the index's own model)."""

        return self.search_vectors(embed_texts(model, tokenizer, queries), k)


def update_index(
    model: nn.Module,
    model_dir: str | Path,
    images_dir: str | Path,
    out: str | Path,
    batch_size: int = 64,
    commit_every: int = 1024,
    ivf_threshold: int = IVF_THRESHOLD,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Build or bring up to date the index ``out`` of every image under ``images_dir``.

    Args:
        model: the dual encoder (with ``encode_image`` and ``image_size``) loaded from ``model_dir``.
        model_dir: its folder; its weights' checksum is recorded, and an index of another model is refused.
        images_dir: the folder of images (searched recursively).
        out: the index folder (created if needed).
        batch_size: images per forward pass.
        commit_every: images embedded between writes to ``pending/`` (what an interrupted run keeps).
        ivf_threshold: vectors from which the FAISS index is IVF instead of exact.
        progress: called as ``progress(done, total)`` after each batch of the images to embed.

    Returns:
        ``{"count", "embedded", "kept", "removed", "skipped": [{"path", "reason"}], "kind"}``.
    """

    faiss = _faiss()  # before any image is embedded: a missing extra should not cost the embedding first
    root, out = Path(images_dir).resolve(), Path(out)
    files = images_under(root)  # an empty folder is refused here, before out/ is created
    out.mkdir(parents=True, exist_ok=True)
    pending = out / "pending"
    meta_path = out / "index.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    checksum = check_model(meta, model_dir, out)
    have: dict[str, tuple[dict[str, Any], np.ndarray]] = {}  # path -> (manifest entry, vector)

    def remember(array: np.ndarray, rows: list[dict[str, Any]]) -> None:
        have.update({r["path"]: (r, v) for r, v in zip(rows, array, strict=True)})

    # What we have: the committed rows, then the batches a previous run of this model left in pending/ (each
    # written manifest first, so a vectors file always has its manifest).
    for vectors, manifest in _saved_rows(out, meta, checksum, model_dir):
        if vectors.is_file():
            remember(*_read_rows(vectors, manifest))
    current = [_file_entry(root, p) for p in files]
    todo = [e for e in current if (h := have.get(e["path"])) is None or h[0] != e]
    logger.info(
        "%d images: %d to embed, %d already indexed", len(current), len(todo), len(current) - len(todo)
    )

    transform = image_transform(model)
    skipped: list[Skipped] = []
    pending.mkdir(exist_ok=True)
    # whose parts these are, written before the first of them: a later run of another model drops them
    owner = {"model": str(Path(model_dir).resolve()), "weights_sha256": checksum}
    atomic_write_json(pending / "model.json", owner)
    part_index = len(list(pending.glob("part-*.npy")))
    buffer_rows: list[dict[str, Any]] = []
    buffer_vectors: list[np.ndarray] = []

    def commit() -> None:
        nonlocal part_index, buffer_rows, buffer_vectors
        if not buffer_rows:
            return
        array = np.concatenate(buffer_vectors).astype(np.float32)
        name = pending / f"part-{part_index:06d}"
        _write_rows(name.with_suffix(".npy"), name.with_suffix(".jsonl"), array, buffer_rows)
        remember(array, buffer_rows)
        part_index, buffer_rows, buffer_vectors = part_index + 1, [], []

    done = 0
    for start in range(0, len(todo), batch_size):
        entries, images = [], []
        for e in todo[start : start + batch_size]:
            image = load_rgb(root / e["path"])
            if isinstance(image, str):
                skipped.append(Skipped(str(root / e["path"]), image))
                continue
            entries.append(e)
            images.append(transform(image))
        if images:
            vectors = embed_images(model, torch.stack(images)).cpu().numpy()
            buffer_rows += entries
            buffer_vectors.append(vectors)
        done += len(todo[start : start + batch_size])
        if sum(len(v) for v in buffer_vectors) >= commit_every:
            commit()
        if progress is not None:
            progress(done, len(todo))
    commit()

    order = [e for e in current if e["path"] in have and have[e["path"]][0] == e]
    if not order:
        raise DataError(f"none of the {len(current)} images under {root} could be read")
    array = np.stack([have[e["path"]][1] for e in order]).astype(np.float32)
    _write_rows(out / "vectors.npy", out / "manifest.jsonl", array, order)
    index = build_faiss(array, ivf_threshold)
    atomic_write(out / "index.faiss", lambda p: faiss.write_index(index, str(p)))
    kind = "flat" if array.shape[0] < ivf_threshold else "ivf"
    atomic_write_json(
        meta_path,
        {
            "format": FORMAT,
            "model": str(Path(model_dir).resolve()),
            "weights_sha256": checksum,
            "images_dir": str(root),
            "embed_dim": int(array.shape[1]),
            "count": int(array.shape[0]),
            "kind": kind,
        },
    )
    atomic_write_json(out / "skipped.json", [{"path": s.path, "reason": s.reason} for s in skipped])
    shutil.rmtree(pending, ignore_errors=True)
    embedded = len(todo) - len(skipped)
    return {
        "count": int(array.shape[0]),
        "embedded": embedded,
        "kept": len(order) - embedded,
        "removed": len({*have} - {e["path"] for e in current}),
        "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
        "kind": kind,
    }
