import math

import pytest
import torch
import torch.nn.functional as F

from mumo.layers import (
    Block,
    PatchEmbed,
    QuickGELU,
    RMSNorm,
    SwiGLU,
    build_mlp,
    build_norm,
    sincos_1d,
    sincos_2d,
)


def test_rmsnorm_matches_formula():
    norm = RMSNorm(8, eps=1e-6)
    norm.weight.data = torch.arange(8.0)
    x = torch.randn(3, 8)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * torch.arange(8.0)
    torch.testing.assert_close(norm(x), ref)


def test_build_norm_and_mlp_reject_unknown_names():
    assert isinstance(build_norm("layernorm", 4), torch.nn.LayerNorm)
    with pytest.raises(ValueError, match="rmsnorm"):
        build_norm("batchnorm", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="swiglu"):
        build_mlp("relu", 4, 4.0)  # type: ignore[arg-type]


def test_quick_gelu_value():
    x = torch.tensor([1.0])
    assert QuickGELU()(x).item() == pytest.approx(1 / (1 + math.exp(-1.702)), rel=1e-6)


def test_swiglu_keeps_mlp_parameter_budget_and_formula():
    mlp, glu = build_mlp("gelu", 48, 4.0, bias=False), build_mlp("swiglu", 48, 4.0, bias=False)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(glu) == 3 * 48 * 128 and n(mlp) == 2 * 48 * 192  # 2/3 of the hidden width, equal budget
    assert isinstance(glu, SwiGLU)
    x = torch.randn(2, 48)
    w1, w3 = glu.fc1.weight.chunk(2)
    ref = (F.silu(x @ w1.T) * (x @ w3.T)) @ glu.fc2.weight.T
    torch.testing.assert_close(glu(x), ref)


def test_patch_embed_equals_strided_convolution():
    pe = PatchEmbed(16, 4, 3, 10, bias=True)
    x = torch.randn(2, 3, 16, 16)
    ref = pe.proj(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(pe(x), ref, atol=1e-5, rtol=1e-5)
    assert pe(x).shape == (2, 16, 10)
    with pytest.raises(ValueError, match="tile"):
        pe(torch.randn(1, 3, 15, 16))


def test_sincos_codes():
    e = sincos_1d(torch.arange(3), 4)
    # position 0: sin = 0, cos = 1; position 1 at the first frequency: sin 1, cos 1
    assert e[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert e[1, 0].item() == pytest.approx(math.sin(1.0)) and e[1, 2].item() == pytest.approx(math.cos(1.0))
    g = sincos_2d(2, 3, 8)
    assert g.shape == (6, 8)
    # the first half codes the row, the second the column
    torch.testing.assert_close(g[0, :4], g[2, :4])
    torch.testing.assert_close(g[0, 4:], g[3, 4:])


def test_block_is_pre_norm_residual():
    block = Block(8, 2)
    for p in (block.attn.proj.weight, block.attn.proj.bias, block.mlp.fc2.weight, block.mlp.fc2.bias):
        p.data.zero_()  # with the residual branches' outputs zeroed the block is the identity
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(block(x), x)


def test_block_cross_attention_uses_context():
    block = Block(8, 2, context_dim=6)
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 4, 6)
    a, b = block(x, context=ctx), block(x, context=ctx + 1)
    assert a.shape == (2, 3, 8) and not torch.allclose(a, b)
