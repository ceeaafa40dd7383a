"""Linear layers frozen for inference: weights laid out once for the CPU's kernels, in fp32, bf16 or int8.

At batch 1 a decoding step is a chain of matrix-vector products that read every weight once, so it runs at
the speed the weights stream from memory. ``nn.Linear`` hands ``(1, K) @ (K, N)`` to a BLAS ``gemm`` that
streams a plain row-major weight at ~12 GB/s on two cores; the same weight in oneDNN's blocked layout,
reordered once, streams at ~22 GB/s (and products of more rows gain 1.3-1.5x too). Fewer bytes go further:

- ``fp32``: the weight in oneDNN's layout; the results differ from ``nn.Linear`` in summation order only.
- ``bf16``: the weight in bfloat16 (half the bytes); activations are rounded to bfloat16 for the product,
  the result comes back in the input's dtype. Fast only on CPUs with AVX-512 BF16 or AMX.
- ``int8``: weight-only int8 (a quarter of the bytes): per output channel, ``W ~ scale[n] * q[n, :]`` with
  ``q`` in [-127, 127] and ``scale = max|W[n, :]| / 127`` rounded up to a bfloat16; the product is PyTorch's
  ``_weight_int8pack_mm`` on bfloat16 activations (the int8 weight-only kernel of gpt-fast and torchao).

A frozen layer holds no parameters and refuses to be saved: freeze a copy for serving, keep the model.
Notation: M rows (batch x tokens), K in features, N out features.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
# A oneDNN product costs ~17 us however small (BLAS: ~4 us at 128 x 128), so it pays only on matrices that
# take longer than that to stream: from about 1 MiB of fp32. Smaller fp32 and bf16 layers stay nn.Linear's.
MIN_PACKED_SIZE = 2**18
# _weight_int8pack_mm reads K in vectors of 16: other widths crash or return garbage (torch 2.14, CPU)
INT8_K_MULTIPLE = 16


def onednn_packing() -> bool:
    """Whether this PyTorch can lay weights out for oneDNN (a CPU build with mkldnn)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def bf16_supported() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX), which bf16 weights need to pay."""
    return onednn_packing() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class FrozenLinear(nn.Module):
    """``y = x W^T + b`` of a frozen ``nn.Linear``, on fp32 or bf16 weights in oneDNN's blocked layout.

    Args:
        weight: (N, K).
        bias: (N,) or None.
        dtype: torch.float32 or torch.bfloat16, the weight's storage.
        pack: lay the weight out for oneDNN (where this CPU and PyTorch can); False: ``F.linear``.
    """

    def __init__(
        self, weight: Tensor, bias: Tensor | None, dtype: torch.dtype = torch.float32, pack: bool = True
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.dtype = dtype
        w = weight.detach().to(dtype)
        # The layout is chosen for one row (decoding); products of more rows still run on it.
        fast = bf16_supported() if dtype == torch.bfloat16 else onednn_packing()
        self.packed = pack and fast and w.device.type == "cpu"
        self.weight = torch.ops.mkldnn._reorder_linear_weight(w, 1) if self.packed else w
        self.bias = None if bias is None else bias.detach().to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(..., K) -> (..., N) in x's dtype."""
        y = x if x.dtype == self.dtype else x.to(self.dtype)
        if self.packed:
            y = torch.ops.mkldnn._linear_pointwise(y, self.weight, self.bias, "none", [], "")
        else:
            y = F.linear(y, self.weight, self.bias)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes a product reads: the weight, and the bias and scales when there are some."""
        size = self.in_features * self.out_features * torch.empty((), dtype=self.dtype).element_size()
        extra = [t for t in (self.bias, getattr(self, "scale", None)) if t is not None]
        return size + sum(t.numel() * t.element_size() for t in extra)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        raise RuntimeError(
            f"{prefix or 'this layer'}: a model frozen for inference has no saveable weights; "
            "save the model before mumo.inference.freeze"
        )

    def extra_repr(self) -> str:
        kind = f"{self.dtype}".removeprefix("torch.") + (", oneDNN layout" if self.packed else "")
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}"


class Int8Linear(FrozenLinear):
    """Weight-only int8 ``y = (x q^T) * scale + b`` (see the module docstring).

    Args:
        weight: (N, K), K a multiple of 16.
        bias: (N,) or None; kept in float32.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        nn.Module.__init__(self)
        n, k = weight.shape
        if k % INT8_K_MULTIPLE:
            raise ValueError(f"int8 weights need in_features divisible by {INT8_K_MULTIPLE}, got {k}")
        self.in_features, self.out_features, self.dtype, self.packed = k, n, torch.int8, False
        w = weight.detach().float()
        scale = _ceil_bf16(w.abs().amax(dim=1).clamp(min=1e-30) / 127)  # (N,): symmetric, per output channel
        self.weight = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)  # (N, K)
        self.scale = scale.to(torch.bfloat16)  # exact: the kernel takes its scales in the activations' dtype
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: Tensor) -> Tensor:
        """(..., K) -> (..., N) in x's dtype."""
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, K), contiguous
        y = torch._weight_int8pack_mm(rows, self.weight, self.scale)  # (M, N) bfloat16
        # adding the float32 bias promotes to float32 in the same op
        y = y.to(x.dtype) if self.bias is None else torch.add(self.bias, y).to(x.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def dequantized(self) -> Tensor:
        """The weight these int8 values stand for, (N, K) float32."""
        return self.weight.float() * self.scale.float()[:, None]


def _ceil_bf16(x: Tensor) -> Tensor:
    """Positive float32 values rounded up to the nearest bfloat16 (its top 16 bits), still float32: a scale
    rounded to nearest could shrink by 2^-9 and push a row's largest weight past 127."""
    bits = x.float().contiguous().view(torch.int32)
    return ((bits + 0xFFFF) & ~0xFFFF).view(torch.float32)


def frozen_linear(
    weight: Tensor, bias: Tensor | None, precision: Precision, min_size: int = MIN_PACKED_SIZE
) -> FrozenLinear:
    """The frozen layer of ``weight`` (N, K) and ``bias`` (N,) at ``precision``. int8 takes any size whose K
    the kernel reads (a multiple of 16; others stay fp32); fp32 and bf16 layers of fewer than ``min_size``
    weights keep fp32 ``F.linear``, which is faster there."""
    if precision == "int8" and weight.shape[1] % INT8_K_MULTIPLE == 0:
        return Int8Linear(weight, bias)
    if weight.numel() < min_size:
        return FrozenLinear(weight, bias, torch.float32, pack=False)
    return FrozenLinear(weight, bias, torch.bfloat16 if precision == "bf16" else torch.float32)


def freeze_linears(module: nn.Module, precision: Precision, min_size: int = MIN_PACKED_SIZE) -> int:
    """Replace every ``nn.Linear`` inside ``module`` with its :func:`frozen_linear`, in place; returns how
    many (merge LoRA adapters first: a wrapper's base layer would be frozen under its live adapter)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, frozen_linear(child.weight, child.bias, precision, min_size))
                count += 1
    return count
