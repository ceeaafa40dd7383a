import json

import pytest
import torch

import mumo
from mumo.errors import ConfigError, UnknownModelError
from mumo.models import get_model_config, list_models
from mumo.models._registry import config_from_dict


def test_list_models_filters_by_pattern():
    names = list_models()
    assert {"clip_vit_b32", "clip_vit_b16", "clip_vit_l14", "clip_vit_small_64", "clip_vit_tiny"} <= set(
        names
    )
    assert list_models("clip_vit_b*") == ["clip_vit_b16", "clip_vit_b32"]
    assert names == sorted(names)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean 'clip_vit_b16'"):
        mumo.create_model("clip_vit_b61")


@pytest.mark.parametrize("name", list_models())
def test_every_config_round_trips_through_json(name):
    config = get_model_config(name)
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_create_from_json_file(tmp_path):
    path = tmp_path / "my_model.json"
    path.write_text(json.dumps(get_model_config("clip_vit_tiny", embed_dim=24).to_dict()))
    model = mumo.create_model(path)
    assert model.config.embed_dim == 24


def test_overrides_dotted_and_nested():
    a = get_model_config("clip_vit_tiny", **{"vision.depth": 1, "text.num_heads": 4})
    b = get_model_config("clip_vit_tiny", vision={"depth": 1}, text={"num_heads": 4})
    assert a == b and a.vision.depth == 1 and a.text.num_heads == 4


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"vision.dpeth": 2}, "did you mean 'depth'"),
        ({"vision.depth": "two"}, "expected an integer"),
        ({"vision.num_heads": 5}, "not divisible by num_heads"),
        ({"vision.patch_size": 7}, "not a multiple of patch_size"),
        ({"text.pool": "cls"}, "needs causal=False"),
        ({"vision.pool": "max"}, "is not one of"),
        ({"embed_dim.x": 1}, "not a nested config"),
    ],
)
def test_bad_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_model_config("clip_vit_tiny", **overrides)


def test_bad_json_file_is_a_config_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        mumo.create_model(path)
    path.write_text(json.dumps({"model_type": "gan"}))
    with pytest.raises(ConfigError, match="known architectures: captioner, clip"):
        mumo.create_model(path)


@pytest.mark.parametrize("name", ["clip_vit_tiny", "fusion_vit_tiny", "single_stream_tiny"])
def test_seed_makes_init_deterministic_without_touching_global_rng(name):
    state = torch.get_rng_state()
    a = mumo.create_model(name, seed=3)
    b = mumo.create_model(name, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), na


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip_vit_tiny", {"embed"}),
        ("fusion_vit_tiny", {"embed", "match"}),
        ("single_stream_tiny", {"match"}),
        ("captioner_conv_tiny", {"generate", "caption"}),
    ],
)
def test_models_say_what_they_can_do(name, expected):
    from mumo.models import capabilities

    assert capabilities(mumo.create_model(name, seed=0)) == expected


def test_a_coca_embeds_and_a_gpt_only_generates():
    from mumo.models import capabilities

    assert capabilities(mumo.create_model("coca_vit_tiny", seed=0)) == {"generate", "caption", "embed"}
    assert capabilities(mumo.create_model("gpt_tiny", seed=0)) == {"generate"}
    assert capabilities(torch.nn.Linear(2, 2)) == frozenset()
