import math

import pytest
import torch

from mumo.errors import DataError
from mumo.losses import causal_lm_loss, mask_tokens, masked_lm_loss

PAD, EOT, BOS, MASK = 0, 1, 2, 3  # the trained tokenizer's order (see mumo.data.tokenizer)
SPECIAL = [PAD, EOT, BOS]  # mask_id is treated as special whether listed or not
V = 50


def make_batch(b: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``<bos> w... <eot> <pad>...`` of random lengths, words drawn from the non-special ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (b, t), generator=g)
    lengths = torch.randint(3, t + 1, (b,), generator=g)
    pos = torch.arange(t)
    ids[:, 0] = BOS
    ids[pos[None] == (lengths[:, None] - 1)] = EOT
    ids[pos[None] >= lengths[:, None]] = PAD
    return ids, (pos[None] < lengths[:, None]).long()


def test_mask_tokens_never_touches_padding_or_special_tokens():
    ids, mask = make_batch(64, 20)
    for seed in range(5):
        masked, labels = mask_tokens(
            ids, mask, MASK, V, SPECIAL, generator=torch.Generator().manual_seed(seed)
        )
        ineligible = (mask == 0) | (ids < 4)
        assert torch.equal(masked[ineligible], ids[ineligible])
        assert (labels[ineligible] == -100).all()
        chosen = labels != -100
        assert torch.equal(labels[chosen], ids[chosen])  # labels hold the original ids
        assert torch.equal(masked[~chosen], ids[~chosen])  # nothing else changes
        assert not ((masked == PAD) & (mask == 1)).any() and not (masked[chosen] < 3).any()


def test_mask_tokens_rates_and_80_10_10_split():
    ids, mask = make_batch(512, 64, seed=1)
    g = torch.Generator().manual_seed(0)
    masked, labels = mask_tokens(ids, mask, MASK, V, SPECIAL, probability=0.15, generator=g)
    eligible = (mask == 1) & (ids >= 4)
    chosen = labels != -100
    assert abs(chosen.sum().item() / eligible.sum().item() - 0.15) < 0.02
    n = chosen.sum().item()
    to_mask = (masked == MASK) & chosen
    changed = (masked != ids) & chosen & ~to_mask
    unchanged = (masked == ids) & chosen
    assert abs(to_mask.sum().item() / n - 0.8) < 0.03
    # a random replacement hits its own id 1 / 46 of the time, counted as "unchanged": within tolerance
    assert abs(changed.sum().item() / n - 0.1) < 0.03
    assert abs(unchanged.sum().item() / n - 0.1) < 0.03
    assert (masked[changed] >= 4).all()  # random ids come from the non-special ids


def test_mask_tokens_chooses_at_least_one_per_row():
    ids = torch.tensor([[BOS, 10, EOT, PAD, PAD], [BOS, 11, 12, EOT, PAD], [BOS, EOT, PAD, PAD, PAD]])
    mask = (ids != PAD).long()
    for seed in range(50):
        _, labels = mask_tokens(
            ids, mask, MASK, V, SPECIAL, probability=0.01, generator=torch.Generator().manual_seed(seed)
        )
        chosen = labels != -100
        assert chosen[0].sum() >= 1 and chosen[1].sum() >= 1
        assert chosen[2].sum() == 0  # no eligible token, nothing to choose
    # the forced choice is uniform over the eligible tokens of the row
    hits = torch.zeros(5)
    for seed in range(400):
        _, labels = mask_tokens(
            ids, mask, MASK, V, SPECIAL, probability=1e-6, generator=torch.Generator().manual_seed(seed)
        )
        hits += (labels[1] != -100).float()
    assert hits[[0, 3, 4]].sum() == 0 and abs(hits[1].item() / 400 - 0.5) < 0.1


def test_mask_tokens_is_deterministic_given_the_generator():
    ids, mask = make_batch(16, 12)
    a = mask_tokens(ids, mask, MASK, V, SPECIAL, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(ids, mask, MASK, V, SPECIAL, generator=torch.Generator().manual_seed(3))
    c = mask_tokens(ids, mask, MASK, V, SPECIAL, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mask_tokens_rejects_bad_arguments():
    ids, mask = make_batch(2, 6)
    with pytest.raises(DataError, match="probability"):
        mask_tokens(ids, mask, MASK, V, SPECIAL, probability=0.0)
    with pytest.raises(DataError, match="mask_id"):
        mask_tokens(ids, mask, V, V, SPECIAL)
    with pytest.raises(DataError, match="special"):
        mask_tokens(ids, mask, MASK, 4, SPECIAL)
    with pytest.raises(DataError):
        mask_tokens(ids, mask[:, :3], MASK, V, SPECIAL)


def lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


def test_masked_lm_loss_equals_hand_computed_value():
    logits = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]])  # (1, 3, 3)
    labels = torch.tensor([[-100, 1, 2]])
    expected = ((lse(0, 2, 0) - 2) + (lse(0, 0, 0) - 0)) / 2  # position 0 ignored
    assert masked_lm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_masked_lm_loss_with_nothing_chosen_is_zero_not_nan():
    logits = torch.randn(2, 3, 3, requires_grad=True)
    loss = masked_lm_loss(logits, torch.full((2, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_causal_lm_loss_equals_hand_computed_value_and_excludes_padding():
    logits = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, -5.0]],
            [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]],
        ]
    )  # (2, 4, 3)
    ids = torch.tensor([[0, 1, 2, 0], [2, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    # row 0: positions 0 -> 1 and 1 -> 2 (position 2 would predict padding); row 1: position 0 -> 0.
    expected = ((lse(2, 0, 0) - 0) + (lse(0, 1, 0) - 0) + (lse(0, 0, 1) - 0)) / 3
    assert causal_lm_loss(logits, ids, mask).item() == pytest.approx(expected, rel=1e-6)
    # whatever sits at padded positions, in ids or logits, changes nothing
    ids2, logits2 = ids.clone(), logits.clone()
    ids2[mask == 0] = 1
    logits2[:, 3] = 100.0
    logits2[1, 2] = -100.0
    assert causal_lm_loss(logits2, ids2, mask).item() == pytest.approx(expected, rel=1e-6)


def test_causal_lm_loss_handles_left_padding():
    logits = torch.tensor([[[7.0, -7.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]])
    ids = torch.tensor([[0, 2, 1]])
    mask = torch.tensor([[0, 1, 1]])  # the pad at position 0 must not predict the first real token
    expected = lse(0, 2, 0) - 2
    assert causal_lm_loss(logits, ids, mask).item() == pytest.approx(expected, rel=1e-6)


def test_lm_losses_reject_bad_shapes():
    with pytest.raises(DataError):
        masked_lm_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(DataError):
        causal_lm_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2))


def test_causal_lm_loss_target_mask_scores_only_the_answer():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    ids = torch.randint(0, 11, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    target = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]])  # predict tokens 3-4 and 4-5
    got = causal_lm_loss(logits, ids, mask, target)
    logp = logits.log_softmax(-1)
    picked = [logp[0, 2, ids[0, 3]], logp[0, 3, ids[0, 4]], logp[1, 3, ids[1, 4]], logp[1, 4, ids[1, 5]]]
    assert got.item() == pytest.approx(-torch.stack(picked).mean().item(), rel=1e-6)
