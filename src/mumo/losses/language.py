"""Language-modelling losses: BERT-style token masking, the masked LM loss, and the causal LM loss.

Notation: B batch, T sequence length, V vocabulary size. ``attention_mask`` is 1 for real tokens and 0
for padding (see :class:`mumo.data.tokenizer.TokenBatch`); labels of -100 are ignored, as in PyTorch's
``cross_entropy`` and Hugging Face.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mumo.errors import DataError

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Corrupt tokens for masked language modelling (BERT, Devlin et al., 2019).

    Of the eligible tokens (real, i.e. ``attention_mask`` 1, and not in ``special_ids`` nor ``mask_id``)
    each is chosen with ``probability``; a row with eligible tokens but none chosen gets one chosen
    uniformly at random, so every such row contributes to the loss. Of the chosen, 80 % become
    ``mask_id``, 10 % a random non-special id (which may equal the original, as in BERT), 10 % stay.

    Args:
        input_ids: (B, T) token ids.
        attention_mask: (B, T) 1 for real tokens, 0 for padding.
        mask_id: the ``<mask>`` id; it is treated as special even if absent from ``special_ids``.
        vocab_size: V; random replacements are drawn from [0, V) minus the special ids.
        special_ids: ids never chosen and never drawn (pad, bos, eot, ...).
        probability: chance of choosing each eligible token, in (0, 1].
        generator: RNG on ``input_ids``' device; the same seed gives the same result.

    Returns:
        (masked_input_ids, labels), both (B, T) long: labels hold the original id at chosen positions
        and -100 elsewhere. ``input_ids`` is not modified.
    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise DataError(
            f"input_ids and attention_mask must both be (B, T); got {tuple(input_ids.shape)} and "
            f"{tuple(attention_mask.shape)}"
        )
    if not 0.0 < probability <= 1.0:
        raise DataError(f"probability must be in (0, 1], got {probability}")
    if not 0 <= mask_id < vocab_size:
        raise DataError(f"mask_id {mask_id} is outside the vocabulary [0, {vocab_size})")
    device = input_ids.device
    special = torch.tensor(sorted({*special_ids, mask_id}), dtype=torch.long, device=device)
    candidates = torch.arange(vocab_size, device=device)
    candidates = candidates[~torch.isin(candidates, special)]  # ids a random replacement may take
    if candidates.numel() == 0:
        raise DataError(f"every id in [0, {vocab_size}) is special; no token can replace a masked one")

    eligible = attention_mask.bool() & ~torch.isin(input_ids, special)  # (B, T)
    draw = torch.rand(input_ids.shape, generator=generator, device=device)  # (B, T)
    chosen = eligible & (draw < probability)
    # Rows that drew nothing take their eligible token with the smallest draw: uniform among eligible,
    # and it reuses the same draw, so the result stays a function of the generator's state alone.
    needs_one = eligible.any(dim=1) & ~chosen.any(dim=1)  # (B,)
    first = draw.masked_fill(~eligible, 2.0).argmin(dim=1)  # (B,)
    rows = needs_one.nonzero().squeeze(1)
    chosen[rows, first[rows]] = True

    split = torch.rand(input_ids.shape, generator=generator, device=device)  # (B, T)
    to_mask = chosen & (split < 0.8)
    to_random = chosen & (split >= 0.8) & (split < 0.9)  # the remaining 10 % keep their token
    random_ids = candidates[
        torch.randint(candidates.numel(), input_ids.shape, generator=generator, device=device)
    ]
    masked = input_ids.clone()
    masked[to_mask] = mask_id
    masked[to_random] = random_ids[to_random]
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    return masked, labels


def masked_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over the chosen tokens, mean over them.

    Args:
        logits: (B, T, V).
        labels: (B, T) original ids at chosen positions, -100 elsewhere (see :func:`mask_tokens`).

    Returns:
        A scalar. With no chosen token at all it is 0 (still attached to ``logits``), not NaN, so an
        all-padding batch does not stop training.
    """
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise DataError(
            f"logits must be (B, T, V) and labels (B, T); got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    return _mean_cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def causal_lm_loss(
    logits: Tensor, input_ids: Tensor, attention_mask: Tensor, target_mask: Tensor | None = None
) -> Tensor:
    """Next-token prediction: position t's logits predict token t + 1; mean over predicted tokens.

    A prediction counts only when both the token predicted and the position predicting it are real,
    so padding is excluded on either side (left or right padding). The first token (``<bos>``) is
    never a target.

    Args:
        logits: (B, T, V) from the model given ``input_ids``.
        input_ids: (B, T) the same ids the model read.
        attention_mask: (B, T) 1 for real tokens, 0 for padding.
        target_mask: (B, T) 1 where a token is to be predicted (e.g. a VQA answer, not its question);
            None: every real token after the first.

    Returns:
        A scalar (0, attached to ``logits``, when nothing is predicted).
    """
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape or input_ids.shape != attention_mask.shape:
        raise DataError(
            f"logits must be (B, T, V), input_ids and attention_mask (B, T); got {tuple(logits.shape)}, "
            f"{tuple(input_ids.shape)}, {tuple(attention_mask.shape)}"
        )
    real = attention_mask.bool()
    predicted = real[:, 1:] & real[:, :-1]
    if target_mask is not None:
        predicted &= target_mask[:, 1:].bool()
    targets = input_ids[:, 1:].masked_fill(~predicted, IGNORE_INDEX)  # (B, T-1)
    preds = logits[:, :-1]  # (B, T-1, V)
    return _mean_cross_entropy(preds.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _mean_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of (M, V) logits over the targets (M,) that are not -100; 0 if there are none."""
    count = (targets != IGNORE_INDEX).sum()
    if count == 0:
        # cross_entropy's mean over zero targets is 0 / 0 = NaN; keep the graph so backward still works.
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") / count
