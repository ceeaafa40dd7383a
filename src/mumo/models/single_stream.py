"""Single-stream early fusion (ViLT, Kim et al., 2021): one Transformer over image patches and text together.

Notation: B batch, N image patches, T text tokens, C width, V vocabulary size.

images (B, 3, H, W) -> patch embed + image positions + image type -> (B, N, C) ┐
ids    (B, T)       -> token embed + text positions  + text type  -> (B, T, C) ├-> [cls, patches, text]
                                                                               ┘   (B, 1 + N + T, C)
-> bidirectional Transformer (text padding masked out as keys) -> tokens (B, 1 + N + T, C)
   cls token    -> norm -> Linear(C, 2) -> ITM logits (B, 2), index 1 = "the text matches the image"
   text tokens  -> norm -> Linear(C, V) -> MLM logits (B, T, V)

Every layer sees both modalities from the first block on, so the model is cheap to fuse but cannot embed an
image or a text alone: retrieval needs one forward pass per (image, text) pair, unlike the dual encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mumo._config import Config, check
from mumo.layers import PatchEmbed, Transformer, build_norm, padding_mask
from mumo.layers.mlp import MlpType
from mumo.layers.norm import NormType
from mumo.models._registry import register_architecture, register_model
from mumo.models.text import check_tokens

TEXT_TYPE, IMAGE_TYPE = 0, 1  # rows of the modality embedding (ViLT's token type ids)


@dataclass
class SingleStreamConfig(Config):
    model_type: Literal["single_stream"] = "single_stream"  # architecture tag stored in config.json
    # where the data decides sizes: the vocabulary (the tokenizer's) and the image size (data.image_size)
    data_fields: ClassVar[tuple[str, str]] = ("vocab_size", "image_size")
    image_size: int = 224  # input height and width in pixels
    patch_size: int = 32  # patch side in pixels (ViLT-B/32)
    in_chans: int = 3  # input channels
    vocab_size: int = 49408  # token ids are in [0, vocab_size)
    context_length: int = 40  # longest token sequence (ViLT's 40)
    pad_id: int = 0  # id of padding, used to infer the attention mask when none is given
    embed_dim: int = 768  # width of every token
    depth: int = 12  # Transformer blocks
    num_heads: int = 12  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / embed_dim
    mlp_type: MlpType = "gelu"  # 'gelu', 'quick_gelu' or 'swiglu'
    norm_type: NormType = "layernorm"  # 'layernorm' or 'rmsnorm'
    norm_eps: float = 1e-5  # epsilon of the norms
    qkv_bias: bool = True  # bias on attention projections

    def validate(self) -> None:
        check(
            self.image_size > 0 and self.patch_size > 0 and self.embed_dim > 0 and self.depth > 0,
            "single_stream sizes (image_size, patch_size, embed_dim, depth) must be positive",
        )
        check(
            self.image_size % self.patch_size == 0,
            f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}",
        )
        check(
            self.embed_dim % self.num_heads == 0,
            f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
        )
        check(self.vocab_size > 0 and self.context_length > 0, "vocab_size and context_length must be > 0")
        check(0 <= self.pad_id < self.vocab_size, f"pad_id {self.pad_id} is outside the vocabulary")


class SingleStream(nn.Module):
    """Early-fusion encoder: embeddings of both modalities -> one Transformer -> ITM and MLM heads."""

    capabilities = frozenset({"match"})  # see mumo.models.capabilities

    def __init__(self, config: SingleStreamConfig) -> None:
        super().__init__()
        self.config = c = config
        # Image embedding: patches, then a learned code per grid position.
        self.patch_embed = PatchEmbed(c.image_size, c.patch_size, c.in_chans, c.embed_dim)
        self.image_pos = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, c.embed_dim))
        # Text embedding: tokens, then a learned code per position.
        self.token_embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.text_pos = nn.Parameter(torch.zeros(1, c.context_length, c.embed_dim))
        # Both position tables start at index 0, so only this tells patch 3 from token 3.
        self.type_embed = nn.Embedding(2, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.transformer = Transformer.from_spec(c)
        # Each head owns its norm: the blocks are pre-norm, so their output is the raw residual stream.
        self.itm_head = nn.Sequential(
            build_norm(c.norm_type, c.embed_dim, c.norm_eps), nn.Linear(c.embed_dim, 2)
        )
        self.mlm_head = nn.Sequential(
            build_norm(c.norm_type, c.embed_dim, c.norm_eps), nn.Linear(c.embed_dim, c.vocab_size)
        )
        self.reset_parameters()

    @property
    def num_patches(self) -> int:
        """N, the image tokens each sample contributes."""
        return self.patch_embed.num_patches

    @property
    def image_size(self) -> int:
        """Input height and width in pixels."""
        return self.config.image_size

    @property
    def context_length(self) -> int:
        """Longest token sequence the model takes."""
        return self.config.context_length

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, zero biases, and residual-output projections scaled by 1/sqrt(2 * depth)
        (GPT-2) so the residual stream keeps unit scale at any depth. Norms keep ones and zeros."""
        residual_std = 0.02 / math.sqrt(2 * self.config.depth)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv2d)):
                std = residual_std if name.endswith(("attn.proj", "mlp.fc2")) else 0.02
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for p in (self.image_pos, self.text_pos, self.cls_token):
            nn.init.normal_(p, std=0.02)

    def _embed(
        self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The joint sequence (B, 1 + N + T, C) and its key mask (B, 1, 1, 1 + N + T)."""
        c = self.config
        b, t = input_ids.shape
        attention_mask = check_tokens(input_ids, attention_mask, c.context_length, c.pad_id)
        image = self.patch_embed(images) + self.image_pos + self.type_embed.weight[IMAGE_TYPE]  # (B, N, C)
        text = (
            self.token_embed(input_ids) + self.text_pos[:, :t] + self.type_embed.weight[TEXT_TYPE]
        )  # (B, T, C)
        x = torch.cat([self.cls_token.expand(b, -1, -1), image, text], dim=1)  # (B, 1 + N + T, C)
        # The class token and every patch are always valid keys; text padding never is. Padded queries
        # still attend to real keys (no empty rows), and nothing downstream reads their outputs.
        valid = torch.cat([attention_mask.new_ones(b, 1 + image.shape[1]), attention_mask], dim=1)
        return x, padding_mask(valid)

    def forward_features(
        self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        """Fuse a batch of image-text pairs.

        Args:
            images: (B, 3, H, W).
            input_ids: (B, T) token ids, T <= context_length.
            attention_mask: (B, T) 0/1, 1 = real token; inferred from ``pad_id`` when None.

        Returns:
            (B, 1 + N + T, C) un-normalized tokens: class token, image patches, text tokens.
        """
        x, mask = self._embed(images, input_ids, attention_mask)
        return self.transformer(x, mask=mask)

    def itm_logits(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, 2) image-text matching logits from the class token; index 1 = match. Args as
        :meth:`forward_features`."""
        x, mask = self._embed(images, input_ids, attention_mask)
        # Only the class token is read, so the last block computes its output alone (exact).
        select = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.itm_head(self.transformer(x, mask=mask, select=select)[:, 0])

    def mlm_logits(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T, V) masked-language-model logits at every text position (those at padding are
        meaningless). Args as :meth:`forward_features`."""
        tokens = self.forward_features(images, input_ids, attention_mask)
        return self.mlm_head(tokens[:, 1 + self.num_patches :])

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The ITM logits (B, 2); see :meth:`itm_logits`."""
        return self.itm_logits(images, input_ids, attention_mask)


register_architecture("single_stream", SingleStreamConfig, SingleStream)


# Named configs.


@register_model
def single_stream_tiny() -> SingleStreamConfig:
    """A test-sized single-stream model: 32 px, patch 8, width 32, depth 2; vocab 320, context 16."""
    return SingleStreamConfig(
        image_size=32, patch_size=8, vocab_size=320, context_length=16, embed_dim=32, depth=2, num_heads=2
    )


@register_model
def single_stream_small_64() -> SingleStreamConfig:
    """The benchmark size of ``clip_vit_small_64`` as one stream: 64 px, patch 8, width 256, depth 4;
    vocab 1000, context 32."""
    return SingleStreamConfig(
        image_size=64, patch_size=8, vocab_size=1000, context_length=32, embed_dim=256, depth=4, num_heads=4
    )


@register_model
def single_stream_mini_64() -> SingleStreamConfig:
    """Early fusion at the demo's size: 64 px in 16-px patches (the same 4 x 4 image tokens as the
    ``fusion_conv_mini_64`` context), width 128 and depth 4 (the demo's text width, and as many blocks as
    its text tower plus the fusion blocks); vocab 1000, context 32."""
    return SingleStreamConfig(
        image_size=64, patch_size=16, vocab_size=1000, context_length=32, embed_dim=128, depth=4, num_heads=2
    )
