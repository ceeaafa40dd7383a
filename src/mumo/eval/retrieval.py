"""Image–text retrieval: Recall@k and ranks, with one or several captions per image.

Notation: I images, T texts, E embedding width, Q queries, n rows of a chunk.

Each text describes one image; an image may have several texts (COCO and Flickr30k list five captions per
image). Text -> image is a hit at k when the text's image is among the first k images; image -> text when
*any* of the image's texts is among the first k texts (the COCO / CLIP_benchmark protocol). Without a
mapping, image i and text i are the one matching pair.

Ties are broken pessimistically: the rank of a query's best match is the number of *non-matching*
candidates scoring greater than *or equal to* it (0-based), so a collapsed model whose scores are all
equal gets the worst rank, never a lucky 0. Recall@k is the fraction of queries with rank < k.

The similarity matrix is never built whole: queries are scored ``chunk_size`` at a time against all
candidates, so memory is about chunk_size x candidates floats (200 MB for the default 1,024 at 50,000),
twice that for image -> text with several texts per image (a masked copy finds each image's best text).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mumo.errors import DataError


def match_ranks(
    queries: Tensor,
    candidates: Tensor,
    chunk_size: int = 1024,
    *,
    query_ids: Tensor | None = None,
    candidate_ids: Tensor | None = None,
) -> Tensor:
    """0-based rank of each query's best-scoring match, ties counted against it.

    Candidate j matches query q when ``candidate_ids[j] == query_ids[q]``. Without ``candidate_ids`` each
    candidate is its own group (candidate j has id j), so query q's one match is candidate
    ``query_ids[q]``; without either, candidate q is the match of query q. The rank counts the candidates
    that do *not* match and score >= the best match, so a query's other matches never push it down.

    Args:
        queries: (Q, E).
        candidates: (C, E).
        chunk_size: queries scored at once.
        query_ids: (Q,) integer group of each query; default ``arange(Q)``.
        candidate_ids: (C,) integer group of each candidate; default ``arange(C)``.

    Returns:
        (Q,) long ranks in [0, C).
    """
    if chunk_size <= 0:
        raise DataError(f"chunk_size must be positive, got {chunk_size}")
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise DataError(
            f"expected queries (Q, E) and candidates (C, E) of one width, got {tuple(queries.shape)} "
            f"and {tuple(candidates.shape)}"
        )
    n_queries, n_candidates = queries.shape[0], candidates.shape[0]
    if n_queries == 0 or n_candidates == 0:
        raise DataError("no queries or no candidates to rank")
    if query_ids is None and candidate_ids is None and n_queries != n_candidates:
        raise DataError(
            f"expected queries and candidates both (N, E), got {tuple(queries.shape)} and "
            f"{tuple(candidates.shape)}; pass query_ids / candidate_ids when they are not pairs"
        )
    device = queries.device
    q_ids = _ids(query_ids, n_queries, "query_ids", device)
    candidates = candidates.to(device)
    if candidate_ids is None and (q_ids.min() < 0 or q_ids.max() >= n_candidates):
        raise DataError(f"query_ids must lie in [0, {n_candidates}) (one candidate each)")
    c_ids = None if candidate_ids is None else _ids(candidate_ids, n_candidates, "candidate_ids", device)
    ranks = []
    for start in range(0, n_queries, chunk_size):
        q = queries[start : start + chunk_size]  # (n, E)
        ids = q_ids[start : start + chunk_size]  # (n,)
        scores = q @ candidates.T  # (n, C)
        # The match's score is read from this very matrix, never recomputed: a candidate then never
        # beats its own score through a different rounding.
        if c_ids is None:  # one match per query: memory stays at one (n, C) matrix
            true = scores.gather(1, ids[:, None])  # (n, 1)
            ranks.append((scores >= true).sum(dim=1) - 1)  # minus the match itself
            continue
        match = ids[:, None] == c_ids[None, :]  # (n, C)
        alone = ~match.any(dim=1)
        if alone.any():
            q_at = start + int(alone.nonzero()[0])
            raise DataError(f"query {q_at} (id {int(q_ids[q_at])}) matches no candidate; give each one")
        best = scores.masked_fill(~match, float("-inf")).amax(dim=1, keepdim=True)  # (n, 1)
        ranks.append(((scores >= best) & ~match).sum(dim=1))
    return torch.cat(ranks)


def _ids(ids: Tensor | None, n: int, name: str, device: torch.device) -> Tensor:
    """``ids`` (default ``arange(n)``) on ``device``, after checking it is (n,) integers."""
    if ids is None:
        return torch.arange(n, device=device)
    if ids.shape != (n,) or ids.is_floating_point() or ids.is_complex():
        raise DataError(f"{name} must be ({n},) integers, got {tuple(ids.shape)} {ids.dtype}")
    return ids.to(device).long()


def retrieval_metrics(
    image_embeds: Tensor,
    text_embeds: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
    text_to_image: Tensor | None = None,
) -> dict[str, float]:
    """Recall@k and mean / median rank in both directions.

    Args:
        image_embeds: (I, E), unit norm (or any embeddings compared by dot product); each image once.
        text_embeds: (T, E).
        ks: the k of Recall@k.
        chunk_size: queries scored at once, bounding memory at chunk_size x max(I, T).
        text_to_image: (T,) long, the image each text describes; every image needs at least one text.
            None: T == I and text i describes image i.

    Returns:
        ``image_to_text_R@{k}`` and ``text_to_image_R@{k}`` (fractions in [0, 1]) for each k, and
        ``{direction}_mean_rank`` / ``{direction}_median_rank`` (1-based, lower is better). Image -> text
        averages over the I images (a hit through any of its texts), text -> image over the T texts.
    """
    if image_embeds.ndim != 2 or text_embeds.ndim != 2:
        raise DataError(
            f"expected image_embeds (I, E) and text_embeds (T, E), got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}"
        )
    n_images, n_texts = image_embeds.shape[0], text_embeds.shape[0]
    if text_to_image is None and image_embeds.shape != text_embeds.shape:
        raise DataError(
            f"expected image_embeds and text_embeds both (N, E), got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}; pass text_to_image when an image has several texts"
        )
    if image_embeds.shape[1] != text_embeds.shape[1]:
        raise DataError(
            f"image and text embeddings differ in width: {image_embeds.shape[1]} and {text_embeds.shape[1]}"
        )
    if n_images == 0 or n_texts == 0:
        raise DataError("no pairs to score")
    if any(k < 1 for k in ks):
        raise DataError(f"every k must be >= 1, got {tuple(ks)}")
    device = image_embeds.device
    text_embeds = text_embeds.to(device)
    # None: the 1:1 case, each text its own group (one match per query both ways)
    owner = None if text_to_image is None else _check_owners(text_to_image, n_images, n_texts, device)
    out: dict[str, float] = {}
    i2t = match_ranks(image_embeds, text_embeds, chunk_size, candidate_ids=owner)
    t2i = match_ranks(text_embeds, image_embeds, chunk_size, query_ids=owner)
    out.update(recall_from_ranks(i2t, "image_to_text", ks))
    out.update(recall_from_ranks(t2i, "text_to_image", ks))
    return out


def _check_owners(text_to_image: Tensor, n_images: int, n_texts: int, device: torch.device) -> Tensor:
    """``text_to_image`` on ``device``, after checking it names an image for every text and a text for
    every image."""
    if text_to_image.shape != (n_texts,) or text_to_image.is_floating_point() or text_to_image.is_complex():
        raise DataError(
            f"text_to_image must be ({n_texts},) integers (the image of each text), got "
            f"{tuple(text_to_image.shape)} {text_to_image.dtype}"
        )
    owner = text_to_image.to(device).long()
    if owner.min() < 0 or owner.max() >= n_images:
        raise DataError(
            f"text_to_image values must lie in [0, {n_images}), got {int(owner.min())}..{int(owner.max())}"
        )
    counts = torch.bincount(owner, minlength=n_images)
    if (counts == 0).any():
        lonely = int((counts == 0).nonzero()[0])
        raise DataError(
            f"image {lonely} has no text; every image needs at least one (drop captionless images first)"
        )
    return owner


def recall_from_ranks(ranks: Tensor, name: str, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{name}_R@{k}`` and ``{name}_mean_rank`` / ``{name}_median_rank`` (1-based) from (Q,) 0-based
    ranks of the true matches."""
    out = {f"{name}_R@{k}": (ranks < k).float().mean().item() for k in ks}
    out[f"{name}_mean_rank"] = (ranks + 1).float().mean().item()
    out[f"{name}_median_rank"] = (ranks + 1).float().median().item()
    return out
