import math

import pytest
import torch
import torch.nn.functional as F

from mumo.losses import ClipLoss, SigLipLoss, clip_loss, info_nce, row_cross_entropy, siglip_loss


def lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TXT = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def test_clip_loss_equals_hand_computed_value():
    # logits_per_image = IMG @ TXT.T = [[1, 0.6], [0, 0.8]]
    i2t = (lse(1, 0.6) - 1) + (lse(0, 0.8) - 0.8)
    t2i = (lse(1, 0) - 1) + (lse(0.6, 0.8) - 0.8)
    expected = (i2t + t2i) / 4
    assert clip_loss(IMG, TXT, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # the scale multiplies every logit
    i2t = (lse(2, 1.2) - 2) + (lse(0, 1.6) - 1.6)
    t2i = (lse(2, 0) - 2) + (lse(1.2, 1.6) - 1.6)
    assert clip_loss(IMG, TXT, 2.0).item() == pytest.approx((i2t + t2i) / 4, rel=1e-6)


def test_clip_loss_is_symmetric_in_its_two_modalities():
    a, b = F.normalize(torch.randn(7, 5), dim=-1), F.normalize(torch.randn(7, 5), dim=-1)
    torch.testing.assert_close(clip_loss(a, b, 3.0), clip_loss(b, a, 3.0))


def test_clip_loss_chance_level_and_perfect_alignment():
    same = torch.zeros(4, 3)
    assert clip_loss(
        F.normalize(same + 1, dim=-1), F.normalize(same + 1, dim=-1), 10.0
    ).item() == pytest.approx(math.log(4))
    eye = torch.eye(4)
    assert clip_loss(eye, eye, 100.0).item() < 1e-20


def test_gradient_flows_to_temperature():
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    a, b = F.normalize(torch.randn(6, 4), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    clip_loss(a, b, log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad.abs().item() > 0
    t = torch.tensor(0.07, requires_grad=True)
    info_nce(a, b, temperature=t).backward()
    assert t.grad.abs().item() > 0


@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_chunked_loss_equals_full_in_value_and_gradient(chunk):
    a = F.normalize(torch.randn(8, 6), dim=-1).requires_grad_()
    b = F.normalize(torch.randn(8, 6), dim=-1).requires_grad_()
    s = torch.tensor(5.0, requires_grad=True)
    full = clip_loss(a, b, s)
    grads = torch.autograd.grad(full, (a, b, s))
    part = ClipLoss(chunk_size=chunk)(a, b, s)
    grads_part = torch.autograd.grad(part, (a, b, s))
    torch.testing.assert_close(part, full)
    for g, gp in zip(grads, grads_part, strict=True):
        torch.testing.assert_close(gp, g)


def test_row_cross_entropy_sums_rows():
    rows, cols = torch.randn(5, 3), torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 3, 0])
    ref = F.cross_entropy(2.0 * rows @ cols.T, labels, reduction="sum")
    torch.testing.assert_close(row_cross_entropy(rows, cols, 2.0, labels, chunk_size=2), ref)


def test_info_nce_hand_computed_with_negatives():
    anchor = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[0.8, 0.6]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    # logits / T with T = 0.5: positive 1.6, negatives 0 and -2
    expected = lse(1.6, 0.0, -2.0) - 1.6
    assert info_nce(anchor, positive, negatives, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)
    per_anchor = negatives[None]  # (1, 2, 2): the same negatives given per anchor
    assert info_nce(anchor, positive, per_anchor, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)
    only_pos = info_nce(anchor, positive, negatives, temperature=0.5, in_batch_negatives=False)
    assert only_pos.item() == pytest.approx(expected, rel=1e-6)  # one anchor: nothing else in the batch


def test_info_nce_in_batch_equals_one_direction_of_clip():
    a, b = F.normalize(torch.randn(5, 4), dim=-1), F.normalize(torch.randn(5, 4), dim=-1)
    one_way = info_nce(a, b, temperature=0.25)
    ref = F.cross_entropy(4.0 * a @ b.T, torch.arange(5))
    torch.testing.assert_close(one_way, ref)
    assert info_nce(a, b, reduction="none").shape == (5,)
    with pytest.raises(ValueError, match="negatives must be"):
        info_nce(a, b, torch.randn(5))


def test_siglip_loss_equals_hand_computed_value():
    s, bias = 2.0, -1.0
    logits = [[2 * 1 - 1, 2 * 0.6 - 1], [2 * 0 - 1, 2 * 0.8 - 1]]
    logsig = lambda x: -math.log1p(math.exp(-x))
    total = 0.0
    for i in range(2):
        for j in range(2):
            z = 1 if i == j else -1
            total -= logsig(z * logits[i][j])
    assert siglip_loss(IMG, TXT, s, bias).item() == pytest.approx(total / 2, rel=1e-6)


def test_siglip_chunked_equals_full():
    a = F.normalize(torch.randn(9, 4), dim=-1).requires_grad_()
    b = F.normalize(torch.randn(9, 4), dim=-1).requires_grad_()
    full = siglip_loss(a, b, 10.0, -10.0)
    ga = torch.autograd.grad(full, a)[0]
    part = SigLipLoss(chunk_size=4)(a, b, 10.0, -10.0)
    torch.testing.assert_close(part, full)
    torch.testing.assert_close(torch.autograd.grad(part, a)[0], ga)


def test_many_processes_need_a_process_group():
    with pytest.raises(RuntimeError, match="torchrun"):
        ClipLoss(world_size=2)(IMG, TXT, 1.0)


def test_chunked_loss_never_keeps_the_full_logits_for_backward():
    n, chunk = 32, 4
    a = F.normalize(torch.randn(n, 8), dim=-1).requires_grad_()
    b = F.normalize(torch.randn(n, 8), dim=-1).requires_grad_()
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ClipLoss(chunk_size=chunk)(a, b, 10.0).backward()
    # what is kept: the (N, E) embeddings and (chunk, N) blocks while one is rebuilt, never (N, N) logits
    assert max(saved) <= max(chunk * n, n * 8) < n * n
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ClipLoss()(a, b, 10.0).backward()
    assert max(saved) == n * n  # without chunking the full logits are kept, as expected


def test_text_negatives_join_the_image_to_text_denominator_only():
    # one image, its caption, and a hard negative caption: by hand
    img, txt, neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]]), torch.tensor([[0.8, 0.6]])
    i2t = lse(0.6, 0.8) - 0.6  # the negative scores 0.8 against the image
    t2i = 0.0  # one image: log softmax of a single logit
    loss = ClipLoss()(img, txt, 1.0, text_negatives=neg)
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    a, b = F.normalize(torch.randn(6, 4), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    assert ClipLoss()(a, b, 5.0, text_negatives=b[:0]).item() == pytest.approx(clip_loss(a, b, 5.0).item())
