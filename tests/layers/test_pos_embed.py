"""Rotary position embedding: the RoFormer rotation, parity with Hugging Face LLaMA's, relative by
construction, and exact under a KV cache."""

import pytest
import torch

from mumo.layers import KVCache, Transformer, apply_rope, rope_tables

B, H, T, D = 2, 3, 7, 8


def test_rope_is_the_complex_rotation_of_roformer():
    # RoFormer eq. 12 with pairs (i, i + D/2): z_i = x_i + j x_{i+D/2} is multiplied by exp(j m theta_i),
    # theta_i = base^(-2i/D).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    positions = torch.arange(T) + 5
    out = apply_rope(x, rope_tables(positions, D, base=100.0))
    theta = 100.0 ** -(torch.arange(D // 2, dtype=torch.float64) * 2 / D)
    z = torch.complex(x[..., : D // 2], x[..., D // 2 :]) * torch.polar(
        torch.ones(T, D // 2, dtype=torch.float64), positions[:, None].double() * theta
    )
    torch.testing.assert_close(out, torch.cat([z.real, z.imag], dim=-1), atol=1e-6, rtol=1e-6)


def test_rope_matches_hugging_face_llama():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, B, H, T, D, generator=g)
    positions = torch.randint(0, 50, (B, T), generator=g)
    cos, sin = rope_tables(positions, D)  # (B, 1, T, D/2)
    ref_q, ref_k = llama.apply_rotary_pos_emb(
        q, k, torch.cat([cos, cos], -1)[:, 0], torch.cat([sin, sin], -1)[:, 0]
    )
    tables = (cos, sin)
    torch.testing.assert_close(apply_rope(q, tables), ref_q)
    torch.testing.assert_close(apply_rope(k, tables), ref_k)


def test_rope_scores_depend_only_on_the_offset():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 1, 1, 1, D, generator=g, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        rq = apply_rope(q, rope_tables(torch.tensor([m]), D))
        rk = apply_rope(k, rope_tables(torch.tensor([n]), D))
        return float((rq * rk).sum())

    assert score(3, 1) == pytest.approx(score(12, 10), abs=1e-6)
    assert score(0, 4) == pytest.approx(score(20, 24), abs=1e-6)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def test_rope_needs_an_even_head_width():
    with pytest.raises(ValueError, match="even head width"):
        rope_tables(torch.arange(3), 5)


def test_rope_kv_cache_decoding_equals_full_recompute():
    torch.manual_seed(3)
    c = H * D
    net = Transformer(c, depth=2, num_heads=H)
    x = torch.randn(B, T, c)
    positions = torch.arange(T)
    full = net(x, is_causal=True, rope=rope_tables(positions, D))
    caches = [KVCache(B, H, D, max_length=T) for _ in range(2)]
    outs = [net(x[:, :3], is_causal=True, kv_caches=caches, rope=rope_tables(positions[:3], D))]
    for t in range(3, T):
        outs.append(
            net(x[:, t : t + 1], is_causal=True, kv_caches=caches, rope=rope_tables(positions[t : t + 1], D))
        )
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)
    # and the positions matter: the same tokens without rotation give other outputs
    assert not torch.allclose(net(x, is_causal=True), full, atol=1e-3)
