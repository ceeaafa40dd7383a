"""Files written crash-safe and read back checked: atomic writes, checksum manifests, JSON with clear errors.

A rename within one folder is atomic on POSIX, so readers see the old file or the new one, never half.
A manifest (``manifest.json``: ``{relative name: {"bytes": n, "sha256": hex}}``) seals a folder, a model
folder or a training checkpoint: a truncated, damaged or edited file is then found before it is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath
from typing import Any

from mumo.errors import CheckpointError, ConfigError

MANIFEST_NAME = "manifest.json"


def fsync(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checkpoint manifests, an index's model identity)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)``, fsync the file, and rename it to ``path``; returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    fsync(tmp)
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; one that is not JSON (or not text) is a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        # bytes, not text: json detects UTF-8/16/32 itself, and a binary file fails here, not in decode
        return json.loads(path.read_bytes())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
        why = e.reason if isinstance(e, UnicodeDecodeError) else e
        raise ConfigError(f"{path} is not valid JSON ({why}); fix it or write it again") from e


def write_manifest(folder: str | Path, names: Iterable[str] | None = None) -> Path:
    """Seal ``folder``: write its manifest, the size and SHA-256 of each file, atomically; returns its path.

    Args:
        folder: the folder to seal; write the manifest last, after every file it lists.
        names: paths relative to ``folder`` to list; None lists every file below it but the manifest.
    """
    folder = Path(folder)
    if names is None:
        names = [
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and p != folder / MANIFEST_NAME
        ]
    entries = {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)} for n in names}
    return atomic_write_json(folder / MANIFEST_NAME, dict(sorted(entries.items())))


def verify_manifest(folder: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``folder`` has a manifest and every file it lists is there,
    of the listed size and checksum. Files the manifest does not list are not looked at."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {MANIFEST_NAME}: it was not completely written")
    try:
        manifest = read_json(path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    if not isinstance(manifest, dict) or not all(
        isinstance(v, dict) and {"bytes", "sha256"} <= v.keys() for v in manifest.values()
    ):
        raise CheckpointError(
            f"{path} is not a manifest ({{file: {{bytes, sha256}}}}); save the folder again"
        )
    for name, entry in manifest.items():
        f = folder / name
        # a crafted manifest must not make us read elsewhere; the names are checked, not the files, as
        # a hub download's files are symlinks into its cache
        if PurePath(name).is_absolute() or ".." in PurePath(name).parts:
            raise CheckpointError(f"{path} lists {name!r}, outside {folder}; the folder is not trustworthy")
        if not f.is_file():
            raise CheckpointError(f"{folder} is missing {name}, which its manifest lists; copy it again")
        if f.stat().st_size != entry["bytes"]:
            size = f.stat().st_size
            raise CheckpointError(
                f"{f} has {size} bytes, expected {entry['bytes']} (truncated?); copy it again"
            )
        if sha256_file(f) != entry["sha256"]:
            raise CheckpointError(f"{f} does not match its checksum (corrupted); copy it again")
