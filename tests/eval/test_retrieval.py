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


# Several captions per image (the COCO / Flickr layout): text t describes image TEXT_TO_IMAGE[t].
# Images as above (i0 = (1, 0), i1 = (0, 1), i2 = (.6, .8)); similarities worked out by hand:
#          t0    t1    t2    t3    t4          owner of each text: i0, i0, i1, i2, i2
#   i0    0.8   1.0   0.0   0.6   1.0    -> best own caption t1 (1.0), tied by t4 (i2's) : rank 1
#   i1    0.6   0.0   1.0   0.8   0.0    -> own t2 (1.0) first                          : rank 0
#   i2    0.96  0.6   0.8   1.0   0.6    -> own t3 (1.0) first; its other caption t4
#                                           alone would rank 3, but any caption counts  : rank 0
# Text -> image (columns): t0 beaten by i2 (.96 > .8): 1; t1, t2, t3 first: 0; t4 beaten by i0: 1.
GROUP_TEXTS = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]])
TEXT_TO_IMAGE = torch.tensor([0, 0, 1, 2, 2])


def test_several_captions_per_image_hand_computed():
    m = retrieval_metrics(IMAGES, GROUP_TEXTS, ks=(1, 2), text_to_image=TEXT_TO_IMAGE)
    assert m["text_to_image_R@1"] == pytest.approx(3 / 5)
    assert m["text_to_image_R@2"] == 1.0
    assert m["text_to_image_mean_rank"] == pytest.approx(7 / 5)
    assert m["text_to_image_median_rank"] == 1.0
    assert m["image_to_text_R@1"] == pytest.approx(2 / 3)  # i0 loses its tie with i2's caption t4
    assert m["image_to_text_R@2"] == 1.0
    assert m["image_to_text_mean_rank"] == pytest.approx(4 / 3)
    ids = torch.arange(3)
    assert match_ranks(IMAGES, GROUP_TEXTS, query_ids=ids, candidate_ids=TEXT_TO_IMAGE).tolist() == [1, 0, 0]
    t2i = match_ranks(GROUP_TEXTS, IMAGES, query_ids=TEXT_TO_IMAGE, candidate_ids=ids)
    assert t2i.tolist() == [1, 0, 0, 0, 1]


def test_a_repeated_image_is_one_gallery_item():
    # i0 with captions (1, 0) and (.8, .6), i1 with (0, 1). Listed one row per caption, the gallery holds
    # i0 twice: scored 1:1, each of i0's captions ties with (or loses to) i0's other copy and misses.
    texts = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    rows = retrieval_metrics(IMAGES[[0, 0, 1]], texts, ks=(1,))
    assert rows["text_to_image_R@1"] == pytest.approx(1 / 3)
    assert rows["image_to_text_R@1"] == pytest.approx(2 / 3)
    grouped = retrieval_metrics(IMAGES[:2], texts, ks=(1,), text_to_image=torch.tensor([0, 0, 1]))
    assert grouped["text_to_image_R@1"] == 1.0 and grouped["image_to_text_R@1"] == 1.0


def test_one_to_one_mapping_changes_nothing():
    assert retrieval_metrics(IMAGES, TEXTS, text_to_image=torch.arange(3)) == retrieval_metrics(IMAGES, TEXTS)


def test_ties_with_several_captions_count_against_the_match():
    same = F.normalize(torch.ones(2, 3), dim=-1)  # two images, four captions, every score equal
    texts = F.normalize(torch.ones(4, 3), dim=-1)
    m = retrieval_metrics(same, texts, ks=(1, 3), text_to_image=torch.tensor([0, 0, 1, 1]))
    assert m["text_to_image_R@1"] == 0.0 and m["text_to_image_mean_rank"] == 2.0  # the other image ties
    assert m["image_to_text_R@1"] == 0.0 and m["image_to_text_mean_rank"] == 3.0  # two others tie
    assert m["image_to_text_R@3"] == 1.0


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_grouped_ranks_equal_a_brute_force_count(chunk_size):
    g = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(40, 8, generator=g), dim=-1)
    owner = torch.cat([torch.arange(40), torch.randint(0, 40, (60,), generator=g)])  # each image >= 1 text
    texts = F.normalize(images[owner] + 0.9 * torch.randn(100, 8, generator=g), dim=-1)
    scores = images @ texts.T  # (I, T)
    t2i = [int((scores[:, t] >= scores[owner[t], t]).sum()) - 1 for t in range(100)]
    i2t = []
    for i in range(40):
        best = scores[i, owner == i].max()
        i2t.append(int((scores[i, owner != i] >= best).sum()))
    ids = torch.arange(40)
    kw = {"chunk_size": chunk_size}
    assert match_ranks(texts, images, query_ids=owner, candidate_ids=ids, **kw).tolist() == t2i
    assert match_ranks(images, texts, query_ids=ids, candidate_ids=owner, **kw).tolist() == i2t
    m = retrieval_metrics(images, texts, ks=(1, 5), chunk_size=chunk_size, text_to_image=owner)
    assert m["text_to_image_R@5"] == pytest.approx(sum(r < 5 for r in t2i) / 100)
    assert m["image_to_text_R@1"] == pytest.approx(sum(r < 1 for r in i2t) / 40)
    assert 0 < m["image_to_text_R@1"] < 1 and 0 < m["text_to_image_R@1"] < 1


def test_text_to_image_errors():
    with pytest.raises(DataError, match=r"text_to_image must be \(5,\)"):
        retrieval_metrics(IMAGES, GROUP_TEXTS, text_to_image=torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match=r"in \[0, 3\)"):
        retrieval_metrics(IMAGES, GROUP_TEXTS, text_to_image=torch.tensor([0, 0, 1, 2, 3]))
    with pytest.raises(DataError, match="image 1 has no text"):
        retrieval_metrics(IMAGES, GROUP_TEXTS, text_to_image=torch.tensor([0, 0, 2, 2, 2]))
    with pytest.raises(DataError, match="width"):
        retrieval_metrics(IMAGES, torch.ones(5, 3), text_to_image=TEXT_TO_IMAGE)
    with pytest.raises(DataError, match="both"):
        retrieval_metrics(IMAGES, GROUP_TEXTS)  # 3 images and 5 texts need the mapping
