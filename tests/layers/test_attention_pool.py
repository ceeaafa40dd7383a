"""The MAP head (a learned probe attending over the tokens, then a residual MLP)."""

import pytest
import torch
import torch.nn.functional as F

from mumo.layers import AttentionPoolLatent


def _noisy(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return module.eval()


def test_matches_timm_attention_pool_latent_with_the_same_weights():
    timm_pool = pytest.importorskip("timm.layers").AttentionPoolLatent
    ref = _noisy(timm_pool(24, num_heads=3, mlp_ratio=2.0, norm_layer=torch.nn.LayerNorm))
    ours = AttentionPoolLatent(24, num_heads=3, mlp_ratio=2.0, norm_eps=1e-5)
    ours.load_state_dict(ref.state_dict())  # same names: latent, q, kv, proj, norm, mlp.fc1/fc2
    x = torch.randn(2, 9, 24)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)


def test_one_head_by_hand():
    pool = _noisy(AttentionPoolLatent(4, num_heads=1, mlp_ratio=1.0))
    x = torch.randn(2, 5, 4)
    q = pool.q(pool.latent)  # (1, 1, 4)
    k, v = pool.kv(x).chunk(2, dim=-1)  # (2, 5, 4) each
    attn = F.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1)  # sqrt(4) = 2
    y = pool.proj(attn @ v)
    expected = (y + pool.mlp(pool.norm(y)))[:, 0]
    torch.testing.assert_close(pool(x), expected, atol=1e-6, rtol=0)


def test_output_is_one_vector_per_sample_and_does_not_depend_on_token_order():
    pool = _noisy(AttentionPoolLatent(8, num_heads=2))
    x = torch.randn(3, 6, 8)
    out = pool(x)
    assert out.shape == (3, 8)
    torch.testing.assert_close(pool(x[:, torch.randperm(6)]), out, atol=1e-6, rtol=0)
    out.sum().backward()
    assert pool.latent.grad is not None and pool.latent.grad.abs().sum() > 0
