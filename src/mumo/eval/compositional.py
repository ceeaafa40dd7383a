"""Compositional probe: does the image sit closer to its caption than to a minimally edited one?

Each image has a positive caption and, per negative type (e.g. "swap_attribute", "swap_relation",
"replace_object"), hard negatives that change one thing, in the spirit of ARO and SugarCrepe
(Yuksekgonul et al., 2023; Hsieh et al., 2023). A bag-of-words model scores 50% on swaps.

Notation: N images, N_t negatives of type t, E embedding width.

A tie, sim(image, positive) == sim(image, negative), counts as a failure: the model did not prefer the
true caption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mumo.data.tokenizer import Tokenizer
from mumo.errors import DataError
from mumo.inference import embed_texts


def compositional_probe(
    image_embeds: Tensor,
    positive_text_embeds: Tensor,
    negative_text_embeds: Mapping[str, Tensor],
    negative_index: Mapping[str, Tensor],
) -> dict[str, float]:
    """Per negative type, the fraction of image–negative pairs won by the positive caption.

    Args:
        image_embeds: (N, E).
        positive_text_embeds: (N, E); row i is the true caption of image i.
        negative_text_embeds: type -> (N_t, E) negative caption embeddings.
        negative_index: type -> (N_t,) long: the image row each negative belongs to. An image may have
            several negatives of a type (each pair counts) or none.

    Returns:
        ``{t: accuracy}`` and ``{f"n_{t}": N_t}`` for each type, plus ``"overall"`` (the mean over all
        image–negative pairs of every type) and ``"n_overall"``. A type with no negatives is NaN.
    """
    if image_embeds.ndim != 2 or positive_text_embeds.shape != image_embeds.shape:
        raise DataError(
            f"expected image_embeds and positive_text_embeds both (N, E), got {tuple(image_embeds.shape)} "
            f"and {tuple(positive_text_embeds.shape)}"
        )
    if set(negative_text_embeds) != set(negative_index):
        raise DataError(
            f"negative_text_embeds and negative_index name different types: "
            f"{sorted(negative_text_embeds)} vs {sorted(negative_index)}"
        )
    n, e = image_embeds.shape
    device = image_embeds.device
    pos_sim = (image_embeds * positive_text_embeds.to(device)).sum(dim=-1)  # (N,)
    neg_sims: dict[str, Tensor] = {}
    for t, neg in negative_text_embeds.items():
        idx = negative_index[t].to(device).long()
        if neg.ndim != 2 or neg.shape[1] != e or idx.shape != (neg.shape[0],):
            raise DataError(
                f"type {t!r}: expected negatives (N_t, {e}) and index (N_t,), got {tuple(neg.shape)} "
                f"and {tuple(idx.shape)}"
            )
        if idx.numel() and (idx.min() < 0 or idx.max() >= n):
            raise DataError(f"type {t!r}: negative_index must lie in [0, {n}), got {idx.min()}..{idx.max()}")
        neg_sims[t] = (image_embeds[idx] * neg.to(device)).sum(dim=-1)  # (N_t,)
    return compositional_probe_scores(pos_sim, neg_sims, negative_index)


def compositional_probe_scores(
    positive_scores: Tensor, negative_scores: Mapping[str, Tensor], negative_index: Mapping[str, Tensor]
) -> dict[str, float]:
    """:func:`compositional_probe` from any image-caption scores (e.g. a fusion model's ITM log-odds).

    Args:
        positive_scores: (N,) score of each image with its true caption.
        negative_scores: type -> (N_t,) score of each negative with its image.
        negative_index: type -> (N_t,) long, the image row of each negative.
    """
    if set(negative_scores) != set(negative_index):
        raise DataError(
            f"negative_scores and negative_index name different types: "
            f"{sorted(negative_scores)} vs {sorted(negative_index)}"
        )
    out: dict[str, float] = {}
    wins_total, pairs_total = 0, 0
    for t, neg in negative_scores.items():
        if t == "overall" or f"n_{t}" in negative_scores:
            raise DataError(f"negative type {t!r} would clash with a result key; rename it")
        idx = negative_index[t].to(positive_scores.device).long()
        if idx.shape != neg.shape:
            raise DataError(f"type {t!r}: {tuple(neg.shape)} scores but {tuple(idx.shape)} indices")
        wins = int((positive_scores[idx] > neg.to(positive_scores.device)).sum())
        out[t] = wins / idx.numel() if idx.numel() else float("nan")
        out[f"n_{t}"] = idx.numel()
        wins_total += wins
        pairs_total += idx.numel()
    out["overall"] = wins_total / pairs_total if pairs_total else float("nan")
    out["n_overall"] = pairs_total
    return out


def compositional_probe_from_texts(
    model: nn.Module,
    tokenizer: Tokenizer,
    image_embeds: Tensor,
    positives: Sequence[str],
    negatives: Sequence[Mapping[str, str]],
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """:func:`compositional_probe` from caption strings: embeds them, then scores.

    Args:
        model: a dual encoder (see :func:`mumo.inference.embed_texts`).
        tokenizer: the model's tokenizer.
        image_embeds: (N, E) embeddings of the N images.
        positives: N true captions.
        negatives: N mappings, type -> negative caption of that image; an image may lack some types.
        batch_size: texts per forward pass.
        device: where the forward passes run; defaults to the model's device. Text embeddings are then
            moved to ``image_embeds.device`` for scoring.

    Returns:
        As :func:`compositional_probe`.
    """
    n = image_embeds.shape[0]
    if len(positives) != n or len(negatives) != n:
        raise DataError(
            f"expected {n} positives and {n} negative mappings (one per image), "
            f"got {len(positives)} and {len(negatives)}"
        )
    texts: dict[str, list[str]] = {}
    rows: dict[str, list[int]] = {}
    for i, by_type in enumerate(negatives):
        for t, text in by_type.items():
            texts.setdefault(t, []).append(text)
            rows.setdefault(t, []).append(i)
    if not texts:
        raise DataError("no negative captions given")
    # One embedding pass over all captions keeps batches full; split back by type afterwards.
    flat = list(positives) + [s for t in texts for s in texts[t]]
    embeds = embed_texts(model, tokenizer, flat, batch_size=batch_size, device=device).to(image_embeds.device)
    pos, rest = embeds[:n], embeds[n:].split([len(texts[t]) for t in texts])
    neg_embeds = dict(zip(texts, rest, strict=True))
    neg_index = {t: torch.tensor(rows[t], dtype=torch.long) for t in texts}
    return compositional_probe(image_embeds, pos, neg_embeds, neg_index)
