"""describe_model and num_params: what `mumo models` and `mumo info` print about each architecture."""

import pytest

from mumo.models import CLIPConfig, ImageClassifierConfig, get_model_config, list_models
from mumo.models.describe import ModelSummary, describe_model, num_params


@pytest.mark.parametrize(
    "name, image, shape",
    [
        ("clip_vit_tiny", "32px", "vit w32 d2 p8 | text w32 d2"),
        ("clip_conv_mini_64", "64px", "conv w128 d4 | text w128 d2"),
        ("clip_vit_l14", "224px", "vit w1024 d24 p14 | text w768 d12"),
        ("fusion_vit_tiny", "32px", "vit w32 d2 p8 | text w32 d2 + fusion d1"),
        ("captioner_conv_tiny", "32px", "conv w32 d2 | decoder w32 d1+1"),
        ("coca_vit_tiny", "32px", "vit w32 d2 p8 | decoder w32 d1+1 + ITC"),
        ("gpt_tiny", "-", "decoder w32 d1+1 (text only)"),
        ("single_stream_small_64", "64px", "one stream w256 d4 p8"),
    ],
)
def test_each_architecture_reads_as_one_line(name, image, shape):
    assert describe_model(get_model_config(name)) == ModelSummary(image, shape)


def test_every_registered_model_is_described():
    for name in list_models():
        image, shape = describe_model(get_model_config(name))
        assert image.endswith("px") or image == "-", name
        assert shape and "\n" not in shape, name


def test_a_classifier_reads_as_its_towers_plus_a_head():
    config = ImageClassifierConfig(clip=get_model_config("clip_vit_tiny"), class_names=("a", "b", "c"))
    assert describe_model(config) == ModelSummary("32px", "vit w32 d2 p8 | text w32 d2 + head of 3 classes")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("clip_vit_tiny", 70_529),
        ("siglip_vit_tiny", 70_530),
        ("gpt_tiny", 36_288),
        ("clip_vit_b32", 151_277_313),
    ],
)
def test_num_params_counts_without_allocating(name, expected):
    assert num_params(get_model_config(name)) == expected


def test_num_params_of_a_default_config_matches_the_built_model():
    from mumo.models import build_model

    config = get_model_config("clip_conv_tiny")
    assert num_params(config) == sum(p.numel() for p in build_model(config).parameters())
    assert num_params(CLIPConfig()) > 0  # a config that no name registers counts too


def test_counting_skips_initialisers_only_on_meta_tensors():
    import torch

    from mumo.models.describe import _SkipMetaInit

    real, meta = torch.zeros(4, 4), torch.zeros(4, 4, device="meta")
    with _SkipMetaInit():
        torch.nn.init.normal_(real)
        torch.nn.init.normal_(meta)
        meta.uniform_()
    assert real.abs().sum() > 0  # a real tensor is still initialised
    assert meta.shape == (4, 4) and meta.is_meta
