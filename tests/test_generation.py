"""Decoding: every strategy agrees with its reference (greedy, no cache, one prompt at a time), and the
sampling filters never leave their set."""

import copy

import pytest
import torch

import mumo
from mumo.errors import ConfigError
from mumo.generation import (
    GenerationConfig,
    generate,
    left_pad,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from mumo.inference import freeze
from mumo.layers.frozen_linear import FrozenLinear

STOP = 3  # the toy language's end token
PAD = 0


def _toy_sequences(n: int, generator: torch.Generator) -> torch.Tensor:
    """Rows ``start, start+1, … (mod 12) + 4`` of random length, then STOP: a language with a clear next
    token and a clear end, so decoding does something worth checking."""
    rows = torch.full((n, 16), PAD, dtype=torch.long)
    for i in range(n):
        start, length = (
            torch.randint(12, (1,), generator=generator),
            int(torch.randint(3, 12, (1,), generator=generator)),
        )
        rows[i, :length] = (start + torch.arange(length)) % 12 + 4
        rows[i, length] = STOP
    return rows


@pytest.fixture(scope="module", params=["learned", "rope"])
def gpt(request):
    """A tiny GPT trained for a moment on the toy language (float64, so that near-ties cannot flip), with
    learned absolute positions or rotary ones (where left padding must shift each row's rotation)."""
    torch.manual_seed(0)
    model = mumo.create_model("gpt_tiny", seed=0, **{"text.pos_embed": request.param}).double()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    from mumo.losses.language import causal_lm_loss

    for _ in range(150):
        ids = _toy_sequences(32, g)
        mask = (ids != PAD).long()
        loss = causal_lm_loss(model(None, ids, mask).logits, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def captioner():
    """A random CoCa with weights spread wide enough that its outputs depend on the image and prompt."""
    model = mumo.create_model("coca_vit_tiny", seed=0).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    return model


PROMPTS = [[5, 6, 7], [9], [4, 5], [10, 11, 12, 13]]
STRATEGIES = {
    "greedy": dict(),
    "beam3": dict(num_beams=3),
    "beam3_short": dict(num_beams=3, length_penalty=0.0),
    "sample": dict(do_sample=True, temperature=1.5, top_k=5, seed=3),
    "nucleus": dict(do_sample=True, top_p=0.8, seed=4),
    "repetition": dict(repetition_penalty=2.0),
}


def _config(**kw):
    return GenerationConfig(**{"max_new_tokens": 10, "stop_ids": (STOP,), **kw})


@pytest.mark.learned
def test_the_trained_toy_model_continues_and_stops(gpt):
    out = generate(gpt, PROMPTS, config=_config())
    tokens = out.tokens()
    assert tokens[0][:3] == [8, 9, 10]  # counts on
    assert any(t[-1] == STOP for t in tokens)  # and ends some rows itself
    assert all(len(t) == n for t, n in zip(tokens, out.lengths.tolist(), strict=True))


def test_beam_search_with_one_beam_is_greedy(gpt, captioner):
    for model, images in ((gpt, None), (captioner, torch.randn(4, 3, 32, 32, dtype=torch.float64))):
        greedy = generate(model, PROMPTS, images=images, config=_config())
        beam = generate(model, PROMPTS, images=images, config=_config(num_beams=1))
        assert beam.tokens() == greedy.tokens()
        torch.testing.assert_close(beam.scores, greedy.scores)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_cached_and_uncached_decoding_give_the_same_tokens(gpt, captioner, strategy):
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    for model, imgs in ((gpt, None), (captioner, images)):
        cached = generate(model, PROMPTS, images=imgs, config=_config(**STRATEGIES[strategy]))
        uncached = generate(
            model, PROMPTS, images=imgs, config=_config(use_cache=False, **STRATEGIES[strategy])
        )
        assert cached.tokens() == uncached.tokens()
        torch.testing.assert_close(cached.scores, uncached.scores)


def test_float32_cached_decoding_gives_the_uncached_tokens(gpt):
    model = copy.deepcopy(gpt).float()
    cached = generate(model, PROMPTS, config=_config())
    uncached = generate(model, PROMPTS, config=_config(use_cache=False))
    assert cached.tokens() == uncached.tokens()
    torch.testing.assert_close(cached.scores, uncached.scores, rtol=1e-5, atol=1e-5)


@pytest.mark.learned
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_frozen_weights_decode_the_tokens_of_the_float32_model(gpt, precision):
    """The trained toy model puts the next token far above the rest, further than bf16 or int8 rounding
    moves a logit, so every precision must give the float32 model's tokens (with and without padding)."""
    model = copy.deepcopy(gpt).float()
    want = generate(model, PROMPTS, config=_config(num_beams=1))
    frozen = freeze(copy.deepcopy(model), precision, min_size=0)  # every layer, small as they are here
    layers = [m for m in frozen.modules() if isinstance(m, FrozenLinear)]
    assert layers and not any(isinstance(m, torch.nn.Linear) for m in frozen.modules())
    want_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}[precision]
    assert all(m.dtype == want_dtype for m in layers)
    got = generate(frozen, PROMPTS, config=_config())
    assert got.tokens() == want.tokens()
    # per-token log-probabilities move by the rounding only
    tolerance = 1e-4 if precision == "fp32" else 0.05
    torch.testing.assert_close(got.scores / got.lengths, want.scores / want.lengths, rtol=0, atol=tolerance)
    with pytest.raises(RuntimeError, match="save the model before"):
        frozen.state_dict()


def test_decoding_gives_back_onednn_dispatch_even_when_it_fails(gpt, monkeypatch):
    """generate runs its steps on PyTorch's element-wise kernels (see generation._aten_eltwise) and must
    leave the process-wide switch as it found it."""
    model = copy.deepcopy(gpt)
    assert torch._C._get_mkldnn_enabled()
    generate(model, PROMPTS, config=_config())
    assert torch._C._get_mkldnn_enabled()

    def fail(*args, **kwargs):
        assert not torch._C._get_mkldnn_enabled()  # off while decoding
        raise RuntimeError("decode failed")

    monkeypatch.setattr(model, "decode", fail)
    with pytest.raises(RuntimeError, match="decode failed"):
        generate(model, PROMPTS, config=_config())
    assert torch._C._get_mkldnn_enabled()


@pytest.mark.parametrize("strategy", ["greedy", "beam3", "beam3_short", "repetition"])
def test_batched_generation_equals_one_prompt_at_a_time(gpt, captioner, strategy):
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    for model, imgs in ((gpt, None), (captioner, images)):
        batched = generate(model, PROMPTS, images=imgs, config=_config(**STRATEGIES[strategy])).tokens()
        alone = [
            generate(
                model,
                [p],
                images=None if imgs is None else imgs[i : i + 1],
                config=_config(**STRATEGIES[strategy]),
            ).tokens()[0]
            for i, p in enumerate(PROMPTS)
        ]
        assert batched == alone


def test_right_padded_prompt_tensors_are_handled_like_lists(gpt):
    ids = torch.tensor([[5, 6, 7, PAD], [9, PAD, PAD, PAD]])
    mask = (ids != PAD).long()
    from_tensor = generate(gpt, ids, attention_mask=mask, config=_config()).tokens()
    assert from_tensor == generate(gpt, [[5, 6, 7], [9]], config=_config()).tokens()
    left, left_mask = left_pad([[5, 6, 7], [9]], PAD)
    assert left.tolist() == [[5, 6, 7], [PAD, PAD, 9]] and left_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert generate(gpt, left, attention_mask=left_mask, config=_config()).tokens() == from_tensor


def _log_prob(model, prompt, tokens):
    """Sum of log-probabilities of ``tokens`` after ``prompt``, by one teacher-forced pass."""
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logp = model(None, ids).logits.log_softmax(-1)[0]
    return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(tokens))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_scores_are_the_length_normalised_log_probability_of_the_returned_sequence(gpt, length_penalty):
    out = generate(gpt, PROMPTS, config=_config(num_beams=4, length_penalty=length_penalty))
    for prompt, tokens, score in zip(PROMPTS, out.tokens(), out.scores.tolist(), strict=True):
        expected = _log_prob(gpt, prompt, tokens) / len(tokens) ** length_penalty
        assert score == pytest.approx(expected, abs=1e-9)
    greedy = generate(gpt, PROMPTS, config=_config())
    for prompt, tokens, score in zip(PROMPTS, greedy.tokens(), greedy.scores.tolist(), strict=True):
        assert score == pytest.approx(_log_prob(gpt, prompt, tokens), abs=1e-9)


def test_sampling_with_a_set_of_one_is_greedy(gpt):
    greedy = generate(gpt, PROMPTS, config=_config()).tokens()
    assert generate(gpt, PROMPTS, config=_config(do_sample=True, top_k=1, seed=5)).tokens() == greedy
    assert generate(gpt, PROMPTS, config=_config(do_sample=True, top_p=1e-6, seed=5)).tokens() == greedy


def test_sampling_is_seeded(gpt):
    a = generate(gpt, PROMPTS, config=_config(do_sample=True, temperature=2.0, seed=7)).tokens()
    b = generate(gpt, PROMPTS, config=_config(do_sample=True, temperature=2.0, seed=7)).tokens()
    c = generate(gpt, PROMPTS, config=_config(do_sample=True, temperature=2.0, seed=8)).tokens()
    assert a == b and a != c


def test_top_k_and_top_p_never_sample_outside_their_set():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 50, generator=g) * 3
    k_draws = torch.multinomial(top_k_filter(logits, 5).softmax(-1), 1, generator=g).squeeze(1)
    top5 = logits.topk(5, dim=-1).indices
    assert bool((top5 == k_draws[:, None]).any(dim=1).all())

    p = 0.7
    p_draws = torch.multinomial(top_p_filter(logits, p).softmax(-1), 1, generator=g).squeeze(1)
    probs = logits.softmax(-1)
    for row, token in zip(probs, p_draws.tolist(), strict=True):
        order = row.argsort(descending=True).tolist()
        cumulative, nucleus = 0.0, []
        for t in order:  # the smallest set of most likely tokens whose mass reaches p
            nucleus.append(t)
            cumulative += float(row[t])
            if cumulative >= p:
                break
        assert token in nucleus
    # the filters keep their sets whole: the k best, and the most likely token at any p
    assert int(torch.isfinite(top_k_filter(logits, 5)).sum(dim=1).min()) == 5
    assert bool(torch.isfinite(top_p_filter(logits, 1e-9)).gather(1, logits.argmax(1, keepdim=True)).all())


def test_repetition_penalty_follows_ctrl():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]


@pytest.mark.parametrize("penalty", [1.0, 1.3, 5.0])
def test_greedy_with_a_repetition_penalty_matches_a_plain_reference_loop(gpt, penalty):
    prompt = [8, 9, 10, 11, 12, 13, 14, 15, 4, 5]
    got = generate(gpt, [prompt], config=_config(max_new_tokens=6, stop_ids=(), repetition_penalty=penalty))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(6):  # the textbook loop: whole sequence in, penalise what was seen, argmax
            logits = gpt(None, torch.tensor([ids])).logits[0, -1]
            seen = torch.zeros_like(logits, dtype=torch.bool)
            seen[ids] = True
            logits = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
            ids.append(int(logits.argmax()))
    assert got.tokens()[0] == ids[len(prompt) :]
    if penalty == 5.0:  # and the penalty changes what comes out
        plain = generate(gpt, [prompt], config=_config(max_new_tokens=6, stop_ids=())).tokens()[0]
        assert plain != got.tokens()[0]


def test_generation_errors_are_clear(gpt):
    with pytest.raises(ConfigError, match="context_length"):
        generate(gpt, [[5] * 10], config=GenerationConfig(max_new_tokens=10))
    with pytest.raises(ConfigError, match="not both"):
        GenerationConfig(num_beams=2, do_sample=True)
    with pytest.raises(ConfigError, match="at least one token"):
        generate(gpt, [[]], config=_config())
    with pytest.raises(ConfigError, match="top_p"):
        GenerationConfig(top_p=0.0)
