import math

import pytest
import torch

from mumo.layers import (
    CrossAttention,
    KVCache,
    SelfAttention,
    Transformer,
    causal_mask,
    combine_masks,
    padding_mask,
)

B, T, C, H = 2, 6, 16, 4
D = C // H


def naive_attention(q, k, v, allowed=None):
    """softmax(Q K^T / sqrt(d)) V with a boolean allowed-mask, written out by hand."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def naive_self_attention(attn: SelfAttention, x, allowed=None):
    q, k, v = attn.qkv(x).split(C, dim=-1)
    split = lambda t: t.view(t.shape[0], t.shape[1], H, D).transpose(1, 2)
    out = naive_attention(split(q), split(k), split(v), allowed)
    return attn.proj(out.transpose(1, 2).reshape(x.shape[0], -1, C))


@pytest.fixture
def attn():
    return SelfAttention(C, H)


def test_self_attention_matches_naive(attn):
    x = torch.randn(B, T, C)
    torch.testing.assert_close(attn(x), naive_self_attention(attn, x), atol=1e-6, rtol=1e-5)


def test_causal_attention_matches_naive(attn):
    x = torch.randn(B, T, C)
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))
    torch.testing.assert_close(
        attn(x, is_causal=True), naive_self_attention(attn, x, allowed), atol=1e-6, rtol=1e-5
    )


def test_padding_and_causal_masks_match_naive(attn):
    x = torch.randn(B, T, C)
    lengths = torch.tensor([T, 3])
    keep = (torch.arange(T)[None] < lengths[:, None]).long()  # (B, T)
    allowed = padding_mask(keep) & torch.tril(torch.ones(T, T, dtype=torch.bool))
    out = attn(x, mask=padding_mask(keep), is_causal=True)
    ref = naive_self_attention(attn, x, allowed)
    # Only real query positions are defined; padded ones are ignored downstream.
    torch.testing.assert_close(out[0], ref[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[1, :3], ref[1, :3], atol=1e-6, rtol=1e-5)


def test_padding_mask_hides_padded_keys(attn):
    x = torch.randn(1, T, C)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0]])
    y = x.clone()
    y[:, 4:] = 100 * torch.randn(1, 2, C)  # changing padded tokens must not change real outputs
    a = attn(x, mask=padding_mask(keep))
    b = attn(y, mask=padding_mask(keep))
    torch.testing.assert_close(a[:, :4], b[:, :4])


def test_fully_masked_rows_give_finite_outputs_and_grads(attn):
    x = torch.randn(1, 4, C, requires_grad=True)
    keep = torch.tensor([[0, 0, 1, 1]])  # left padding: query 0 under causal sees no real key
    out = attn(x, mask=padding_mask(keep), is_causal=True)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_causal_mask_is_bottom_right_aligned():
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert combine_masks(None, None) is None


@pytest.mark.parametrize("causal", [True, False])
def test_select_equals_full_output_at_positions(attn, causal):
    x = torch.randn(B, T, C)
    keep = torch.tensor([[1] * T, [1, 1, 1, 1, 0, 0]])
    mask = padding_mask(keep)
    select = torch.tensor([T - 1, 3])
    full = attn(x, mask=mask, is_causal=causal)
    part = attn(x, mask=mask, is_causal=causal, select=select)
    assert part.shape == (B, 1, C)
    torch.testing.assert_close(part[:, 0], full[torch.arange(B), select], atol=1e-6, rtol=1e-5)


def test_kv_cache_decoding_equals_full_recompute():
    torch.manual_seed(1)
    net = Transformer(C, depth=2, num_heads=H)
    x = torch.randn(B, T, C)
    full = net(x, is_causal=True)
    caches = [KVCache(B, H, D, max_length=T) for _ in range(2)]
    outs = [net(x[:, :3], is_causal=True, kv_caches=caches)]  # a 3-token prompt, then one at a time
    for t in range(3, T):
        outs.append(net(x[:, t : t + 1], is_causal=True, kv_caches=caches))
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)
    assert caches[0].length == T


def test_the_in_place_cache_holds_exactly_what_concatenation_would():
    torch.manual_seed(2)
    cache, ks, vs = KVCache(B, H, D, max_length=8), [], []
    for t in (3, 1, 1, 2):  # a prompt, then steps
        ks.append(torch.randn(B, H, t, D))
        vs.append(torch.randn(B, H, t, D))
        k, v = cache.update(ks[-1], vs[-1])
        assert torch.equal(k, torch.cat(ks, dim=2)) and torch.equal(v, torch.cat(vs, dim=2))
        assert k.data_ptr() == cache.k.data_ptr()  # a view of the preallocated buffer: nothing copied


def test_kv_cache_overflow_says_what_to_do():
    cache = KVCache(1, H, D, max_length=2)
    with pytest.raises(ValueError, match="larger cache"):
        cache.update(torch.zeros(1, H, 3, D), torch.zeros(1, H, 3, D))


def test_cross_attention_matches_naive():
    ca = CrossAttention(C, H, context_dim=8)
    x, ctx = torch.randn(B, T, C), torch.randn(B, 5, 8)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    split = lambda t: t.view(B, -1, H, D).transpose(1, 2)
    k, v = ca.kv(ctx).split(C, dim=-1)
    ref = naive_attention(split(ca.q(x)), split(k), split(v), padding_mask(keep))
    ref = ca.proj(ref.transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(ca(x, ctx, context_mask=keep), ref, atol=1e-6, rtol=1e-5)
    # precomputed keys/values (as a decoder reuses them every step) give the same result
    torch.testing.assert_close(ca(x, context_mask=keep, kv=ca.context_kv(ctx)), ref, atol=1e-6, rtol=1e-5)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(10, 4)
