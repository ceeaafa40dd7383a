"""Image–text retrieval: Recall@k and ranks, where image i and text i are the one matching pair.

Notation: N pairs, E embedding width, n rows of a chunk.

Ties are broken pessimistically: the rank of the true match is the number of *other* candidates scoring
greater than *or equal to* it (0-based), so a collapsed model whose scores are all equal gets rank N - 1,
never a lucky 0. Recall@k is the fraction of queries with rank < k.

The N x N similarity matrix is never built: queries are scored ``chunk_size`` at a time against all
candidates, so memory is about chunk_size x N floats (200 MB for the default 1,024 at N = 50,000).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mumo.errors import DataError


def match_ranks(queries: Tensor, candidates: Tensor, chunk_size: int = 1024) -> Tensor:
    """0-based rank of candidate i for query i, ties counted against it.

    Args:
        queries: (N, E).
        candidates: (N, E); row i is the match of query i.
        chunk_size: queries scored at once.

    Returns:
        (N,) long ranks in [0, N).
    """
    if chunk_size <= 0:
        raise DataError(f"chunk_size must be positive, got {chunk_size}")
    if queries.ndim != 2 or queries.shape != candidates.shape or queries.shape[0] == 0:
        raise DataError(
            f"expected queries and candidates both (N, E) with N > 0, got {tuple(queries.shape)} "
            f"and {tuple(candidates.shape)}"
        )
    ranks = []
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start : start + chunk_size]  # (n, E)
        scores = q @ candidates.T  # (n, N)
        rows = torch.arange(q.shape[0], device=scores.device)
        true = scores[rows, rows + start][:, None]  # (n, 1), the very element compared below
        ranks.append((scores >= true).sum(dim=1) - 1)  # minus the match itself
    return torch.cat(ranks)


def retrieval_metrics(
    image_embeds: Tensor, text_embeds: Tensor, ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024
) -> dict[str, float]:
    """Recall@k and mean / median rank in both directions.

    Args:
        image_embeds: (N, E), unit norm (or any embeddings compared by dot product).
        text_embeds: (N, E); text i describes image i.
        ks: the k of Recall@k.
        chunk_size: queries scored at once, bounding memory at chunk_size x N.

    Returns:
        ``image_to_text_R@{k}`` and ``text_to_image_R@{k}`` (fractions in [0, 1]) for each k, and
        ``{direction}_mean_rank`` / ``{direction}_median_rank`` (1-based, lower is better).
    """
    if image_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
        raise DataError(
            f"expected image_embeds and text_embeds both (N, E), got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}"
        )
    if image_embeds.shape[0] == 0:
        raise DataError("no pairs to score")
    if any(k < 1 for k in ks):
        raise DataError(f"every k must be >= 1, got {tuple(ks)}")
    text_embeds = text_embeds.to(image_embeds.device)
    out: dict[str, float] = {}
    for name, queries, candidates in (
        ("image_to_text", image_embeds, text_embeds),
        ("text_to_image", text_embeds, image_embeds),
    ):
        out.update(recall_from_ranks(match_ranks(queries, candidates, chunk_size), name, ks))
    return out


def recall_from_ranks(ranks: Tensor, name: str, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{name}_R@{k}`` and ``{name}_mean_rank`` / ``{name}_median_rank`` (1-based) from (Q,) 0-based
    ranks of the true matches."""
    out = {f"{name}_R@{k}": (ranks < k).float().mean().item() for k in ks}
    out[f"{name}_mean_rank"] = (ranks + 1).float().mean().item()
    out[f"{name}_median_rank"] = (ranks + 1).float().median().item()
    return out
