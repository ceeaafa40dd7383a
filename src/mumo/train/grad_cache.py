"""Exact gradient caching for contrastive losses (GradCache, Gao et al., 2021): the gradient of a loss over
a batch far larger than memory allows, at the memory of one chunk.

    1. embed the batch chunk by chunk without a graph                      -> (B, E) image, (B, E) text
    2. loss over the whole batch on those embeddings (leaves), backward     -> d loss / d embeddings
       (parameters the loss reads directly, such as the temperature, get their gradient here)
    3. per chunk: embed again with a graph, backward with the cached gradient of its rows

Step 3's gradients sum to the full-batch gradient exactly (up to float rounding), because the loss reaches
the towers only through the embeddings. That needs each sample's embedding to depend on that sample alone:
towers with batch norm in training mode see each chunk's statistics, not the batch's, and so differ from a
one-pass batch (their running statistics are updated once per chunk, as by chunked training). Dropout draws
the same masks in steps 1 and 3 (the random state is replayed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

Embed = Callable[[int, int], tuple[Tensor, Tensor]]  # rows [start, end) -> (image, text) embeddings


@contextmanager
def _buffers_restored(model: nn.Module) -> Iterator[None]:
    """Undo what a forward pass does to buffers (batch-norm running statistics): step 1 must not count."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _rng_state() -> tuple[Tensor, list[Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, list[Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def grad_cache_backward(
    model: nn.Module,
    embed: Embed,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch_size: int,
    chunk_size: int,
    scale: float = 1.0,
) -> Tensor:
    """Accumulate into ``model``'s ``.grad`` the gradient of ``scale * loss_fn(all image embeds, all text
    embeds)`` over ``batch_size`` rows, embedding at most ``chunk_size`` rows with a graph at a time.

    Args:
        model: whose buffers step 1 must leave untouched (batch-norm statistics).
        embed: ``(start, end) -> (image (n, E), text (n, E))`` for rows [start, end) of the batch.
        loss_fn: ``(image (B, E), text (B, E)) -> scalar``; may read parameters itself (the temperature).
        batch_size: B, the rows of the batch.
        chunk_size: rows per forward pass.
        scale: multiplies the gradient (1 / grad_accum, say); the returned loss is not scaled.

    Returns:
        The loss, detached.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    bounds = [(s, min(s + chunk_size, batch_size)) for s in range(0, batch_size, chunk_size)]
    states, images, texts = [], [], []
    with torch.no_grad(), _buffers_restored(model):
        for start, end in bounds:
            states.append(_rng_state())
            image, text = embed(start, end)
            images.append(image)
            texts.append(text)
    after = _rng_state()
    image_all = torch.cat(images).requires_grad_(True)
    text_all = torch.cat(texts).requires_grad_(True)
    loss = loss_fn(image_all, text_all)
    (loss * scale).backward()
    for (start, end), state in zip(bounds, states, strict=True):
        _set_rng_state(state)
        image, text = embed(start, end)
        torch.autograd.backward([image, text], [image_all.grad[start:end], text_all.grad[start:end]])
    _set_rng_state(after)  # draws after this step do not depend on the number of chunks
    return loss.detach()
