"""ONNX export of a CLIP model's two encoders, checked against PyTorch with onnxruntime.

image_encoder.onnx: images (B, 3, H, W) float32              -> image_embeds (B, E) float32, unit norm
text_encoder.onnx:  input_ids (B, T) int64, attention_mask (B, T) int64 -> text_embeds (B, E), unit norm

B is dynamic in both graphs; T is dynamic in 1 … context_length. H = W = image_size is fixed (the ViT's
position table has one entry per patch of that grid).

Exporter: the TorchScript (tracing) exporter, ``torch.onnx.export(..., dynamo=False)``. The dynamo
exporter that torch >= 2.9 defaults to needs ``onnxscript``, an extra dependency, and ``torch.export`` of
the unwrapped text tower fails on its data-dependent ``bool(tensor)`` checks; the tracer, given the
branch-free wrapper below, exports every tower here exactly and handles ``dynamic_axes`` simply.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mumo._extras import require
from mumo.data.transforms import CLIP_MEAN, CLIP_STD
from mumo.errors import ExportError
from mumo.inference import eval_mode  # BatchNorm running statistics; each module's mode restored
from mumo.layers import padding_mask
from mumo.models.clip import CLIP
from mumo.models.text import pad_to_context

DEFAULT_OPSET = 17  # from 17 LayerNorm exports as one LayerNormalization op instead of ~10 primitives
# scaled_dot_product_attention exports from opset 14; the TorchScript exporter stops at 20.
_MIN_OPSET, _MAX_OPSET = 14, 20
ATOL = 1e-4  # largest |onnxruntime - PyTorch| accepted on unit-norm embeddings

_IMAGE_FILE = "image_encoder.onnx"
_TEXT_FILE = "text_encoder.onnx"
_CONFIG_FILE = "onnx_config.json"


def _normalize(x: Tensor) -> Tensor:
    """``F.normalize(x, dim=-1)`` by broadcasting: F.normalize's ``expand_as`` leaves the traced output
    width symbolic in the graph, while a broadcast keeps it at E. Same formula: x / max(||x||, 1e-12)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class _ImageEncoder(nn.Module):
    """Export-only view of ``CLIP.encode_image``: both image towers trace without data-dependent branches
    (the conv encoder's channels-last copy exports as an identity)."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, E) unit-norm embeddings."""
        return _normalize(self.model.encode_image(images, normalize=False))


class _TextEncoder(nn.Module):
    """Export-only ``CLIP.encode_text`` that always passes the padding mask to the Transformer.

    ``TextTransformer._prepare`` drops the mask when nothing is padded or, under a causal mask, when the
    padding is on the right; it decides with ``bool(tensor)``, which a tracer freezes to whatever the
    example batch happened to be. Always masking gives the same real-token outputs (padded keys are
    either already hidden by causality or must be hidden anyway), so one graph serves every batch.
    """

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.tower = model.text
        self.proj = model.text_proj

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) ids and (B, T) 0/1 mask -> (B, E) unit-norm embeddings."""
        tower, c = self.tower, self.tower.config
        b = input_ids.shape[0]
        if c.pool == "last":  # SigLIP: pad to the full length with pad_id, then attend to every token
            input_ids = pad_to_context(input_ids, attention_mask, c.context_length, c.pad_id)
            attention_mask = torch.ones_like(input_ids)
        full_mask = attention_mask
        x = tower.token_embed(input_ids)  # (B, T, C)
        if tower.cls_token is not None:
            x = torch.cat([tower.cls_token.expand(b, -1, -1), x], dim=1)  # (B, T + 1, C)
            full_mask = torch.cat([attention_mask.new_ones(b, 1), attention_mask], dim=1)
        positions = torch.arange(x.shape[1], device=x.device)
        if tower.pos_embed is not None:
            x = x + tower.pos_embed[:, : x.shape[1]]
        rope = tower.rope(positions)
        mask = padding_mask(full_mask)  # (B, 1, 1, T')
        if c.pool == "mean":
            x = tower.norm(tower.transformer(x, mask=mask, is_causal=c.causal, rope=rope))
            w = full_mask.to(x.dtype).unsqueeze(-1)
            pooled = (x * w).sum(1) / w.sum(1).clamp_min(1.0)
        else:
            if c.pool == "cls":
                select = torch.zeros_like(full_mask[:, 0])
            elif c.pool == "last":
                select = torch.full_like(full_mask[:, 0], c.context_length - 1)
            else:  # the last real token, as TextTransformer.forward finds it (any padding side)
                select = full_mask.shape[1] - 1 - full_mask.flip(1).to(torch.long).argmax(dim=1)
            x = tower.transformer(x, mask=mask, is_causal=c.causal, select=select, rope=rope)
            pooled = tower.norm(x)[:, 0]  # (B, C)
        return _normalize(self.proj(pooled))


def _example_text(batch: int, length: int, vocab_size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random right-padded texts (B, T) whose real lengths run from 1 to T (int64 ids and mask)."""
    ids = torch.randint(1, vocab_size, (batch, length), generator=gen)
    lengths = torch.linspace(1, length, batch).round().long() if batch > 1 else torch.tensor([length])
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, opset: int, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo; it still works and is chosen on
        # purpose (see the module docstring). Tracer warnings about Python ints from shapes are expected:
        # those values are image_size / context_length, fixed by the config.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, **kwargs)


def _max_diff(session: Any, feeds: dict[str, Tensor], expected: Tensor) -> float:
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    return float(np.abs(got - expected.numpy()).max())


def check_onnx(model: CLIP, paths: dict[str, Path], atol: float = ATOL, seed: int = 0) -> dict[str, float]:
    """Run the exported encoders in onnxruntime on random inputs and compare with PyTorch.

    Inputs: batches of 1 and 3 images; batches of 1 and 3 right-padded texts of varied real lengths, at
    the full context length and at a shorter one (the text length axis is dynamic).

    Args:
        model: the model that was exported.
        paths: what :func:`export_onnx` returned.
        atol: largest accepted max absolute difference.
        seed: seeds the random inputs.

    Returns:
        The max absolute difference per encoder, e.g. ``{"image": 2e-7, "text": 3e-7}``.

    Raises:
        MissingExtraError: onnxruntime is not installed (``pip install 'mumo[onnx]'``).
        ExportError: a difference exceeds ``atol``.
    """
    ort = require("onnxruntime", "onnx", "checking an ONNX export")
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # quiet: warnings about unused initializers are not actionable here
    image_sess = ort.InferenceSession(str(paths["image"]), opts, providers=["CPUExecutionProvider"])
    text_sess = ort.InferenceSession(str(paths["text"]), opts, providers=["CPUExecutionProvider"])
    diffs = {"image": 0.0, "text": 0.0}
    lengths = sorted({c.text.context_length, max(1, c.text.context_length // 2)})
    with eval_mode(model), torch.no_grad():
        for batch in (1, 3):
            images = torch.randn(
                batch, c.vision.in_chans, c.vision.image_size, c.vision.image_size, generator=gen
            )
            d = _max_diff(image_sess, {"images": images}, model.encode_image(images))
            diffs["image"] = max(diffs["image"], d)
            for length in lengths:
                ids, mask = _example_text(batch, length, c.text.vocab_size, gen)
                d = _max_diff(
                    text_sess, {"input_ids": ids, "attention_mask": mask}, model.encode_text(ids, mask)
                )
                diffs["text"] = max(diffs["text"], d)
    for name, d in diffs.items():
        if not d <= atol:  # also catches NaN
            raise ExportError(
                f"the exported {name} encoder differs from PyTorch by {d:.3g} (max abs), above {atol:g}; "
                "the graph does not reproduce the model; try another opset or report it with the model config"
            )
    return diffs


def export_onnx(
    model: CLIP, out_dir: str | Path, opset: int | None = None, check: bool = True
) -> dict[str, Path]:
    """Write a CLIP model's image and text encoders as ONNX graphs plus an ``onnx_config.json``.

    The graphs return exactly what ``encode_image`` / ``encode_text`` return: unit-norm (B, E) embeddings.
    Images must be preprocessed as for the PyTorch model: RGB in [0, 1], resized to image_size, then
    normalized with CLIP's mean and std (recorded in the JSON). Texts are token ids with a 0/1 mask,
    (B, T) int64 each, T <= context_length.

    Args:
        model: the model to export; its train/eval mode is restored afterwards.
        out_dir: folder to write to (created if missing).
        opset: ONNX opset, 14 to 20; None uses ``DEFAULT_OPSET`` (17).
        check: compare onnxruntime with PyTorch on random inputs (see :func:`check_onnx`).

    Returns:
        ``{"image": …/image_encoder.onnx, "text": …/text_encoder.onnx, "config": …/onnx_config.json}``.

    Raises:
        MissingExtraError: onnx, or with ``check`` onnxruntime, is missing (``pip install 'mumo[onnx]'``).
        ExportError: the opset is out of range, the export failed, or ``check`` found a mismatch above 1e-4.

    Example:
        >>> paths = export_onnx(create_model("clip_vit_tiny", seed=0), "exported/")
    """
    c = model.config
    if c.text.arch != "mumo":
        raise ExportError(f"ONNX export covers mumo's own text tower, not text.arch={c.text.arch!r}")
    opset = DEFAULT_OPSET if opset is None else opset
    if not _MIN_OPSET <= opset <= _MAX_OPSET:
        raise ExportError(
            f"opset {opset} is not supported: use {_MIN_OPSET} to {_MAX_OPSET} (default {DEFAULT_OPSET}); "
            f"attention needs >= {_MIN_OPSET}, and the TorchScript exporter stops at {_MAX_OPSET}"
        )
    # torch's exporter writes the graph with the onnx package; both are asked for before any file is written
    require("onnx", "onnx", "ONNX export")
    if check:
        require("onnxruntime", "onnx", "checking an ONNX export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"image": out / _IMAGE_FILE, "text": out / _TEXT_FILE, "config": out / _CONFIG_FILE}
    gen = torch.Generator().manual_seed(0)
    image_size, t = c.vision.image_size, c.text.context_length
    # Batch 2 and a padded row in the examples: a size-1 or all-ones example could let the tracer
    # specialise on it; the dynamic axes do the rest.
    images = torch.randn(2, c.vision.in_chans, image_size, image_size, generator=gen)
    ids, mask = _example_text(2, t, c.text.vocab_size, gen)
    try:
        with eval_mode(model), torch.no_grad():
            _export(
                _ImageEncoder(model),
                (images,),
                paths["image"],
                opset,
                input_names=["images"],
                output_names=["image_embeds"],
                dynamic_axes={"images": {0: "batch"}, "image_embeds": {0: "batch"}},
            )
            _export(
                _TextEncoder(model),
                (ids, mask),
                paths["text"],
                opset,
                input_names=["input_ids", "attention_mask"],
                output_names=["text_embeds"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "text_embeds": {0: "batch"},
                },
            )
    except Exception as e:  # the exporter raises many types; one typed error with the cause attached
        # The first line names the operator or value at fault; the rest is a dump of the whole graph.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"ONNX export (opset {opset}) failed: {first}") from e
    mean, std = model.image_normalization or (CLIP_MEAN, CLIP_STD)
    config = {
        "opset": opset,
        "embed_dim": c.embed_dim,
        "image_size": image_size,
        "context_length": t,
        "pad_id": c.text.pad_id,
        # logits = logit_scale * image_embeds @ text_embeds.T [+ logit_bias]: SigLIP's probabilities are
        # sigmoid(logits), which need both numbers
        "logit_scale": float(model.scale_and_bias()[0].detach()),
        "logit_bias": float(model.logit_bias.detach()) if model.logit_bias is not None else None,
        "image_encoder": {
            "file": _IMAGE_FILE,
            "inputs": {
                "images": {"shape": ["batch", c.vision.in_chans, image_size, image_size], "dtype": "float32"}
            },
            "outputs": {"image_embeds": {"shape": ["batch", c.embed_dim], "dtype": "float32"}},
        },
        "text_encoder": {
            "file": _TEXT_FILE,
            "inputs": {
                "input_ids": {"shape": ["batch", "sequence"], "dtype": "int64"},
                "attention_mask": {"shape": ["batch", "sequence"], "dtype": "int64"},
            },
            "outputs": {"text_embeds": {"shape": ["batch", c.embed_dim], "dtype": "float32"}},
            "max_sequence": t,
        },
        "image_preprocessing": {
            "color": "RGB",
            "scale": "pixels / 255, to [0, 1]",
            "resize": [image_size, image_size],
            "mean": list(mean),
            "std": list(std),
        },
        "embeddings_normalized": True,
    }
    paths["config"].write_text(json.dumps(config, indent=2) + "\n")
    if check:
        check_onnx(model, paths)
    return paths
