import math

import pytest
import torch

from mumo.errors import DataError
from mumo.losses import itm_loss, itm_pair_indices, mine_hard_negatives, random_negatives


@pytest.mark.parametrize("b", [2, 3, 8, 64])
def test_hard_negative_is_never_the_positive(b):
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        sim = torch.randn(b, b, generator=g)
        neg_t, neg_i = mine_hard_negatives(sim, generator=g)
        assert neg_t.shape == neg_i.shape == (b,) and neg_t.dtype == torch.long
        assert (neg_t != torch.arange(b)).all() and (neg_i != torch.arange(b)).all()
        assert neg_t.min() >= 0 and neg_t.max() < b


@pytest.mark.parametrize("temperature", [1.0, 0.01])
def test_hard_negative_excludes_a_dominant_diagonal(temperature):
    b = 64
    sim = torch.randn(b, b, generator=torch.Generator().manual_seed(0)) * 0.1
    sim += torch.eye(b) * 1e4  # the positive is by far the most similar; it must still never be picked
    for seed in range(50):
        neg_t, neg_i = mine_hard_negatives(sim, torch.Generator().manual_seed(seed), temperature)
        assert (neg_t != torch.arange(b)).all() and (neg_i != torch.arange(b)).all()


@pytest.fixture
def one_thread():
    # 200 calls on small tensors: on a busy machine, handing each op to a second thread costs ~20x.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sampling_frequencies_follow_the_off_diagonal_softmax(one_thread):
    sim = torch.tensor([[5.0, 1.0, 0.0], [0.5, 5.0, -1.0], [2.0, 0.3, 5.0]])
    # 100 independent copies of the 3x3 problem in one call: a block-diagonal matrix whose off-block
    # entries are so low (finite, e^-1e4 == 0 in float32) that they are never drawn. 200 calls: 20,000 draws.
    blocks, calls = 100, 200
    big = torch.full((3 * blocks, 3 * blocks), -1e4)
    for k in range(blocks):
        big[3 * k : 3 * k + 3, 3 * k : 3 * k + 3] = sim
    g = torch.Generator().manual_seed(1234)
    draws = blocks * calls
    counts_t, counts_i = torch.zeros(3, 3), torch.zeros(3, 3)
    rows = torch.arange(3 * blocks)
    for _ in range(calls):
        neg_t, neg_i = mine_hard_negatives(big, generator=g)
        assert (neg_t // 3 == rows // 3).all() and (neg_i // 3 == rows // 3).all()
        counts_t.index_put_((rows % 3, neg_t % 3), torch.ones(3 * blocks), accumulate=True)
        counts_i.index_put_((rows % 3, neg_i % 3), torch.ones(3 * blocks), accumulate=True)

    def expected(m):
        return m.masked_fill(torch.eye(3, dtype=torch.bool), float("-inf")).softmax(dim=1)

    assert (counts_t.diagonal() == 0).all() and (counts_i.diagonal() == 0).all()
    assert (counts_t / draws - expected(sim)).abs().max() < 0.02
    assert (counts_i / draws - expected(sim.T)).abs().max() < 0.02  # texts pick images from columns
    # hand check of one entry: image 0 picks text 1 with e^1 / (e^1 + e^0)
    assert expected(sim)[0, 1].item() == pytest.approx(math.e / (math.e + 1))


def test_temperature_sharpens_toward_the_hardest_negative():
    sim = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    neg_t, _ = mine_hard_negatives(sim, torch.Generator().manual_seed(0), temperature=1e-3)
    assert neg_t.tolist() == [1, 0, 0]


def test_mining_is_deterministic_and_has_no_gradient():
    sim = torch.randn(16, 16, requires_grad=True)
    a = mine_hard_negatives(sim * 2, torch.Generator().manual_seed(7))
    b = mine_hard_negatives(sim * 2, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not a[0].requires_grad and not a[1].requires_grad


def test_mining_rejects_bad_input():
    with pytest.raises(DataError, match="at least 2"):
        mine_hard_negatives(torch.zeros(1, 1))
    with pytest.raises(DataError, match="square"):
        mine_hard_negatives(torch.zeros(2, 3))
    with pytest.raises(DataError, match="temperature"):
        mine_hard_negatives(torch.zeros(2, 2), temperature=0.0)
    with pytest.raises(DataError, match="NaN"):
        mine_hard_negatives(torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))


def test_itm_loss_two_way_head_equals_hand_computed_value():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [0.5, 0.5]])
    labels = torch.tensor([1, 0, 1])
    # -log softmax(row)[label]: log(1 + e^-2), log(1 + e^-2), log 2
    expected = (2 * math.log(1 + math.exp(-2)) + math.log(2)) / 3
    assert itm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_itm_loss_single_score_equals_hand_computed_value():
    logits = torch.tensor([2.0, -1.0, 0.0])
    labels = torch.tensor([1, 0, 0])
    # label 1: -log sigmoid(x) = log(1 + e^-x); label 0: log(1 + e^x)
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(2)) / 3
    assert itm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert itm_loss(logits[:, None], labels).item() == pytest.approx(expected, rel=1e-6)


def test_itm_loss_rejects_bad_shapes():
    with pytest.raises(DataError):
        itm_loss(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(DataError):
        itm_loss(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_itm_pair_indices_layout_and_labels():
    neg_t, neg_i = torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1])
    image_rows, text_rows, labels = itm_pair_indices(neg_t, neg_i)
    assert labels.tolist() == [1] * 3 + [0] * 6
    assert image_rows.tolist() == [0, 1, 2, 0, 1, 2, 2, 0, 1]
    assert text_rows.tolist() == [0, 1, 2, 1, 2, 0, 0, 1, 2]


def test_random_negatives_never_pick_the_positive():
    g = torch.Generator().manual_seed(0)
    for b in (2, 3, 17):
        for _ in range(20):
            neg_t, neg_i = random_negatives(b, g)
            rows = torch.arange(b)
            assert (neg_t != rows).all() and (neg_i != rows).all()
            assert ((0 <= neg_t) & (neg_t < b)).all() and ((0 <= neg_i) & (neg_i < b)).all()
    with pytest.raises(DataError, match="at least 2"):
        random_negatives(1)


def test_itm_pair_indices_rejects_mismatched_shapes():
    with pytest.raises(DataError):
        itm_pair_indices(torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long))
