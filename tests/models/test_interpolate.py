"""WiSE-FT weight interpolation: exact ends, linear in between, refuses different architectures."""

import pytest
import torch

import mumo
from mumo.errors import CheckpointError
from mumo.models.interpolate import interpolate_models, interpolate_state_dicts


def _pair():
    pretrained = mumo.create_model("clip_vit_tiny", seed=0).double().eval()
    finetuned = mumo.create_model("clip_vit_tiny", seed=1).double().eval()
    return pretrained, finetuned


def test_alpha_zero_and_one_give_back_the_two_models():
    pre, tuned = _pair()
    for alpha, source in ((0.0, pre), (1.0, tuned)):
        mixed = interpolate_models(pre, tuned, alpha)
        for k, v in mixed.state_dict().items():
            assert torch.equal(v, source.state_dict()[k]), k


def test_weights_are_the_linear_mix_and_inputs_are_untouched():
    pre, tuned = _pair()
    before = {k: v.clone() for k, v in tuned.state_dict().items()}
    mixed = interpolate_models(pre, tuned, 0.25)
    for k, v in mixed.state_dict().items():
        torch.testing.assert_close(v, 0.75 * pre.state_dict()[k] + 0.25 * tuned.state_dict()[k])
    assert all(torch.equal(v, before[k]) for k, v in tuned.state_dict().items())
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    assert mixed.encode_image(images).shape == (2, mixed.config.embed_dim)


def test_integer_tensors_come_from_the_fine_tuned_model():
    out = interpolate_state_dicts(
        {"w": torch.zeros(2), "n": torch.tensor(3)}, {"w": torch.ones(2), "n": torch.tensor(7)}, 0.5
    )
    assert torch.equal(out["w"], torch.full((2,), 0.5)) and int(out["n"]) == 7


def test_different_architectures_and_bad_alpha_are_refused():
    pre = mumo.create_model("clip_vit_tiny", seed=0)
    other = mumo.create_model("clip_vit_tiny", seed=0, embed_dim=16)
    with pytest.raises(CheckpointError, match="cannot be mixed"):
        interpolate_models(pre, other, 0.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        interpolate_models(pre, pre, 1.5)
