"""The recipes ship inside the package: found by name from any folder, each one a valid config."""

import pytest

from mumo.errors import ConfigError
from mumo.run.recipes import RECIPES, list_recipes, load, recipe_path

# Recipes that leave their data to the command line.
NEEDS = {"finetune/imagefolder": ["data.path=ROOT"], "gpt_text": ["data.path=corpus.txt"]}


def test_the_shipped_recipes_are_listed_and_configs_links_to_them():
    names = list_recipes()
    assert {"demo", "coca", "vqa", "compare/dual", "finetune/digits", "lit/minilm"} <= set(names)
    assert all((RECIPES / f"{n}.yaml").is_file() for n in names)


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_loads_by_name_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: `base:` and names resolve inside the package
    config = load(name, NEEDS.get(name, []))
    assert config.max_steps >= 0 and config.model  # a probe recipe trains no step
    assert recipe_path(f"configs/{name}.yaml") == recipe_path(name) == RECIPES / f"{name}.yaml"


def test_a_file_wins_and_a_missing_recipe_names_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text("max_steps: 7\n")
    assert load("demo.yaml").max_steps == 7  # a file in the working folder, not the shipped demo
    with pytest.raises(ConfigError, match=r"recipe nope does not exist; .*shipped recipe \(caption, coca"):
        load("nope")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        load("folder")
