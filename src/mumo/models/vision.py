"""Image towers: a Vision Transformer (Dosovitskiy et al., 2021) and a small convolutional encoder.

Both map images (B, 3, H, W) to pooled features (B, C) with ``forward`` and to a token grid (B, N, C)
with ``forward_features`` (for fusion and captioning). C is ``config.embed_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mumo._config import Config, check
from mumo.layers import AttentionPoolLatent, CrossAttention, PatchEmbed, Transformer, build_norm, sincos_2d
from mumo.layers.block import StackDepth
from mumo.layers.mlp import MlpType
from mumo.layers.norm import NormType


@dataclass
class VisionConfig(Config):
    kind: Literal["vit", "conv"] = "vit"  # Transformer over patches, or a small CNN
    image_size: int = 224  # input height and width in pixels
    in_chans: int = 3  # input channels
    patch_size: int = 16  # ViT patch side in pixels
    embed_dim: int = 768  # width of the tokens (the CNN's last stage width)
    depth: int = 12  # Transformer blocks (CNN stages, each halving the resolution)
    num_heads: int = 12  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / embed_dim
    mlp_type: MlpType = "gelu"  # 'gelu', 'gelu_tanh' (tanh approximation), 'quick_gelu' or 'swiglu'
    norm_type: NormType = "layernorm"  # 'layernorm' or 'rmsnorm'
    norm_eps: float = 1e-5  # epsilon of the norms
    qkv_bias: bool = True  # bias on attention projections
    patch_bias: bool = False  # bias on the patch projection (False in CLIP)
    class_token: bool = True  # prepend a learned class token
    pos_embed: Literal["learned", "sincos"] = "learned"  # position code of the patch grid
    norm_pre: bool = True  # normalize tokens before the first block (CLIP's ln_pre)
    # class token, mean of the tokens, attention from the mean token (conv), a learned probe (MAP, SigLIP),
    # or (conv) one linear map of the whole grid, so that each cell has its own weights ("grid")
    pool: Literal["cls", "mean", "attn", "map", "grid"] = "cls"
    # conv: two more input channels holding each pixel's x and y in [-1, 1] (CoordConv, Liu et al., 2018),
    # so that features, and the grid tokens that fusion blocks and decoders read, can say where they are
    coords: bool = False
    # conv: which stage's input gets the coordinate channels, at its resolution: 0 the image; k > 0 leaves
    # the first k stages blind to position, so that what they detect (colour, edges) is the same everywhere
    coords_stage: int = 0
    # Per-channel normalisation of the input pixels (in [0, 1]) the weights expect; None: CLIP's (OpenAI's)
    # mean and std, what mumo trains with. SigLIP's are 0.5.
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = None

    def validate(self) -> None:
        check(self.image_size > 0 and self.embed_dim > 0 and self.depth > 0, "vision sizes must be positive")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            check(value is None or len(value) == self.in_chans, f"vision.{name} needs one value per channel")
        check(self.image_std is None or min(self.image_std) > 0, "vision.image_std must be positive")
        if self.kind == "vit":
            check(
                self.image_size % self.patch_size == 0,
                f"vision.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}",
            )
            check(
                self.embed_dim % self.num_heads == 0,
                f"vision.embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
            )
            check(
                self.pool != "cls" or self.class_token,
                "vision.pool='cls' needs class_token=True; set pool='mean' to pool without one",
            )
            check(
                self.pool not in ("attn", "grid"),
                f"vision.pool={self.pool!r} is for the conv encoder; a ViT pools by cls, mean or map",
            )
            check(not self.coords, "vision.coords is for the conv encoder; a ViT has position embeddings")
            check(self.coords_stage == 0, "vision.coords_stage is for the conv encoder's coordinate channels")
        else:
            check(
                self.pool in ("mean", "attn", "grid"),
                "the conv image encoder pools by 'mean', 'attn' or 'grid'; set vision.pool to one of them",
            )
            check(
                self.pool != "attn" or self.embed_dim % self.num_heads == 0,
                f"vision.embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
            )
            check(
                self.image_size % 2**self.depth == 0,
                f"vision.image_size {self.image_size} must be divisible by 2**depth = {2**self.depth} "
                "for the conv encoder",
            )
            check(
                self.embed_dim % 2 ** (self.depth - 1) == 0,
                f"vision.embed_dim {self.embed_dim} must be divisible by 2**(depth-1) for the conv encoder",
            )
            check(
                0 <= self.coords_stage < self.depth,
                f"vision.coords_stage must be in 0 .. depth - 1 = {self.depth - 1}, got {self.coords_stage}",
            )
            check(self.coords or self.coords_stage == 0, "vision.coords_stage needs vision.coords: true")


class VisionTransformer(StackDepth, nn.Module):
    """ViT: patch embedding -> [class token] + positions -> pre-norm blocks -> norm -> pool (class token,
    mean, or MAP: a learned query attending over every token, as SigLIP's towers pool)."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embed = PatchEmbed(c.image_size, c.patch_size, c.in_chans, c.embed_dim, bias=c.patch_bias)
        n = self.patch_embed.num_patches + int(c.class_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.class_token else None
        if c.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n, c.embed_dim))
        else:
            grid = self.patch_embed.grid_size
            table = sincos_2d(grid, grid, c.embed_dim)
            if c.class_token:  # the class token has no place in the grid: a zero code
                table = torch.cat([torch.zeros(1, c.embed_dim), table])
            self.register_buffer("pos_embed", table[None], persistent=False)
        self.norm_pre = build_norm(c.norm_type, c.embed_dim, c.norm_eps) if c.norm_pre else nn.Identity()
        self.transformer = Transformer.from_spec(c)
        self.norm = build_norm(c.norm_type, c.embed_dim, c.norm_eps)
        self.attn_pool = (
            AttentionPoolLatent(c.embed_dim, c.num_heads, c.mlp_ratio, c.mlp_type, c.norm_type, c.norm_eps)
            if c.pool == "map"
            else None
        )

    @property
    def width(self) -> int:
        return self.config.embed_dim

    def layer_of(self, name: str) -> int:
        """Depth of the parameter ``name`` (see :class:`StackDepth`); the MAP head sits after the norm."""
        return self.num_layers + 1 if name.startswith("attn_pool.") else super().layer_of(name)

    def _embed(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images)  # (B, N, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm_pre(x + self.pos_embed)

    def forward_features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> normalized tokens (B, N [+1], C), class token first when there is one."""
        return self.norm(self.transformer(self._embed(images)))

    def pool(self, tokens: Tensor) -> Tensor:
        """(B, N [+1], C) tokens from :meth:`forward_features` -> (B, C), equal to :meth:`forward`."""
        if self.config.pool == "cls":
            return tokens[:, 0]
        if self.attn_pool is not None:  # every token, a class token too, as timm's MAP head reads them
            return self.attn_pool(tokens)
        return tokens[:, int(self.config.class_token) :].mean(dim=1)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> pooled features (B, C)."""
        x = self._embed(images)
        if self.config.pool == "cls":
            select = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            return self.norm(self.transformer(x, select=select))[:, 0]
        return self.pool(self.norm(self.transformer(x)))


class AttentionPool(nn.Module):
    """CLIP's ResNet pooling (Radford et al., 2021): the mean token, plus a learned position code, attends
    over the position-coded grid tokens. Unlike a plain mean it can weigh where things are and which
    features occur together, which binding colours to shapes and telling left from right need.

    Args:
        dim: token width C; num_tokens: grid cells N; num_heads: attention heads.
    """

    def __init__(self, dim: int, num_tokens: int, num_heads: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens + 1, dim) * dim**-0.5)
        self.attn = CrossAttention(dim, num_heads)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, N, C) grid tokens -> (B, C)."""
        x = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.pos_embed  # (B, 1 + N, C)
        return self.attn(x[:, :1], context=x)[:, 0]


class ConvEncoder(nn.Module):
    """A cheap CNN: [x, y coordinate channels ->] ``depth`` stages of conv3x3 -> BatchNorm -> ReLU -> 2x2
    max-pool, widths doubling up to ``embed_dim``; then global mean pooling, attention pooling
    (``pool='attn'``) or a linear map of the whole grid (``pool='grid'``). On 64-px images of simple shapes
    it learns far faster per CPU-second than a ViT, which needs many more samples to learn locality.

    Convolutions and a mean are blind to where a feature is (zero padding aside), so "a red circle to the
    left of a blue square" and its reverse pool alike. ``coords`` lets the features carry their position;
    ``pool='grid'`` weighs each cell on its own, so that the pooled vector can hold what is where."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = c = config
        widths = [c.embed_dim // 2 ** (c.depth - 1 - i) for i in range(c.depth)]
        layers: list[nn.Module] = []
        in_ch = c.in_chans
        for i, w in enumerate(widths):
            in_ch += 2 * (c.coords and i == c.coords_stage)
            layers += [
                nn.Conv2d(in_ch, w, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_ch = w
        self.stages = nn.Sequential(*layers)
        self._layers_per_stage = len(layers) // c.depth
        grid = c.image_size // 2**c.depth
        self.attn_pool = AttentionPool(c.embed_dim, grid * grid, c.num_heads) if c.pool == "attn" else None
        self.grid_pool = nn.Linear(grid * grid * c.embed_dim, c.embed_dim) if c.pool == "grid" else None
        if c.coords:  # (1, 2, H', W') at stage coords_stage: x then y, -1 at the left / top edge, +1 right
            axis = torch.linspace(-1.0, 1.0, c.image_size // 2**c.coords_stage)
            ys, xs = torch.meshgrid(axis, axis, indexing="ij")
            self.register_buffer("coord_map", torch.stack([xs, ys])[None], persistent=False)
        else:
            self.coord_map = None

    @property
    def width(self) -> int:
        return self.config.embed_dim

    @property
    def num_layers(self) -> int:
        """Stages, for layer-wise learning-rate decay and partial locking (see :meth:`layer_of`)."""
        return self.config.depth

    def layer_of(self, name: str) -> int:
        """Depth of the parameter ``name`` (relative to this tower): i + 1 for stage i, ``num_layers + 1``
        for the attention or grid pool."""
        head, _, rest = name.partition(".")
        if head == "stages":
            return int(rest.partition(".")[0]) // self._layers_per_stage + 1
        return self.num_layers + 1

    def _features(self, images: Tensor) -> Tensor:
        # Channels-last (NHWC) activations take oneDNN's faster convolution kernels on CPU: about 1.35x
        # for this encoder's training step at 64 px. The weights may stay in the default layout.
        x = images.contiguous(memory_format=torch.channels_last)
        if self.coord_map is None:
            return self.stages(x)
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            raise ValueError(
                f"images of {tuple(images.shape[-2:])} px for a conv encoder with coordinate channels "
                f"of {size} px; resize them to vision.image_size"
            )
        split = self._layers_per_stage * self.config.coords_stage
        x = self.stages[:split](x)
        coords = self.coord_map.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        x = torch.cat([x, coords], dim=1).contiguous(memory_format=torch.channels_last)
        return self.stages[split:](x)

    def forward_features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> feature-map tokens (B, H/2^depth * W/2^depth, C), row-major."""
        return self._features(images).flatten(2).transpose(1, 2)

    def pool(self, tokens: Tensor) -> Tensor:
        """(B, N, C) tokens from :meth:`forward_features` -> (B, C), equal to :meth:`forward`."""
        if self.attn_pool is not None:
            return self.attn_pool(tokens)
        if self.grid_pool is not None:
            return self.grid_pool(tokens.flatten(1))
        return tokens.mean(dim=1)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> pooled features (B, C)."""
        if self.config.pool == "mean":
            return self._features(images).mean(dim=(2, 3))
        return self.pool(self.forward_features(images))


def build_vision_tower(config: VisionConfig) -> nn.Module:
    """The image encoder that ``config.kind`` names."""
    return VisionTransformer(config) if config.kind == "vit" else ConvEncoder(config)
