"""Image-text matching (ITM): hard-negative mining, the 3B-pair batch, and the match / no-match loss.

Notation: B batch of matched (image, text) pairs, N scored pairs (3B for :func:`itm_pair_indices`).

As in ALBEF (Li et al., 2021) and BLIP (Li et al., 2022): the contrastive similarities pick, for every
image, a text that is hard to tell apart from its own caption (and for every text such an image); a
fusion model then scores B positive and 2B negative pairs, and label 1 means "match".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mumo.errors import DataError


def _sample_off_diagonal(sim: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """One column per row of (B, B) ``sim``, drawn from softmax(sim[i] / temperature) over j != i."""
    # float32: in bf16 the softmax of a batch of near-equal similarities collapses to a few values.
    logits = sim.float() / temperature
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    # -inf gives the positive probability exactly 0, and multinomial never draws a zero-probability
    # column. ALBEF instead adds 1e-5 and zeroes the diagonal afterwards; same effect, one step.
    probs = logits.masked_fill(eye, float("-inf")).softmax(dim=1)  # (B, B), rows sum to 1
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)


@torch.no_grad()
def mine_hard_negatives(
    sim: Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Sample one hard negative text per image and one hard negative image per text.

    Image i's negative text j != i is drawn with probability softmax(sim[i] / temperature) over j != i,
    text j's negative image likewise from column j (``sim.T``): the more similar, the more likely, but
    never the positive itself. No gradient flows through the sampling. If two texts in the batch are
    identical (or two images), the duplicate of the positive may still be drawn: it is another index,
    and telling duplicates apart is the data's job (deduplicate captions upstream if it matters).

    Args:
        sim: (B, B) image-text similarities, row i image i, column j text j, positives on the diagonal
            (e.g. the contrastive logits). Must be finite and B >= 2.
        generator: RNG for the draws, on ``sim``'s device; None uses the global RNG.
        temperature: > 0; below 1 sharpens the distribution toward the hardest negatives.

    Returns:
        (neg_text_for_image, neg_image_for_text), each (B,) long indices into the batch.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise DataError(f"sim must be a square (B, B) similarity matrix, got shape {tuple(sim.shape)}")
    if sim.shape[0] < 2:
        raise DataError(
            f"hard-negative mining needs at least 2 pairs per batch (got B={sim.shape[0]}): with one pair "
            "there is no negative to pick; use a batch size of 2 or more"
        )
    if temperature <= 0:
        raise DataError(f"temperature must be > 0, got {temperature}")
    sim = sim.detach()
    if not torch.isfinite(sim).all():
        raise DataError("sim holds NaN or infinite values; check the embeddings and the logit scale")
    neg_text_for_image = _sample_off_diagonal(sim, temperature, generator)
    neg_image_for_text = _sample_off_diagonal(sim.T, temperature, generator)
    return neg_text_for_image, neg_image_for_text


def random_negatives(
    b: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Uniform in-batch negatives for models without a similarity to mine with (ViLT, early fusion).

    Row i gets index (i + r_i) mod B with r_i uniform in [1, B), so never i itself; returned twice over
    (a text per image, an image per text), as :func:`mine_hard_negatives` does.
    """
    if b < 2:
        raise DataError(f"in-batch negatives need at least 2 pairs per batch, got B={b}")
    rows = torch.arange(b, device=device)
    shifts = torch.randint(1, b, (2, b), generator=generator, device=device)
    return (rows + shifts[0]) % b, (rows + shifts[1]) % b


def itm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Match / no-match loss, mean over pairs; label 1 means "match", 0 "no match".

    Args:
        logits: (N, 2) scores of a two-way head, column 1 for "match" (ALBEF / BLIP): cross-entropy.
            Or (N,) (also (N, 1)) single match logits: binary cross-entropy with logits.
        labels: (N,) 0 / 1.

    Returns:
        A scalar.
    """
    if labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise DataError(
            f"labels must be (N,) with N = logits.shape[0]; got logits {tuple(logits.shape)}, "
            f"labels {tuple(labels.shape)}"
        )
    if logits.dim() == 2 and logits.shape[1] == 2:
        return F.cross_entropy(logits, labels.long())
    if logits.dim() == 1 or (logits.dim() == 2 and logits.shape[1] == 1):
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), labels.to(logits.dtype))
    raise DataError(f"logits must be (N, 2) or (N,) / (N, 1), got shape {tuple(logits.shape)}")


def itm_pair_indices(neg_text_for_image: Tensor, neg_image_for_text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Lay out the 3B pairs a fusion model scores for ITM, as indices into the batch.

    Rows [0, B): (image i, text i), label 1. Rows [B, 2B): (image i, text ``neg_text_for_image[i]``),
    label 0. Rows [2B, 3B): (image ``neg_image_for_text[j]``, text j), label 0. Gathering by index lets a
    caller encode each text and image once and pair the encodings.

    Args:
        neg_text_for_image, neg_image_for_text: (B,) indices, as returned by :func:`mine_hard_negatives`
            or :func:`random_negatives`.

    Returns:
        (image_rows (3B,), text_rows (3B,), labels (3B,)), all long; labels = [1] * B + [0] * 2B.
    """
    b = neg_text_for_image.shape[0]
    for name, idx in (("neg_text_for_image", neg_text_for_image), ("neg_image_for_text", neg_image_for_text)):
        if idx.shape != (b,):
            raise DataError(f"{name} must be ({b},), got shape {tuple(idx.shape)}")
    rows = torch.arange(b, device=neg_text_for_image.device)
    image_rows = torch.cat([rows, rows, neg_image_for_text])
    text_rows = torch.cat([rows, neg_text_for_image, rows])
    labels = torch.zeros(3 * b, dtype=torch.long, device=rows.device)
    labels[:b] = 1
    return image_rows, text_rows, labels
