"""The package's floors (ARCHITECTURE.md): every module imports only from floors below its own, or from its
own room, at any depth (function-level imports included); rooms on one floor do not import each other;
nothing inside imports the package root. And no file grows past the size a reader can hold."""

import ast
import importlib
import warnings
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mumo"

FLOORS = {
    "errors": 0,  # floor 0 has an order of its own: errors and version first, the helpers on them
    "version": 0,
    "_config": 0.5,
    "_io": 0.5,
    "_extras": 0.5,
    "layers": 1,
    "losses": 1,
    "models": 2,
    "data": 2,
    "inference": 3,
    "generation": 3,
    "eval": 4,
    "train": 4,
    "interop": 4,
    "serve": 4,
    "run": 5,
    "cli": 6,
    "__main__": 7,
}
# Modules left at an old path for one release, re-exporting the room they moved to: they count as that room.
ALIASES = {"report": "run", "compare": "run"}
MAX_LINES = 450
MAX_LINES_OF = {"train/trainer.py": 320}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module or name, line) for every import of mumo in the file, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "mumo"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base.split(".")[0] != "mumo":
                continue
            if base == "mumo":  # `from mumo import x`: a submodule, or a name of the root's
                found += [(f"mumo.{a.name}", node.lineno) for a in node.names]
            else:
                found.append((base, node.lineno))
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    room = parts[1] if len(parts) > 1 else "<root>"
    return ALIASES.get(room, room)


def test_every_room_has_a_floor():
    rooms = {_room(m) for m, _ in _modules()} - {"<root>"}
    assert rooms <= set(FLOORS), (
        f"rooms without a floor in this test and ARCHITECTURE.md: {rooms - set(FLOORS)}"
    )


def test_imports_point_down_a_floor_or_stay_in_their_room():
    wrong = []
    for module, path in _modules():
        source = _room(module)
        if source == "<root>":  # the package root re-exports the public API: it may import anything
            continue
        for target, line in _imports(module, path):
            room = _room(target)
            where = f"{path.relative_to(SRC.parent)}:{line} imports {target}"
            if room == "<root>" or room not in FLOORS:
                if room == "<root>" or not (SRC / room).exists() and not (SRC / f"{room}.py").exists():
                    wrong.append(f"{where} (the package root: import the module that defines the name)")
                    continue
            if room != source and FLOORS[room] >= FLOORS[source]:
                kind = "a floor above" if FLOORS[room] > FLOORS[source] else "a room on the same floor"
                wrong.append(
                    f"{where} ({kind}: {source} is on floor {FLOORS[source]}, {room} on {FLOORS[room]})"
                )
    assert not wrong, "imports that break the floors:\n" + "\n".join(wrong)


def test_names_that_moved_up_a_floor_are_reachable_with_a_warning():
    import mumo.run.train
    import mumo.train

    with pytest.warns(DeprecationWarning, match="mumo.run.train.train"):
        assert mumo.train.train is mumo.run.train.train
    with pytest.raises(AttributeError):
        mumo.train.no_such_name  # noqa: B018


def test_the_root_reexports_resolve():
    mumo = importlib.import_module("mumo")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        missing = [name for name in mumo.__all__ if not hasattr(mumo, name)]
    assert not missing


def test_no_file_is_longer_than_a_reader_can_hold():
    long = []
    for _, path in _modules():
        rel = path.relative_to(SRC).as_posix()
        limit = MAX_LINES_OF.get(rel, MAX_LINES)
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            long.append(f"{rel}: {n} lines (at most {limit})")
    assert not long, "\n".join(long)
