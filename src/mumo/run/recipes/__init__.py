"""The recipes mumo ships: YAML files inside the package, so that ``mumo demo`` and ``mumo train demo`` work
from an installed wheel. ``configs/`` in the repository links here."""

from __future__ import annotations

from pathlib import Path

from mumo.errors import ConfigError
from mumo.train.config import TrainConfig, load_recipe

RECIPES = Path(__file__).resolve().parent


def list_recipes() -> list[str]:
    """Names of the shipped recipes, e.g. ``demo``, ``compare/dual``, ``finetune/digits``."""
    return sorted(p.relative_to(RECIPES).with_suffix("").as_posix() for p in RECIPES.rglob("*.yaml"))


def recipe_path(recipe: str | Path) -> Path:
    """The YAML file ``recipe`` names: a path to a file, or the name of a shipped recipe (``demo``,
    ``compare/dual``; ``configs/demo.yaml`` is found too, from any folder)."""
    path = Path(recipe)
    if path.exists():
        return path  # a folder is refused by load_recipe, in one line
    name = path.as_posix().removeprefix("configs/").removesuffix(".yaml").removesuffix(".yml")
    shipped = RECIPES / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"recipe {recipe} does not exist; give a YAML file or a shipped recipe ({', '.join(list_recipes())})"
    )


def load(recipe: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """:func:`mumo.train.load_recipe` of the file or shipped recipe ``recipe`` names (:func:`recipe_path`)."""
    return load_recipe(recipe_path(recipe), overrides)
