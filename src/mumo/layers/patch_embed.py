"""Patch embedding: cut an image into non-overlapping patches and project each to the model width."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """(B, 3, H, W) images -> (B, N, C) patch tokens, N = (H / p) * (W / p).

    The weight is stored as a conv kernel (C, 3, p, p), the layout every ViT checkpoint uses, but the
    projection runs as reshape + one GEMM: with stride == kernel the two are the same map, and the GEMM
    is faster than a strided convolution on CPU, forward and backward.
    """

    def __init__(self, image_size: int, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size {image_size} is not a multiple of patch_size {patch_size}; "
                "choose sizes that tile the image exactly"
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, images: Tensor) -> Tensor:
        b, c, h, w = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image of {h}x{w} px does not tile into {p}x{p} patches; resize it first")
        patches = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, (h // p) * (w // p), c * p * p)  # (B, N, 3*p*p)
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)
        return F.linear(patches, weight, self.proj.bias)
