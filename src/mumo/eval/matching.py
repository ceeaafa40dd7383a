"""Evaluation by image-text matching (ITM): a fusion model scores each (image, text) pair jointly.

Notation: N images, P scored pairs, Q queries, k shortlist length.

A pair's score is the ITM head's log-odds of "match", logit[1] - logit[0]. A model with embeddings
(:class:`~mumo.models.FusionModel`) ranks by ITC first and rescores only a top-k shortlist (ALBEF's
retrieval: one fusion pass per shortlisted pair instead of one per gallery item); a single-stream model has
no embeddings, so every candidate is scored. Ties are broken pessimistically, as in
:mod:`mumo.eval.retrieval`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mumo.data.tokenizer import Tokenizer
from mumo.errors import DataError
from mumo.eval.compositional import compositional_probe_scores
from mumo.eval.retrieval import recall_from_ranks
from mumo.inference import eval_mode, model_device
from mumo.models import capabilities
from mumo.models.text import trim_padding


class PairScorer:
    """ITM log-odds of (image, text) pairs, batched, for a model with ``itm_logits``.

    Args:
        model: a :class:`~mumo.models.FusionModel` (images become image tokens once, then are reused for
            every text) or a :class:`~mumo.models.SingleStream` (the images themselves are the context).
        tokenizer: the model's tokenizer.
        batch_size: pairs per forward pass.
        device: where the forward passes run; defaults to the model's device.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        batch_size: int = 256,
        device: torch.device | str | None = None,
    ) -> None:
        if not hasattr(model, "itm_logits"):
            raise DataError(f"{type(model).__name__} has no image-text matching head (itm_logits)")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = torch.device(device) if device is not None else model_device(model)

    @property
    def has_embeddings(self) -> bool:
        """True when the model also embeds images and texts alone (ITC), so shortlists are possible."""
        return "embed" in capabilities(self.model)

    @torch.no_grad()
    def image_context(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) normalized images -> (N, ...) what :meth:`score_pairs` pairs with texts, on CPU."""
        if not hasattr(self.model, "image_tokens"):
            return images
        with eval_mode(self.model):
            out = [
                self.model.image_tokens(images[i : i + self.batch_size].to(self.device)).cpu()
                for i in range(0, images.shape[0], self.batch_size)
            ]
        return torch.cat(out)

    @torch.no_grad()
    def score_pairs(
        self, context: Tensor, texts: Sequence[str], image_rows: Tensor, text_rows: Tensor
    ) -> Tensor:
        """Scores of the pairs (context[image_rows[p]], texts[text_rows[p]]).

        Args:
            context: (N, ...) from :meth:`image_context`.
            texts: distinct texts, tokenized once.
            image_rows, text_rows: (P,) long indices.

        Returns:
            (P,) float log-odds of "match", on CPU.
        """
        if image_rows.shape != text_rows.shape or image_rows.dim() != 1:
            raise DataError(
                f"image_rows and text_rows must both be (P,), got {tuple(image_rows.shape)} and "
                f"{tuple(text_rows.shape)}"
            )
        tokens = self.tokenizer.encode(list(texts))
        ids, mask = tokens.input_ids, tokens.attention_mask
        scores = []
        with eval_mode(self.model):
            for s in range(0, image_rows.numel(), self.batch_size):
                i, t = image_rows[s : s + self.batch_size], text_rows[s : s + self.batch_size]
                pair_ids, pair_mask = trim_padding(ids[t], mask[t])
                logits = self.model.itm_logits(
                    context[i].to(self.device), pair_ids.to(self.device), pair_mask.to(self.device)
                ).float()
                scores.append((logits[:, 1] - logits[:, 0]).cpu())
        return torch.cat(scores) if scores else torch.zeros(0)

    def score_candidates(
        self, context: Tensor, texts: Sequence[str], candidates: Tensor, queries: str
    ) -> Tensor:
        """Scores of each query against its candidates.

        Args:
            context: (N, ...) image contexts; texts: the text pool.
            candidates: (Q, k) long; row q lists candidate indices for query q.
            queries: 'images' (query q is image q, candidates index ``texts``) or 'texts' (query q is
                text q, candidates index images).

        Returns:
            (Q, k) scores.
        """
        q, k = candidates.shape
        rows = torch.arange(q).repeat_interleave(k)
        flat = candidates.reshape(-1)
        if queries == "images":
            s = self.score_pairs(context, texts, rows, flat)
        elif queries == "texts":
            s = self.score_pairs(context, texts, flat, rows)
        else:
            raise DataError(f"queries must be 'images' or 'texts', got {queries!r}")
        return s.view(q, k)


def reranked_ranks(first_stage: Tensor, rescored: Tensor, shortlist: Tensor) -> Tensor:
    """0-based rank of query q's true candidate q after re-ranking a shortlist (ties count against it).

    Args:
        first_stage: (Q, N) first-stage scores (e.g. ITC similarities); candidate q is query q's match.
        rescored: (Q, k) second-stage scores of the shortlisted candidates.
        shortlist: (Q, k) long indices of the first-stage top-k.

    Returns:
        (Q,) long. A match in the shortlist is ranked among the shortlist by its second-stage score; a
        match outside keeps its first-stage rank (which is >= k, behind the whole shortlist).
    """
    q = first_stage.shape[0]
    rows = torch.arange(q)
    true_first = first_stage[rows, rows][:, None]
    first_rank = (first_stage >= true_first).sum(dim=1) - 1
    hit = shortlist == rows[:, None]  # (Q, k)
    in_list = hit.any(dim=1)
    true_second = (rescored * hit).sum(dim=1, keepdim=True)  # the match's rescored value where present
    second_rank = ((rescored >= true_second) & ~hit).sum(dim=1)
    return torch.where(in_list, second_rank, torch.maximum(first_rank, torch.tensor(shortlist.shape[1])))


def itm_retrieval(
    scorer: PairScorer,
    context: Tensor,
    captions: Sequence[str],
    image_embeds: Tensor | None = None,
    text_embeds: Tensor | None = None,
    k: int = 16,
) -> dict[str, float]:
    """Image<->text retrieval ranked by ITM; caption i describes image i.

    With embeddings (N, E), the ITC top-``k`` of each query is re-ranked by ITM; without, every pair
    (N x N fusion passes) is scored.
    """
    n = context.shape[0]
    if len(captions) != n:
        raise DataError(f"expected {n} captions (one per image), got {len(captions)}")
    out: dict[str, float] = {}
    if image_embeds is not None and text_embeds is not None:
        sim = image_embeds.float() @ text_embeds.float().T  # (N, N), rows images
        k = min(k, n)
        for name, first, queries in (("image_to_text", sim, "images"), ("text_to_image", sim.T, "texts")):
            shortlist = first.topk(k, dim=1).indices  # (N, k)
            rescored = scorer.score_candidates(context, captions, shortlist, queries)
            out.update(recall_from_ranks(reranked_ranks(first, rescored, shortlist), name))
        return out
    everything = torch.arange(n).expand(n, n)
    scores = scorer.score_candidates(context, captions, everything, "images")  # (N images, N texts)
    for name, matrix in (("image_to_text", scores), ("text_to_image", scores.T)):
        rows = torch.arange(n)
        ranks = (matrix >= matrix[rows, rows][:, None]).sum(dim=1) - 1
        out.update(recall_from_ranks(ranks, name))
    return out


def itm_zero_shot(
    scorer: PairScorer,
    context: Tensor,
    class_texts: Sequence[str],
    labels: Tensor,
    shortlist: Tensor | None = None,
) -> tuple[dict[str, float], Tensor]:
    """Top-1 accuracy of classifying each image by the ITM score of each class's text.

    Args:
        context: (N, ...) image contexts; class_texts: C prompts, one per class; labels: (N,) long.
        shortlist: (N, k) candidate classes per image (e.g. the zero-shot ITC top-k); None scores all C.

    Returns:
        (``{"top1": accuracy, "in_shortlist": fraction of true classes in the shortlist}``, (N,) predicted
        classes). A tie with another candidate counts as an error.
    """
    n = context.shape[0]
    if shortlist is None:
        shortlist = torch.arange(len(class_texts)).expand(n, -1)
    scores = scorer.score_candidates(context, class_texts, shortlist, "images")  # (N, k)
    hit = shortlist == labels[:, None]
    true = (scores * hit).sum(dim=1, keepdim=True)
    correct = hit.any(dim=1) & (((scores >= true) & ~hit).sum(dim=1) == 0)
    preds = shortlist.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)
    metrics = {"top1": correct.float().mean().item(), "in_shortlist": hit.any(dim=1).float().mean().item()}
    return metrics, preds


def itm_compositional(
    scorer: PairScorer, context: Tensor, positives: Sequence[str], negatives: Sequence[Mapping[str, str]]
) -> dict[str, float]:
    """:func:`~mumo.eval.compositional.compositional_probe` scored by ITM: image i with its true caption
    against image i with each of its negative captions (type -> caption)."""
    n = context.shape[0]
    if len(positives) != n or len(negatives) != n:
        raise DataError(
            f"expected {n} positives and {n} negative mappings, got {len(positives)}, {len(negatives)}"
        )
    texts, image_rows, types = list(positives), list(range(n)), ["positive"] * n
    for i, by_type in enumerate(negatives):
        for t, text in by_type.items():
            texts.append(text)
            image_rows.append(i)
            types.append(t)
    rows = torch.tensor(image_rows)
    scores = scorer.score_pairs(context, texts, rows, torch.arange(len(texts)))
    kinds = sorted(set(types) - {"positive"})
    by = {t: [j for j, u in enumerate(types) if u == t] for t in kinds}
    return compositional_probe_scores(
        scores[:n], {t: scores[by[t]] for t in kinds}, {t: rows[by[t]] for t in kinds}
    )
