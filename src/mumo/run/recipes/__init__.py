"""The recipes mumo ships: YAML files inside the package, so that ``mumo demo`` and ``mumo train demo`` work
from an installed wheel. ``configs/`` in the repository links here."""

from __future__ import annotations

from pathlib import Path

from mumo.errors import ConfigError

RECIPES = Path(__file__).resolve().parent


def list_recipes() -> list[str]:
    """Names of the shipped recipes, e.g. ``demo``, ``compare/dual``, ``finetune/digits``."""
    return sorted(p.relative_to(RECIPES).with_suffix("").as_posix() for p in RECIPES.rglob("*.yaml"))


def recipe_path(recipe: str | Path) -> Path:
    """The YAML file ``recipe`` names: a path to a file, or the name of a shipped recipe (``demo``,
    ``compare/dual``; ``configs/demo.yaml`` is found too, from any folder)."""
    path = Path(recipe)
    if path.is_file():
        return path
    name = path.as_posix().removeprefix("configs/").removesuffix(".yaml").removesuffix(".yml")
    shipped = RECIPES / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    if path.exists():
        raise ConfigError(f"recipe {recipe} is a folder; give a YAML file")
    raise ConfigError(
        f"recipe {recipe} not found: give a YAML file or a shipped recipe ({', '.join(list_recipes())})"
    )
