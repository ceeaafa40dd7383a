"""Interactive fusion (ALBEF, Li et al., 2021; BLIP, Li et al., 2022): a dual encoder whose text tokens then
cross-attend to the image tokens in a few fusion blocks.

Notation: B batch, S image tokens, T text tokens, Cv image width, C text width, E joint embedding width,
V vocabulary size.

images (B, 3, H, W) -> CLIP image tower -> pooled -> image_proj -> (B, E) ┐ ITC (contrastive), via the CLIP
ids    (B, T)       -> CLIP text tower  -> pooled -> text_proj  -> (B, E) ┘
images -> image tower tokens -> norm [+ grid positions] -> (B, S, Cv) ──────────────┐ context
ids    -> text tower tokens (B, T, C) -> fusion blocks: self-attn (bidirectional, padding masked)
                                           + cross-attn to image tokens + MLP  -> fused (B, T, C)
   first text position -> norm -> Linear(C, 2) -> ITM logits (B, 2), index 1 = match
   every text position  -> norm -> Linear(C, V) -> MLM logits (B, T, V)

The towers stay usable alone (fast retrieval by embeddings), and the fusion blocks rerank or answer with
full image-text interaction; ALBEF aligns the towers with ITC before fusing, hence one model for both.

Parameter sharing between the contrastive and the fusion side (``text_sharing``): 'hard' (ALBEF) feeds the
fusion blocks from the CLIP text tower itself; 'soft' gives the fusion side its own copy of the text tower,
started equal and tied to the CLIP one by ``tie_strength * ||theta_clip - theta_fusion||^2`` (see
:mod:`mumo.losses.weighting`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mumo._config import Config, check
from mumo.layers import Transformer, build_norm, padding_mask
from mumo.losses.weighting import tie_penalty
from mumo.models._registry import register_architecture, register_model
from mumo.models.clip import CLIP, CLIPConfig, WrapsCLIP, clip_conv_mini_64, clip_vit_tiny
from mumo.models.text import TextTransformer


@dataclass
class FusionConfig(Config):
    model_type: Literal["fusion"] = "fusion"  # architecture tag stored in config.json
    # where the data decides sizes: the vocabulary (the tokenizer's) and the image size (data.image_size)
    data_fields: ClassVar[tuple[str, str]] = ("clip.text.vocab_size", "clip.vision.image_size")
    clip: CLIPConfig = field(default_factory=CLIPConfig)  # the towers and the ITC projections
    fusion_depth: int = 2  # fusion blocks (self-attention + cross-attention to image tokens + MLP)
    num_heads: int = 8  # attention heads of the fusion blocks; must divide the text width
    mlp_ratio: float = 4.0  # MLP hidden width / text width in the fusion blocks
    text_sharing: Literal["hard", "soft"] = "hard"  # fusion reads the CLIP text tower, or its own tied copy
    tie_strength: float = 1e-2  # soft sharing: weight of the L2 penalty between the two text towers

    def validate(self) -> None:
        check(self.fusion_depth > 0, f"fusion_depth must be positive, got {self.fusion_depth}")
        check(self.tie_strength >= 0, f"tie_strength must be >= 0, got {self.tie_strength}")
        width = self.clip.text.embed_dim
        check(
            width % self.num_heads == 0,
            f"fusion num_heads {self.num_heads} does not divide the text width clip.text.embed_dim "
            f"{width}; pick a divisor",
        )


class FusionModel(WrapsCLIP, nn.Module):
    """A :class:`CLIP` for ITC plus cross-attention fusion blocks on its text tokens for ITM and MLM."""

    capabilities = frozenset({"embed", "match"})  # see mumo.models.capabilities

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = c = config
        self.clip = CLIP(c.clip)  # initialises itself
        t = c.clip.text
        width, image_width = self.clip.text.width, self.clip.visual.width
        # The conv tower's tokens are raw ReLU maps and the ViT's are normalized: one norm puts both on the
        # scale the cross-attention projections were initialised for.
        self.image_norm = build_norm(t.norm_type, image_width, t.norm_eps)
        # Attention is blind to order: a ViT's tokens carry their positions, a conv feature map's do not, so
        # those get a learned code per grid cell. Without it "left of" and "right of" look the same.
        v = c.clip.vision
        grid = v.image_size // 2**v.depth
        self.image_pos = nn.Parameter(torch.zeros(1, grid * grid, image_width)) if v.kind == "conv" else None
        # Soft sharing: the fusion side's own text tower, a copy of the CLIP one so the penalty starts at 0
        # (a deep copy draws no random numbers, so the rest initialises as under hard sharing).
        self.fusion_text: TextTransformer | None = None
        if c.text_sharing == "soft":
            self.fusion_text = copy.deepcopy(self.clip.text)
        # The fusion blocks continue the text tower (ALBEF's upper BERT layers), so they share its norm,
        # MLP and bias choices; cross-attention maps the image width to the text width.
        self.fusion = Transformer.from_spec(
            t, depth=c.fusion_depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, context_dim=image_width
        )
        # Each head owns its norm: the blocks are pre-norm, so their output is the raw residual stream.
        self.itm_head = nn.Sequential(build_norm(t.norm_type, width, t.norm_eps), nn.Linear(width, 2))
        self.mlm_head = nn.Sequential(
            build_norm(t.norm_type, width, t.norm_eps), nn.Linear(width, t.vocab_size)
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the fusion blocks and heads (the CLIP has its own): N(0, 0.02) weights, zero biases,
        and the three residual-output projections of each block scaled by 1/sqrt(3 * fusion_depth)."""
        if self.image_pos is not None:
            nn.init.normal_(self.image_pos, std=0.02)
        residual_std = 0.02 / math.sqrt(3 * self.config.fusion_depth)
        for part in (self.fusion, self.itm_head, self.mlm_head):
            for name, module in part.named_modules():
                if isinstance(module, nn.Linear):
                    std = residual_std if name.endswith(("attn.proj", "mlp.fc2")) else 0.02
                    nn.init.normal_(module.weight, std=std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    @property
    def has_text_cls(self) -> bool:
        """True when the text tower prepends a class token (``text.pool == 'cls'``)."""
        return self.clip.text.cls_token is not None

    # Contrastive side: the dual encoder, unchanged.

    def encode_image_and_tokens(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """One image-tower pass for both sides: (B, 3, H, W) -> ((B, E) unit-norm embeddings equal to
        :meth:`encode_image`, (B, S, Cv) fusion context equal to :meth:`image_tokens`)."""
        tokens = self.clip.visual.forward_features(images)
        embeds = torch.nn.functional.normalize(self.clip.image_proj(self.clip.visual.pool(tokens)), dim=-1)
        return embeds, self._context(tokens)

    def _context(self, tokens: Tensor) -> Tensor:
        x = self.image_norm(tokens)
        return x + self.image_pos if self.image_pos is not None else x

    def encode_text_and_tokens(
        self, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One CLIP text-tower pass for both sides: (B, T) ids [+ mask] -> ((B, E) unit-norm embeddings
        equal to :meth:`encode_text`, (B, T [+1], C) tokens that hard sharing feeds to the fusion blocks)."""
        if attention_mask is None:
            attention_mask = (input_ids != self.config.clip.text.pad_id).long()
        text = self.clip.text
        tokens = text.forward_features(input_ids, attention_mask)
        embeds = torch.nn.functional.normalize(self.clip.text_proj(text.pool(tokens, attention_mask)), dim=-1)
        return embeds, tokens

    def regularizers(self) -> dict[str, Tensor]:
        """Penalties to add to the training loss: ``{'tie': ...}`` under soft sharing, else none."""
        if self.fusion_text is None:
            return {}
        return {"tie": self.config.tie_strength * tie_penalty(self.clip.text, self.fusion_text)}

    # Fusion side.

    def image_tokens(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, S, Cv) normalized image tokens, the fusion context.

        Computed once per image, they can be reused against many texts (ITM reranking, hard negatives).
        """
        return self._context(self.clip.visual.forward_features(images))

    def text_tokens(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids [+ mask] -> (B, T [+1], C) normalized tokens of the text tower the fusion side reads
        (the CLIP one under hard sharing, its own copy under soft sharing)."""
        text = self.fusion_text if self.fusion_text is not None else self.clip.text
        return text.forward_features(input_ids, attention_mask)

    def fuse(
        self,
        image_tokens: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        text_tokens: Tensor | None = None,
    ) -> Tensor:
        """Text tokens that have attended to the image.

        Args:
            image_tokens: (B, S, Cv) from :meth:`image_tokens`.
            input_ids: (B, T) token ids.
            attention_mask: (B, T) 0/1, 1 = real token; inferred from the text tower's ``pad_id`` when None.
            text_tokens: (B, T [+1], C) :meth:`text_tokens` of ``input_ids`` when already computed (a text
                paired with several images is then encoded once, as ALBEF does).

        Returns:
            (B, T, C) un-normalized fused tokens, or (B, 1 + T, C) with the text tower's class token first
            when it has one.
        """
        if attention_mask is None:
            attention_mask = (input_ids != self.config.clip.text.pad_id).long()
        x = text_tokens if text_tokens is not None else self.text_tokens(input_ids, attention_mask)
        if self.has_text_cls:
            attention_mask = torch.cat([attention_mask.new_ones(x.shape[0], 1), attention_mask], dim=1)
        # Bidirectional among text tokens even over a causal tower, with padding kept out as keys; the
        # image tokens are all valid, so cross-attention needs no mask.
        return self.fusion(x, mask=padding_mask(attention_mask), context=image_tokens)

    def itm_logits(
        self,
        image_tokens: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        text_tokens: Tensor | None = None,
    ) -> Tensor:
        """(B, 2) image-text matching logits from the first text position (the text tower's class token,
        else the first token, BERT's [CLS] place); index 1 = match. Args as :meth:`fuse`."""
        return self.itm_head(self.fuse(image_tokens, input_ids, attention_mask, text_tokens)[:, 0])

    def mlm_logits(
        self, image_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        """(B, T, V) masked-language-model logits at every text position (those at padding are
        meaningless). Args as :meth:`fuse`."""
        fused = self.fuse(image_tokens, input_ids, attention_mask)
        return self.mlm_head(fused[:, int(self.has_text_cls) :])

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The ITM logits (B, 2) of the pairs (images[i], input_ids[i]); see :meth:`itm_logits`."""
        return self.itm_logits(self.image_tokens(images), input_ids, attention_mask)


register_architecture("fusion", FusionConfig, FusionModel)


# Named configs.


@register_model
def fusion_conv_mini_64() -> FusionConfig:
    """The ``clip_conv_mini_64`` towers (CNN + 2-block, 128-wide text) with 2 fusion blocks, 64 px."""
    return FusionConfig(clip=clip_conv_mini_64(), fusion_depth=2, num_heads=2)


@register_model
def fusion_vit_tiny() -> FusionConfig:
    """A test-sized fusion model: the ``clip_vit_tiny`` towers (32 px, width 32) with 1 fusion block."""
    return FusionConfig(clip=clip_vit_tiny(), fusion_depth=1, num_heads=2)
