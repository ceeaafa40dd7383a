"""Contrastive losses: InfoNCE, the symmetric CLIP loss, and the SigLIP sigmoid loss.

Notation: B local batch, N = B * world_size global batch, E embedding width.

Built for many processes: features are gathered across ranks (with or without gradient, as OpenCLIP
does), and with ``local_loss`` each rank scores only its own rows against every column, so the logits
are (B, N) instead of (N, N) per rank. With ``chunk_size`` the rows are processed in chunks that are
recomputed in the backward pass, so no more than (chunk_size, N) logits exist at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def gather_features(features: Tensor, rank: int, world_size: int, gather_with_grad: bool = False) -> Tensor:
    """All-gather (B, E) features from every rank into (N, E), ordered by rank.

    With ``gather_with_grad`` the gradient flows back to every rank's features, so once DDP averages the
    ranks' gradients they equal the single-process gradient on the global batch. Without it only the
    local slice keeps its gradient and the averaged gradient is 1 / world_size of that (OpenCLIP's
    default; Adam-style optimizers barely notice, SGD sees a smaller learning rate).

    Ranks may hold different numbers of rows (a batch that lost unreadable images): the rows are padded to
    the largest count for the collective and the padding is dropped after it.
    """
    return gather_rows(features, rank, world_size, gather_with_grad)[0]


def row_counts(rows: int, world_size: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's number of rows (one small all-gather); ``[rows]`` in one process."""
    if world_size == 1:
        return [rows]
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"world_size is {world_size} but torch.distributed is not initialised; launch with torchrun "
            "or set world_size=1"
        )
    counts = torch.tensor([rows], device=device)
    parts = [torch.zeros_like(counts) for _ in range(world_size)]
    dist.all_gather(parts, counts)
    return [int(p.item()) for p in parts]


def gather_rows(
    features: Tensor, rank: int, world_size: int, gather_with_grad: bool, counts: list[int] | None = None
) -> tuple[Tensor, int]:
    """(all ranks' rows (N, E) in rank order, the index of this rank's first row among them).

    ``counts`` (from :func:`row_counts`) saves asking again when several tensors share the same rows."""
    if world_size == 1:
        return features, 0
    counts = counts or row_counts(features.shape[0], world_size, features.device)
    top = max(counts)
    padded = features
    if features.shape[0] < top:  # collectives need equal shapes; the zeros are dropped below
        padded = torch.cat([features, features.new_zeros((top - features.shape[0], *features.shape[1:]))])
    if gather_with_grad:
        out = _AllGatherWithGrad.apply(padded, rank, world_size)
    else:
        parts = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(parts, padded.detach().contiguous())
        parts[rank] = padded
        out = torch.cat(parts, dim=0)
    if min(counts) < top:
        keep = torch.cat([torch.arange(r * top, r * top + n) for r, n in enumerate(counts)])
        out = out.index_select(0, keep.to(out.device))
    return out, sum(counts[:rank])


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather whose backward gives each rank the sum over ranks of the gradient w.r.t. its slice."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, rank: int, world_size: int) -> Tensor:
        ctx.rank, ctx.world_size = rank, world_size  # type: ignore[attr-defined]
        out = x.new_empty((world_size * x.shape[0], *x.shape[1:]))
        dist.all_gather_into_tensor(out, x.contiguous())
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        rank, world = ctx.rank, ctx.world_size  # type: ignore[attr-defined]
        b = grad.shape[0] // world
        if dist.get_backend() == "nccl":
            local = grad.new_empty((b, *grad.shape[1:]))
            dist.reduce_scatter_tensor(local, grad.contiguous())
            return local, None, None
        total = grad.contiguous().clone()  # gloo has no reduce-scatter: all-reduce, keep our slice
        dist.all_reduce(total)
        return total[rank * b : (rank + 1) * b], None, None


def _sum_in_chunks(
    block: Callable[..., Tensor], rows: Tensor, labels: Tensor, *shared: Tensor, chunk_size: int | None
) -> Tensor:
    """``block(rows, labels, *shared)`` summed over chunks of ``chunk_size`` rows, each chunk rebuilt in
    the backward pass (activation checkpointing) so that only one chunk's logits exist at a time."""
    if chunk_size is None or chunk_size >= rows.shape[0]:
        return block(rows, labels, *shared)
    total = rows.new_zeros(())
    for start in range(0, rows.shape[0], chunk_size):
        end = start + chunk_size
        total = total + checkpoint(block, rows[start:end], labels[start:end], *shared, use_reentrant=False)
    return total


def _ce_block(rows: Tensor, labels: Tensor, cols: Tensor, scale: Tensor) -> Tensor:
    return F.cross_entropy(scale * rows @ cols.T, labels, reduction="sum")


def row_cross_entropy(
    rows: Tensor, cols: Tensor, scale: Tensor | float, labels: Tensor, chunk_size: int | None = None
) -> Tensor:
    """Sum over rows of cross-entropy of ``scale * rows @ cols.T`` (M, N) against ``labels`` (M,).

    With ``chunk_size`` the (M, N) logits are built ``chunk_size`` rows at a time and rebuilt in the
    backward pass, so peak memory is (chunk_size, N).
    """
    scale = torch.as_tensor(scale, dtype=rows.dtype, device=rows.device)
    return _sum_in_chunks(_ce_block, rows, labels, cols, scale, chunk_size=chunk_size)


def info_nce(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor | None = None,
    temperature: Tensor | float = 0.07,
    in_batch_negatives: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """InfoNCE (van den Oord et al., 2018): -log softmax of each anchor's positive among candidates.

    Similarities are dot products divided by ``temperature``; pass unit vectors for cosine similarity.

    Args:
        anchor: (B, E).
        positive: (B, E); row i is anchor i's positive.
        negatives: extra negatives, shared by all anchors (M, E) or per anchor (B, K, E).
        temperature: scalar, float or tensor (learnable).
        in_batch_negatives: the other rows' positives count as negatives too.
        reduction: 'mean', 'sum' or 'none' (per anchor, (B,)).
    """
    if in_batch_negatives:
        logits = anchor @ positive.T  # (B, B), positives on the diagonal
        labels = torch.arange(anchor.shape[0], device=anchor.device)
    else:
        logits = (anchor * positive).sum(-1, keepdim=True)  # (B, 1)
        labels = torch.zeros(anchor.shape[0], dtype=torch.long, device=anchor.device)
    if negatives is not None:
        if negatives.dim() == 2:
            neg = anchor @ negatives.T  # (B, M)
        elif negatives.dim() == 3:
            neg = torch.einsum("be,bke->bk", anchor, negatives)  # (B, K)
        else:
            raise ValueError(f"negatives must be (M, E) or (B, K, E), got shape {tuple(negatives.shape)}")
        logits = torch.cat([logits, neg], dim=1)
    return F.cross_entropy(logits / temperature, labels, reduction=reduction)


def clip_loss(
    image_embeds: Tensor,
    text_embeds: Tensor,
    logit_scale: Tensor | float,
    chunk_size: int | None = None,
) -> Tensor:
    """Symmetric image-text InfoNCE on one process: mean of image->text and text->image cross-entropy.

    Args:
        image_embeds: (B, E), unit norm.
        text_embeds: (B, E), unit norm; row i describes image i.
        logit_scale: the inverse temperature (already exponentiated).
        chunk_size: rows per chunk; None builds the (B, B) logits at once.
    """
    return ClipLoss(chunk_size=chunk_size)(image_embeds, text_embeds, logit_scale)


def siglip_loss(
    image_embeds: Tensor,
    text_embeds: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float,
    chunk_size: int | None = None,
) -> Tensor:
    """SigLIP (Zhai et al., 2023): -sum_ij log sigmoid(z_ij * (s <x_i, y_j> + b)) / B, z = +1 on the
    diagonal and -1 elsewhere. Every pair is an independent binary problem, so no softmax over the batch.
    """
    return SigLipLoss(chunk_size=chunk_size)(image_embeds, text_embeds, logit_scale, logit_bias)


class ClipLoss(nn.Module):
    """Symmetric CLIP loss across ``world_size`` processes.

    Args:
        local_loss: each rank scores its B rows against all N columns ((B, N) logits); otherwise every
            rank builds the full (N, N) logits. The mean over ranks is the single-process loss either way.
        gather_with_grad: all-gather with gradient, so DDP-averaged gradients equal the single-process
            gradient (see :func:`gather_features`).
        rank, world_size: this process's place; world_size 1 needs no process group.
        chunk_size: rows per chunk (see :func:`row_cross_entropy`); None: no chunking.
    """

    def __init__(
        self,
        local_loss: bool = True,
        gather_with_grad: bool = True,
        rank: int = 0,
        world_size: int = 1,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.rank = rank
        self.world_size = world_size
        self.chunk_size = chunk_size

    def forward(
        self,
        image_embeds: Tensor,
        text_embeds: Tensor,
        logit_scale: Tensor | float,
        text_negatives: Tensor | None = None,
    ) -> Tensor:
        """Loss of (B, E) image and text embeddings that match row by row; a scalar.

        ``text_negatives`` (M, E): extra captions that match no image, such as attribute-swapped ones
        (NegCLIP, Yuksekgonul et al. 2023). They join every image's candidates in the image->text
        direction only, so the model must tell "a red circle left of a blue star" from its swap.
        """
        b, world = image_embeds.shape[0], self.world_size
        counts = row_counts(b, world, image_embeds.device)
        all_images, first = gather_rows(image_embeds, self.rank, world, self.gather_with_grad, counts)
        all_texts, _ = gather_rows(text_embeds, self.rank, world, self.gather_with_grad, counts)
        text_candidates = all_texts
        if text_negatives is not None:
            negatives = gather_features(text_negatives, self.rank, world, self.gather_with_grad)
            text_candidates = torch.cat([all_texts, negatives])  # labels still index the first N
        n = all_images.shape[0]
        if self.local_loss or world == 1:
            img_rows, txt_rows = image_embeds, text_embeds
            labels = torch.arange(b, device=image_embeds.device) + first
            # per rank N / world rows: once DDP averages the ranks, every row of the global batch weighs
            # 1 / N, even when ranks hold different numbers of rows
            rows = n / world
        else:
            img_rows, txt_rows = all_images, all_texts
            labels = torch.arange(n, device=image_embeds.device)
            rows = n
        loss_i = row_cross_entropy(img_rows, text_candidates, logit_scale, labels, self.chunk_size)
        loss_t = row_cross_entropy(txt_rows, all_images, logit_scale, labels, self.chunk_size)
        return (loss_i + loss_t) / (2 * rows)


def _sigmoid_block(rows: Tensor, positives: Tensor, cols: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """Sigmoid loss of (M, E) rows against (N, E) columns; row i's positive is column ``positives[i]``."""
    logits = scale * rows @ cols.T + bias  # (M, N)
    signs = torch.full_like(logits, -1.0)
    signs[torch.arange(rows.shape[0], device=rows.device), positives] = 1.0
    return -F.logsigmoid(signs * logits).sum()


class SigLipLoss(nn.Module):
    """SigLIP sigmoid loss across ``world_size`` processes: local images against all gathered texts.

    Args: as for :class:`ClipLoss` (the loss is always local: each rank scores its own images).
    """

    def __init__(
        self,
        gather_with_grad: bool = True,
        rank: int = 0,
        world_size: int = 1,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.gather_with_grad = gather_with_grad
        self.rank = rank
        self.world_size = world_size
        self.chunk_size = chunk_size

    def forward(
        self,
        image_embeds: Tensor,
        text_embeds: Tensor,
        logit_scale: Tensor | float,
        logit_bias: Tensor | float,
    ) -> Tensor:
        """Loss of (B, E) image and text embeddings that match row by row; a scalar."""
        b = image_embeds.shape[0]
        texts, first = gather_rows(text_embeds, self.rank, self.world_size, self.gather_with_grad)
        scale = torch.as_tensor(logit_scale, dtype=image_embeds.dtype, device=image_embeds.device)
        bias = torch.as_tensor(logit_bias, dtype=image_embeds.dtype, device=image_embeds.device)
        positives = torch.arange(b, device=image_embeds.device) + first
        total = _sum_in_chunks(
            _sigmoid_block, image_embeds, positives, texts, scale, bias, chunk_size=self.chunk_size
        )
        return total / (texts.shape[0] / self.world_size)  # per image, as ClipLoss weighs its rows
