"""Evaluation by the matching head: exhaustive and re-ranked retrieval, zero-shot, compositional probe."""

import pytest
import torch
from torch import nn

import mumo
from mumo.data.shapes import ShapesConfig
from mumo.data.tokenizer import Tokenizer
from mumo.errors import DataError
from mumo.eval.matching import (
    PairScorer,
    itm_compositional,
    itm_retrieval,
    itm_zero_shot,
    reranked_ranks,
)
from mumo.eval.shapes_suite import evaluate_shapes

WORDS = list("abcdefgh")


class Oracle(nn.Module):
    """Scores a pair high when the image's context value is the id of the text's first real token."""

    def __init__(self, sign: float = 1.0) -> None:
        super().__init__()
        self.sign = sign
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the scorer a device

    def itm_logits(self, context, ids, mask):
        match = (context[:, 0] == ids[:, 1].float()).float()
        return torch.stack([torch.zeros_like(match), self.sign * match], dim=1)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(WORDS * 20, vocab_size=270)


def _context(tokenizer, words):
    return tokenizer.encode(words).input_ids[:, 1:2].float()  # (N, 1): image i "shows" word i


def test_exhaustive_itm_retrieval_ranks_the_oracle_first_and_its_opposite_last(tokenizer):
    context = _context(tokenizer, WORDS)
    good = itm_retrieval(PairScorer(Oracle(), tokenizer), context, WORDS)
    assert good["image_to_text_R@1"] == good["text_to_image_R@1"] == 1.0
    bad = itm_retrieval(PairScorer(Oracle(-1.0), tokenizer), context, WORDS)
    assert bad["text_to_image_R@1"] == 0.0 and bad["text_to_image_mean_rank"] == len(WORDS)


def test_reranked_ranks_by_hand():
    first = torch.tensor([[0.9, 0.8, 0.1], [0.9, 0.1, 0.8], [0.9, 0.8, 0.1]])
    shortlist = first.topk(2, dim=1).indices  # [[0,1],[0,2],[0,1]]
    rescored = torch.tensor([[0.0, 1.0], [2.0, 1.0], [5.0, 5.0]])
    # query 0: match 0 in list, rescored below candidate 1 -> rank 1; query 1: match 1 not in the
    # shortlist, first-stage rank 2 -> 2; query 2: match 2 not in list, first-stage rank 2 -> 2
    assert reranked_ranks(first, rescored, shortlist).tolist() == [1, 2, 2]
    rescored = torch.tensor([[3.0, 1.0], [2.0, 1.0], [5.0, 5.0]])
    assert reranked_ranks(first, rescored, shortlist).tolist()[0] == 0
    # a tie with another shortlisted candidate counts against the match
    tie = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    assert reranked_ranks(first, tie, shortlist).tolist()[0] == 1


def test_reranking_fixes_the_shortlist_order_but_not_a_missed_match(tokenizer):
    n = len(WORDS)
    context = _context(tokenizer, WORDS)
    # ITC puts each image's match second (behind its neighbour), and misses image 0's match entirely
    image_embeds = torch.eye(n)
    text_embeds = 0.5 * torch.eye(n) + torch.roll(torch.eye(n), 1, dims=0)
    text_embeds[0] = 0.1 * torch.eye(n)[3] - torch.eye(n)[0]
    out = itm_retrieval(PairScorer(Oracle(), tokenizer), context, WORDS, image_embeds, text_embeds, k=2)
    assert out["image_to_text_R@1"] == pytest.approx((n - 1) / n)


def test_itm_zero_shot_with_and_without_a_shortlist(tokenizer):
    context = _context(tokenizer, WORDS)
    labels = torch.arange(len(WORDS))
    metrics, preds = itm_zero_shot(PairScorer(Oracle(), tokenizer), context, WORDS, labels)
    assert metrics["top1"] == 1.0 and preds.tolist() == labels.tolist()
    shortlist = torch.stack([labels, (labels + 1) % len(WORDS)], dim=1)
    shortlist[0] = torch.tensor([3, 4])  # image 0's class is not shortlisted
    metrics, _ = itm_zero_shot(PairScorer(Oracle(), tokenizer), context, WORDS, labels, shortlist)
    assert metrics["top1"] == pytest.approx(7 / 8) and metrics["in_shortlist"] == pytest.approx(7 / 8)


def test_itm_compositional_probe(tokenizer):
    context = _context(tokenizer, WORDS[:4])
    negatives = [{"swap": WORDS[(i + 1) % 4]} for i in range(4)]
    negatives[0]["other"] = "h"
    out = itm_compositional(PairScorer(Oracle(), tokenizer), context, WORDS[:4], negatives)
    assert out["swap"] == 1.0 and out["n_swap"] == 4 and out["other"] == 1.0 and out["n_overall"] == 5
    out = itm_compositional(PairScorer(Oracle(-1.0), tokenizer), context, WORDS[:4], negatives)
    assert out["overall"] == 0.0


def test_scorer_refuses_a_model_without_a_matching_head(tokenizer):
    with pytest.raises(DataError, match="no image-text matching head"):
        PairScorer(mumo.create_model("clip_vit_tiny"), tokenizer)


@pytest.mark.parametrize("name", ["fusion_vit_tiny", "single_stream_tiny"])
def test_shapes_suite_scores_fusion_models_by_itm(name):
    tok = Tokenizer.train(["a red circle above a blue square"] * 10, vocab_size=300)
    model = mumo.create_model(name, seed=0, **({"vocab_size": 300} if "single" in name else {}))
    tok.context_length = model.context_length
    calls = []
    shapes, note = ShapesConfig(image_size=32), lambda *a: calls.append(a)
    ev = evaluate_shapes(model, tok, shapes, "val", 12, retrieval_size=6, progress=note)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # zero-shot, held-out, retrieval, the probe
    m = ev.metrics
    assert m["scoring"] == "itm" and m["retrieval"]["n"] == 6
    assert 0.0 <= m["zero_shot"]["top1"] <= 1.0 and 0.0 <= m["held_out"]["top1"] <= 1.0
    assert {"swap_colours", "change_colour", "overall"} <= set(m["compositional"])
    assert ev.confusion.sum() == 12 and ev.similarity.shape == (12, 12)
    if "single" in name:
        with pytest.raises(DataError, match="no embeddings"):
            evaluate_shapes(model, tok, ShapesConfig(image_size=32), size=4, scoring="itc")
