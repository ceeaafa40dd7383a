"""Autoregressive decoding for :class:`~mumo.models.Captioner` models (captioners, CoCa, text-only GPTs).

Strategies: greedy, sampling (temperature, top-k, top-p) and beam search (length penalty), each with a
repetition penalty, a budget of new tokens and stop tokens; all batched and all on the model's KV cache
(``use_cache=False`` recomputes the whole sequence at every step instead, for checking and measuring).

Prompts of different lengths are left-padded so that every row's newest token sits in the last column;
positions count real tokens only and padding is masked out as a key, so a row decodes exactly as it
would alone. Notation: B batch, K beams, P prompt length, N new tokens, V vocabulary size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mumo._config import Config, check
from mumo.errors import ConfigError


@dataclass
class GenerationConfig(Config):
    max_new_tokens: int = 32  # most tokens generated per row, stop token included
    num_beams: int = 1  # > 1: beam search (deterministic)
    length_penalty: float = 1.0  # beam search ranks by sum(log p) / length ** length_penalty
    do_sample: bool = False  # sample from the (filtered) distribution instead of taking the argmax
    temperature: float = 1.0  # sampling: logits / temperature
    top_k: int = 0  # sampling: keep the k most likely tokens (0: all)
    top_p: float = 1.0  # sampling: keep the smallest set whose probability reaches top_p (1: all)
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or output (CTRL)
    stop_ids: tuple[int, ...] = ()  # a row ends when it emits one of these (callers add <eot>)
    use_cache: bool = True  # reuse keys and values of earlier positions (False: recompute everything)
    seed: int = 0  # seed of sampling

    def validate(self) -> None:
        check(self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        check(self.num_beams >= 1, f"num_beams must be >= 1, got {self.num_beams}")
        check(
            not (self.do_sample and self.num_beams > 1),
            "beam search is deterministic: use num_beams > 1 or do_sample, not both",
        )
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        check(self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}")
        check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        check(self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}")


@dataclass
class GenerationOutput:
    """Generated tokens, one row per prompt."""

    sequences: Tensor  # (B, N) new tokens; after a row's stop token (kept), padding
    lengths: Tensor  # (B,) new tokens per row, stop token included
    scores: Tensor  # (B,) sum of log-probabilities; beam search: divided by length ** length_penalty

    def tokens(self) -> list[list[int]]:
        """Each row's new tokens, stop token included, padding dropped."""
        return [row[:n].tolist() for row, n in zip(self.sequences, self.lengths.tolist(), strict=True)]


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """(B, V) logits with all but the ``k`` largest of each row set to -inf (ties with the k-th kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """(B, V) logits keeping, per row, the most likely tokens whose probabilities first reach ``p``
    (nucleus sampling, Holtzman et al., 2020); the most likely token always stays."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty (Keskar et al., 2019): logits (B, V) of tokens marked in ``seen`` (B, V) bool are
    divided by ``penalty`` when positive and multiplied by it when negative."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def _process(logits: Tensor, seen: Tensor, config: GenerationConfig) -> Tensor:
    # bf16 / fp16 logits are scored in float32; float64 ones stay exact
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logits = repetition_penalty(logits, seen, config.repetition_penalty)
    if config.do_sample:
        logits = top_p_filter(top_k_filter(logits / config.temperature, config.top_k), config.top_p)
    return logits


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token lists -> left-padded ids (B, P) and their 0/1 mask (B, P)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("every prompt needs at least one token (captioning prompts start with <bos>)")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


def _as_lists(prompts: Sequence[Sequence[int]] | Tensor, attention_mask: Tensor | None) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        if prompts.dim() != 2:
            raise ConfigError(f"prompt ids must be (B, P), got {tuple(prompts.shape)}")
        if attention_mask is None:
            return prompts.tolist()
        # Any padding layout (right, as the tokenizer pads, or left): keep the real tokens in order.
        return [row[m.bool()].tolist() for row, m in zip(prompts, attention_mask, strict=True)]
    return [list(p) for p in prompts]


class _Decoder:
    """Feeds a model one step at a time, with or without its KV cache; keeps the positions, and the key
    mask when there is padding (the whole sequence too, when it decodes without a cache)."""

    def __init__(
        self,
        model: torch.nn.Module,
        ids: Tensor,
        mask: Tensor,
        context: Tensor | None,
        use_cache: bool,
        total: int,
    ) -> None:
        self.model, self.context, self.use_cache, self.total = model, context, use_cache, total
        self.ids, self.length = ids, ids.shape[1]
        self.key_mask = None  # (B, total) when there is padding: every column a step will ever see
        if not bool(mask.all()):
            self.key_mask = torch.ones(ids.shape[0], total, dtype=mask.dtype, device=mask.device)
            self.key_mask[:, : self.length] = mask
        self.positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, P): real tokens count from 0
        self.state = None

    @property
    def mask(self) -> Tensor | None:
        """(B, S) key mask of the positions so far; None: no padding."""
        return None if self.key_mask is None else self.key_mask[:, : self.length]

    def start(self) -> Tensor:
        """Logits (B, V) after the prompt."""
        if self.use_cache:
            self.state = self.model.start_decoding(self.context, self.ids.shape[0], self.total)
            return self.model.decode(self.ids, self.positions, self.mask, self.state)[:, -1]
        return self.model.decode(self.ids, self.positions, self.mask, context=self.context)[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        """Append tokens (B,); logits (B, V) for the next position."""
        nxt = self.positions[:, -1:] + 1  # (B, 1)
        self.length += 1
        if self.use_cache:  # only the newest position goes in; the rest is in the cache
            self.positions = nxt
            return self.model.decode(tokens[:, None], nxt, self.mask, self.state)[:, -1]
        self.positions = torch.cat([self.positions, nxt], dim=1)
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        return self.model.decode(self.ids, self.positions, self.mask, context=self.context)[:, -1]

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (beam search)."""
        self.ids, self.positions = self.ids[index], self.positions[index]
        if self.key_mask is not None:
            self.key_mask = self.key_mask[index]
        if self.state is not None:
            self.state.reorder(index)
        elif self.context is not None:
            self.context = self.context[index]


@contextmanager
def _aten_eltwise() -> Iterator[None]:
    """Run the decoding steps without oneDNN's ATen dispatch. With it, every exact GELU (and a few other
    element-wise ops) on float32 goes through a oneDNN primitive that costs ~10 us a call however small,
    against ~2 us for PyTorch's own kernel on a step's one row: 16-25 % of a mini decoder's step. The steps
    run no convolution (the image tower ran before), frozen layers call their oneDNN kernels directly, and
    the two GELUs agree to ~2e-7. The switch is process-wide; decoding and a convolution on another thread
    at the same moment would run that convolution on PyTorch's slower kernel."""
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]] | Tensor,
    attention_mask: Tensor | None = None,
    images: Tensor | None = None,
    context: Tensor | None = None,
    config: GenerationConfig | None = None,
) -> GenerationOutput:
    """Continue each prompt, conditioned on its image for captioners.

    Args:
        model: a :class:`~mumo.models.Captioner` (image captioner, CoCa or text-only GPT).
        prompts: token lists, or ids (B, P) with ``attention_mask`` (B, P) in any padding layout; a
            captioning prompt is ``[<bos>]``, a question ``[<bos>, question tokens…]``.
        images: (B, 3, H, W) for image models; or ``context`` (B, S, Cv) from ``model.image_context``.
        config: the strategy; its ``stop_ids`` should hold the tokenizer's end token.

    Returns:
        :class:`GenerationOutput` with the new tokens of each row.
    """
    config = config or GenerationConfig()
    rows = _as_lists(prompts, attention_mask)
    pad_id = model.config.text.pad_id
    device = model.text.token_embed.weight.device
    ids, mask = (t.to(device) for t in left_pad(rows, pad_id))
    if images is not None:
        context = model.image_context(images.to(device))
    if context is not None and context.shape[0] != ids.shape[0]:
        raise ConfigError(f"{context.shape[0]} images for {ids.shape[0]} prompts; give one image per prompt")
    total = ids.shape[1] + config.max_new_tokens
    if total > model.context_length:
        raise ConfigError(
            f"prompt of {ids.shape[1]} tokens + max_new_tokens {config.max_new_tokens} exceed the model's "
            f"context_length {model.context_length}; lower max_new_tokens"
        )
    with _aten_eltwise():
        if config.num_beams > 1:
            return _beam_search(model, ids, mask, context, config, total)
        return _sample_or_greedy(model, ids, mask, context, config, total)


def _seen_tokens(ids: Tensor, mask: Tensor, vocab_size: int) -> Tensor:
    seen = torch.zeros(ids.shape[0], vocab_size, dtype=torch.bool, device=ids.device)
    return seen.scatter_(1, ids, mask.bool())  # padding never counts


def _sample_or_greedy(
    model: torch.nn.Module,
    ids: Tensor,
    mask: Tensor,
    context: Tensor | None,
    config: GenerationConfig,
    total: int,
) -> GenerationOutput:
    b, device = ids.shape[0], ids.device
    decoder = _Decoder(model, ids, mask, context, config.use_cache, total)
    logits = decoder.start()
    seen = _seen_tokens(ids, mask, logits.shape[-1])
    stops = torch.tensor(config.stop_ids, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(config.seed) if config.do_sample else None
    done = torch.zeros(b, dtype=torch.bool, device=device)
    lengths = torch.zeros(b, dtype=torch.long, device=device)
    scores = torch.zeros(b, dtype=torch.float64, device=device)
    out = []
    pad = model.config.text.pad_id
    for step in range(config.max_new_tokens):
        logits = _process(logits, seen, config)
        logp = logits.log_softmax(dim=-1)
        if config.do_sample:
            token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
        else:
            token = logits.argmax(dim=-1)
        token = token.masked_fill(done, pad)
        scores += torch.where(done, 0.0, logp.gather(1, token[:, None]).squeeze(1).double())
        lengths += (~done).long()
        out.append(token)
        done |= torch.isin(token, stops)
        if bool(done.all()) or step == config.max_new_tokens - 1:
            break
        seen[torch.arange(b, device=device), token] |= ~done
        logits = decoder.step(token)
    return GenerationOutput(torch.stack(out, dim=1), lengths, scores)


def _beam_search(
    model: torch.nn.Module,
    ids: Tensor,
    mask: Tensor,
    context: Tensor | None,
    config: GenerationConfig,
    total: int,
) -> GenerationOutput:
    """Beam search that keeps ``num_beams`` running hypotheses per row and stops a row once it holds
    ``num_beams`` finished ones that no running beam can overtake; hypotheses are ranked by
    sum(log p) / length ** length_penalty. With one beam this is exactly greedy decoding."""
    k, (b, _) = config.num_beams, ids.shape
    device = ids.device
    ids, mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
    if context is not None:
        context = context.repeat_interleave(k, 0)
    decoder = _Decoder(model, ids, mask, context, config.use_cache, total)
    logits = decoder.start()  # (BK, V)
    vocab = logits.shape[-1]
    seen = _seen_tokens(ids, mask, vocab)
    stops = set(config.stop_ids)
    pad = model.config.text.pad_id
    beam_scores = torch.zeros(b, k, dtype=torch.float64, device=device)
    beam_scores[:, 1:] = float("-inf")  # all beams start equal: only the first may expand at step 0
    running: list[list[int]] = [[] for _ in range(b * k)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    done = [False] * b
    for step in range(config.max_new_tokens):
        logp = _process(logits, seen, config).log_softmax(dim=-1)  # (BK, V)
        cand = (beam_scores.view(-1, 1) + logp.double()).view(b, k * vocab)
        top_scores, top_index = cand.topk(2 * k, dim=1)  # enough that K survive after stop tokens
        top_scores, top_index = top_scores.tolist(), top_index.tolist()
        src, tokens, scores = [], [], []
        for i in range(b):
            if done[i]:  # keep feeding a finished row something harmless until every row is done
                src += [i * k + j for j in range(k)]
                tokens += [pad] * k
                scores += [float("-inf")] * k
                continue
            kept = 0
            for rank, (score, index) in enumerate(zip(top_scores[i], top_index[i], strict=True)):
                beam, token = divmod(index, vocab)
                if token in stops:
                    if rank < k:  # a stop token among the K best ends a hypothesis
                        seq = running[i * k + beam] + [token]
                        finished[i].append((score / len(seq) ** config.length_penalty, seq))
                    continue
                src.append(i * k + beam)
                tokens.append(token)
                scores.append(score)
                kept += 1
                if kept == k:
                    break
            for _ in range(k - kept):  # more stop tokens than spare candidates: dead beams fill the rest
                src.append(i * k)
                tokens.append(pad)
                scores.append(float("-inf"))
            if len(finished[i]) >= k:
                # Done once no running beam can overtake the K-th best finished hypothesis at its current
                # length (Hugging Face's rule without early stopping; exact when length_penalty <= 0).
                kth = sorted((h[0] for h in finished[i]), reverse=True)[k - 1]
                best_running = max(scores[-k:]) / (step + 1) ** config.length_penalty
                done[i] = kth >= best_running
        if all(done):
            break
        running = [running[s] + [t] for s, t in zip(src, tokens, strict=True)]
        beam_scores = torch.tensor(scores, dtype=torch.float64, device=device).view(b, k)
        if step == config.max_new_tokens - 1:
            break
        index = torch.tensor(src, device=device)
        token_t = torch.tensor(tokens, device=device)
        decoder.reorder(index)
        seen = seen[index]
        seen[torch.arange(b * k, device=device), token_t] = True
        logits = decoder.step(token_t)
    best_rows, best_scores = [], []
    for i in range(b):
        hyps = list(finished[i])
        if not done[i]:  # out of budget: the running beams compete too
            for j in range(k):
                seq, score = running[i * k + j], float(beam_scores[i, j])
                if seq and score > float("-inf"):
                    hyps.append((score / len(seq) ** config.length_penalty, seq))
        score, seq = max(hyps, key=lambda h: h[0])
        best_rows.append(seq)
        best_scores.append(score)
    width = max(len(s) for s in best_rows)
    sequences = torch.full((b, width), pad, dtype=torch.long, device=device)
    for i, seq in enumerate(best_rows):
        sequences[i, : len(seq)] = torch.tensor(seq, device=device)
    lengths = torch.tensor([len(s) for s in best_rows], device=device)
    return GenerationOutput(sequences, lengths, torch.tensor(best_scores, dtype=torch.float64, device=device))


def _fitted(
    config: GenerationConfig | None, tokenizer: Any, model: torch.nn.Module, prompts: list[list[int]]
) -> GenerationConfig:
    """``config`` with the tokenizer's end token among the stop tokens and the budget of new tokens cut
    to the room the longest prompt leaves in the model's context."""
    config = config or GenerationConfig()
    room = model.context_length - max(len(p) for p in prompts)
    if room < 1:
        raise ConfigError(
            f"a prompt of {model.context_length - room} tokens fills the model's context_length "
            f"{model.context_length}; shorten it"
        )
    stops = config.stop_ids if tokenizer.eot_id in config.stop_ids else (*config.stop_ids, tokenizer.eot_id)
    return config.replace(stop_ids=stops, max_new_tokens=min(config.max_new_tokens, room))


@torch.inference_mode()
def caption_images(
    model: torch.nn.Module, tokenizer: Any, images: Tensor, config: GenerationConfig | None = None
) -> list[str]:
    """Captions of normalised images (B, 3, H, W), generated from ``<bos>`` until ``<eot>``."""
    prompts = [[tokenizer.bos_id]] * images.shape[0]
    output = generate(model, prompts, images=images, config=_fitted(config, tokenizer, model, prompts))
    return [tokenizer.decode(t).strip() for t in output.tokens()]


@torch.inference_mode()
def answer_questions(
    model: torch.nn.Module,
    tokenizer: Any,
    images: Tensor,
    image_rows: Sequence[int],
    questions: Sequence[str],
    config: GenerationConfig | None = None,
) -> list[str]:
    """Answers to ``questions``, question i about image ``image_rows[i]`` of ``images`` (B, 3, H, W):
    each prompt is ``<bos> question`` and the answer is what follows, up to ``<eot>``. Each image's
    tokens are computed once however many questions it gets."""
    context = model.image_context(images.to(model.text.token_embed.weight.device))
    prompts = [[tokenizer.bos_id, *ids] for ids in tokenizer.encode_ids(list(questions))]
    rows = torch.as_tensor(list(image_rows), dtype=torch.long, device=context.device)
    config = _fitted(config, tokenizer, model, prompts)
    output = generate(model, prompts, context=context[rows], config=config)
    return [tokenizer.decode(t).strip() for t in output.tokens()]


@torch.inference_mode()
def complete_text(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], config: GenerationConfig | None = None
) -> list[str]:
    """Continuations of text prompts by a text-only model (each prompt starts after ``<bos>``)."""
    ids = [[tokenizer.bos_id, *row] for row in tokenizer.encode_ids(list(prompts))]
    output = generate(model, ids, config=_fitted(config, tokenizer, model, ids))
    return [tokenizer.decode(t) for t in output.tokens()]
