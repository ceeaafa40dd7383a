"""Both fusion models learn image-text matching on a task that needs the two modalities together."""

import pytest
import torch
import torch.nn.functional as F

import mumo


def matching_task(image_size, k=4, per_class=4, t=8):
    """Colour c of an image is word 10 + c of its caption. Returns the matched pairs, then the same images
    with the captions of the next colour, and ITM labels (1 = match). Neither modality alone predicts the
    label, so only image-text interaction can lower the loss."""
    g = torch.Generator().manual_seed(0)
    cls = torch.arange(k).repeat_interleave(per_class)  # (B,)
    palette = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])[:k]
    images = palette[cls][:, :, None, None] + 0.3 * torch.randn(
        len(cls), 3, image_size, image_size, generator=g
    )
    ids = lambda c: (10 + c)[:, None].expand(-1, t)
    input_ids = torch.cat([ids(cls), ids((cls + 1) % k)])
    labels = torch.cat([torch.ones(len(cls)), torch.zeros(len(cls))]).long()
    return torch.cat([images, images]), input_ids, torch.ones_like(input_ids), labels


@pytest.mark.learned
@pytest.mark.parametrize("name", ["fusion_vit_tiny", "single_stream_tiny"])
def test_itm_loss_falls_on_a_synthetic_matching_task(name):
    # The loss sits at ln 2 until the symmetry between the pairs breaks, after a number of steps that the
    # seed decides (the kernels' rounding shifts it a little): so train until the mean of the last 5 losses
    # is below half the first, within a budget far above what that takes. At 1e-3, over seeds 0-39, on the
    # default (AVX-512) and on AVX2 kernels: the fusion model 50-146 steps (seed 0: 146, the slowest), the
    # single stream 31-75 (seed 0: 36). At 3e-3 most seeds were faster, but the tail was long (1 of 40 not
    # in 600 steps) and a fixed 60 steps failed for 2 of seeds 0-3 of the fusion model.
    model = mumo.create_model(name, seed=0)
    images, ids, mask, labels = matching_task(32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(400):
        loss = F.cross_entropy(model(images, ids, mask), labels)  # forward returns the ITM logits
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if len(losses) >= 5 and sum(losses[-5:]) / 5 < 0.5 * losses[0]:
            break
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
