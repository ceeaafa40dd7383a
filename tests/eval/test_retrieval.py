import math

import pytest
import torch
import torch.nn.functional as F

from mumo.errors import DataError
from mumo.eval import match_ranks, retrieval_metrics

# Similarities (rows images, columns texts) of the embeddings below, worked out by hand:
#          t0    t1    t2
#   i0    0.8   1.0   0.0    -> true t0 beaten by t1           : rank 1
#   i1    0.6   0.0   1.0    -> true t1 beaten by t0 and t2    : rank 2
#   i2    0.96  0.6   0.8    -> true t2 beaten by t0           : rank 1
# Read by columns (text -> image): t0 beaten by i2 (1), t1 by i0 and i2 (2), t2 by i1 (1).
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
TEXTS = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]])


def test_hand_computed_ranks_and_recalls():
    assert match_ranks(IMAGES, TEXTS).tolist() == [1, 2, 1]
    assert match_ranks(TEXTS, IMAGES).tolist() == [1, 2, 1]
    m = retrieval_metrics(IMAGES, TEXTS, ks=(1, 2, 5))
    for d in ("image_to_text", "text_to_image"):
        assert m[f"{d}_R@1"] == 0.0  # nothing at rank 0 ...
        assert m[f"{d}_R@2"] == pytest.approx(2 / 3)
        assert m[f"{d}_R@5"] == 1.0  # ... but everything in the top 5 (fewer than 5 candidates)
        assert m[f"{d}_mean_rank"] == pytest.approx(7 / 3)
        assert m[f"{d}_median_rank"] == 2.0


def test_directions_differ_when_the_geometry_does():
    texts = TEXTS.clone()
    texts[2] = torch.tensor([0.6, 0.8])  # t2 == i2: i2 now finds t2 first, and t2 finds i2 first
    m = retrieval_metrics(IMAGES, texts, ks=(1,))
    assert match_ranks(IMAGES, texts).tolist() == [1, 2, 0]
    # t0 -> images: i0 0.8, i1 0.6, i2 0.96 -> rank 1; t1: i0 1.0, i1 0, i2 0.6 -> rank 2
    assert match_ranks(texts, IMAGES).tolist() == [1, 2, 0]
    assert m["image_to_text_R@1"] == pytest.approx(1 / 3)


def test_ties_are_counted_against_the_match():
    same = F.normalize(torch.ones(4, 3), dim=-1)
    m = retrieval_metrics(same, same, ks=(1, 4))
    assert m["image_to_text_R@1"] == 0.0 and m["text_to_image_R@4"] == 1.0
    assert m["image_to_text_mean_rank"] == 4.0


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_chunked_ranks_equal_a_full_argsort(chunk_size):
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(150, 16, generator=g), dim=-1)
    texts = F.normalize(images + 0.8 * torch.randn(150, 16, generator=g), dim=-1)
    full = images @ texts.T  # (N, N); fine at this size
    order = full.argsort(dim=1, descending=True)
    expected = (order == torch.arange(150)[:, None]).int().argmax(dim=1)
    assert torch.equal(match_ranks(images, texts, chunk_size=chunk_size), expected)
    ref = retrieval_metrics(images, texts, chunk_size=10_000)
    assert retrieval_metrics(images, texts, chunk_size=chunk_size) == ref
    assert 0 < ref["image_to_text_R@1"] < ref["image_to_text_R@5"] < ref["image_to_text_R@10"] < 1
    assert not math.isnan(ref["text_to_image_mean_rank"])


def test_shape_errors():
    with pytest.raises(DataError, match="both"):
        retrieval_metrics(IMAGES, TEXTS[:2])
    with pytest.raises(DataError, match="k must be"):
        retrieval_metrics(IMAGES, TEXTS, ks=(0,))
