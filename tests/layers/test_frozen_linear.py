"""Frozen linear layers: fp32 equals nn.Linear up to summation order, int8 computes exactly what its
quantized weight stands for and that weight is within half a step of the original, and nothing frozen can
be saved."""

import pytest
import torch
from torch import nn

from mumo.layers.frozen_linear import (
    MIN_PACKED_SIZE,
    FrozenLinear,
    Int8Linear,
    bf16_supported,
    freeze_linears,
    frozen_linear,
    onednn_packing,
)


def _linear(k=64, n=48, bias=True):
    torch.manual_seed(0)
    return nn.Linear(k, n, bias=bias)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("size", ["small", "large"])
def test_fp32_frozen_layer_equals_the_linear_it_replaces(bias, size):
    k, n = (64, 48) if size == "small" else (512, MIN_PACKED_SIZE // 512)
    layer = _linear(k, n, bias=bias)
    frozen = frozen_linear(layer.weight, layer.bias, "fp32")
    # a large layer is laid out for oneDNN; a small one keeps F.linear, where it is faster
    assert frozen.packed == (size == "large" and onednn_packing())
    for shape in [(1, k), (1, 1, k), (3, 5, k), (0, k)]:
        x = torch.randn(shape)
        with torch.no_grad():
            if frozen.packed:  # another summation order
                torch.testing.assert_close(frozen(x), layer(x), rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(frozen(x), layer(x))


def test_int8_layer_computes_its_dequantized_weight_on_bfloat16_activations():
    layer = _linear()
    frozen = frozen_linear(layer.weight, layer.bias, "int8")
    assert isinstance(frozen, Int8Linear) and frozen.weight.dtype == torch.int8
    w = layer.weight.detach()
    step = frozen.scale.float()
    # the scale is max|w| / 127 rounded up to a bfloat16 (so that no weight clips), and exact in the kernel
    exact = w.abs().amax(dim=1) / 127
    assert bool(((step >= exact) & (step <= exact * (1 + 2**-7))).all())
    # each weight sits within half a step of the original; each row's largest uses (nearly) the full range
    assert bool(((frozen.dequantized() - w).abs() <= step[:, None] / 2 + 1e-9).all())
    assert bool((frozen.weight.abs().amax(dim=1) >= 126).all())
    x = torch.randn(2, 3, 64)
    want = x.bfloat16().float() @ frozen.dequantized().T + layer.bias.detach()
    got = frozen(x)
    assert got.shape == (2, 3, 48) and got.dtype == torch.float32
    # the kernel accumulates in float32 and rounds its output to bfloat16 (8 bits of mantissa)
    torch.testing.assert_close(got, want, rtol=2**-7, atol=1e-3)
    with torch.no_grad():
        assert (got - layer(x)).norm() / layer(x).norm() < 0.02  # close to the float32 layer too


def test_int8_falls_back_to_fp32_where_the_kernel_cannot_read_the_width():
    layer = _linear(k=40)  # not a multiple of 16
    frozen = frozen_linear(layer.weight, layer.bias, "int8")
    assert type(frozen) is FrozenLinear and frozen.dtype == torch.float32
    with pytest.raises(ValueError, match="divisible by 16"):
        Int8Linear(layer.weight, layer.bias)


def test_bf16_layer_rounds_weights_and_activations_only():
    layer = _linear()
    assert frozen_linear(layer.weight, layer.bias, "bf16").dtype == torch.float32  # too small to pay
    frozen = frozen_linear(layer.weight, layer.bias, "bf16", min_size=0)
    assert frozen.dtype == torch.bfloat16
    x = torch.randn(4, 64)
    want = (x.bfloat16().float() @ layer.weight.detach().bfloat16().float().T) + layer.bias.detach()
    assert frozen(x).dtype == torch.float32
    torch.testing.assert_close(frozen(x), want, rtol=2**-7, atol=2e-3)
    assert frozen.packed == bf16_supported()  # oneDNN's layout only where the CPU multiplies bf16


def test_freezing_replaces_every_linear_and_refuses_to_save():
    model = nn.Sequential(_linear(), nn.GELU(), nn.Sequential(nn.Linear(48, 32), nn.LayerNorm(32)))
    x = torch.randn(2, 64)
    with torch.no_grad():
        want = model(x)
    assert freeze_linears(model, "fp32") == 2
    assert not any(type(m) is nn.Linear for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="save the model before mumo.inference.freeze"):
        model.state_dict()
    with pytest.raises(ValueError, match="one of fp32, bf16, int8"):
        freeze_linears(model, "int4")
