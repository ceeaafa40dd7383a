import pytest

from mumo.errors import ConfigError
from mumo.train.config import TrainConfig, load_recipe, parse_overrides


def test_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: clip_vit_tiny\nbatch_size: 32\noptim:\n  lr: 0.002\ndata:\n  train_size: 500\n")
    c = load_recipe(recipe, ["optim.lr=3e-4", "data.max_objects=2", "model_overrides.text.depth=1", "seed=7"])
    assert c.model == "clip_vit_tiny" and c.batch_size == 32 and c.seed == 7
    assert c.optim.lr == pytest.approx(3e-4) and c.data.max_objects == 2 and c.data.train_size == 500
    assert c.model_overrides == {"text.depth": 1}
    assert TrainConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("batch_sise: 4\n", [], "unknown field 'batch_sise' — did you mean 'batch_size'"),
        ("optim:\n  lrr: 1\n", [], r"TrainConfig.optim: unknown field 'lrr' — did you mean 'lr'"),
        ("", ["optim.lr=fast"], "expected a number"),
        ("", ["data.kind=video"], "is not one of"),
        ("", ["optim.warmup=3"], "did you mean 'warmup_steps'"),
        ("", ["batch_size"], "is not key=value"),
        ("- a\n- b\n", [], "must be a mapping"),
        ("a: [\n", [], "not valid YAML"),
        ("", ["batch_size=1"], "at least 2"),
        ("", ["strategy=fsdp", "grad_cache_chunk=2"], "strategy=fsdp does not go with grad_cache_chunk"),
        ("", ["strategy=fsdp", "precision=fp16"], "use precision=bf16"),
        ("", ["strategy=zero3"], "is not one of"),
        ("", ["device=1e-3"], "device must be cpu, cuda or cuda:N, got '1e-3'"),
        ("", ["data=1", "data.seed=2"], "TrainConfig.data is 1, not a mapping; cannot set 'data.seed'"),
        ("", ["model_overrides=1", "model_overrides.x=2"], "model_overrides is 1, not a mapping"),
        ("", ["data.binding_negatives=true"], "binding_negatives adds kinds to the hard negatives"),
        (
            "",
            ["hard_negatives=2", "data.binding_negatives=true", "data.questions=true"],
            "binding_negatives is for captions",
        ),
        ("", ["data.place_negatives=true"], "place_negatives adds kinds to the hard negatives"),
        (
            "",
            ["hard_negatives=2", "data.place_negatives=true", "data.kind=digits"],
            "place_negatives is for captions",
        ),
    ],
)
def test_config_errors_name_the_bad_key(tmp_path, text, overrides, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(recipe, overrides)


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe("nowhere.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_recipe(tmp_path)


def test_a_recipe_that_is_not_utf8_text_says_so(tmp_path):
    (tmp_path / "r.yaml").write_bytes("model: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 10\); is it a YAML recipe\?"):
        load_recipe(tmp_path / "r.yaml")


def test_override_values_are_yaml():
    assert parse_overrides(["a=1", "b=1.5", "c=true", "d=[1, 2]", "e=text", "f="]) == {
        "a": 1,
        "b": 1.5,
        "c": True,
        "d": [1, 2],
        "e": "text",
        "f": None,
    }


def test_a_recipe_can_start_from_a_base_recipe(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model: clip_vit_tiny\nbatch_size: 32\noptim:\n  lr: 0.01\n  warmup_steps: 7\n"
    )
    sub = tmp_path / "variants"
    sub.mkdir()
    (sub / "child.yaml").write_text("base: ../base.yaml\nbatch_size: 8\noptim:\n  lr: 0.02\n")
    config = load_recipe(sub / "child.yaml", ["max_steps=3"])
    assert (config.model, config.batch_size, config.max_steps) == ("clip_vit_tiny", 8, 3)
    assert (config.optim.lr, config.optim.warmup_steps) == (0.02, 7)  # sections merge key by key
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_recipe(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
