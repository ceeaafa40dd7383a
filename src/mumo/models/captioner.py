"""GPT-style image-conditioned decoder (captioning, VQA), CoCa (Yu et al., 2022) when it also contrasts.

Notation: B batch, T text tokens, S image tokens (or pooler queries), Cv image width, C text width,
E joint embedding width, V vocabulary size.

images (B, 3, H, W) -> image tower tokens -> norm [+ grid positions] [-> attentional pooler] -> (B, S, Cv)
                    └-> pooled -> image_proj -> (B, E) ┐ ITC (CoCa), optional
ids (B, T) -> token + position embedding                 │
           -> unimodal blocks (causal self-attention)    │   = the text tower (a TextTransformer)
           -> norm -> tokens (B, T, C) -- <eot> -> text_proj -> (B, E) ┘
           -> multimodal blocks (causal self-attention + cross-attention to the image tokens + MLP)
           -> norm -> tied output embedding -> logits (B, T, V): position t predicts token t + 1

Without an image tower (``vision: null``) the same stack is a plain GPT language model (Radford et al.,
2018): its multimodal blocks have no cross-attention. A GPT checkpoint initialises a captioner of the same
text shape by name (see :func:`load_matching`); only the image side and cross-attention start fresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mumo._config import Config, check
from mumo.layers import CrossAttention, KVCache, Transformer, build_norm, padding_mask, sincos_2d
from mumo.layers.frozen_linear import MIN_PACKED_SIZE, FrozenLinear, Precision, frozen_linear
from mumo.models._registry import register_architecture, register_model
from mumo.models.text import TextConfig, TextTransformer, check_tokens
from mumo.models.vision import VisionConfig, build_vision_tower


@dataclass
class CaptionerConfig(Config):
    model_type: Literal["captioner"] = "captioner"  # architecture tag stored in config.json
    # where the data decides sizes: the vocabulary (the tokenizer's) and the image size (data.image_size)
    data_fields: ClassVar[tuple[str, str]] = ("text.vocab_size", "vision.image_size")
    vision: VisionConfig | None = field(default_factory=VisionConfig)  # image tower; null: text-only GPT
    text: TextConfig = field(default_factory=TextConfig)  # unimodal layers; vocab and context of the decoder
    decoder_depth: int = 6  # multimodal blocks: causal self-attention + cross-attention to the image + MLP
    pooler_queries: int = 0  # > 0: an attentional pooler summarises the image into this many tokens
    grid_code: Literal["learned", "sincos"] = "learned"  # conv grid positions: learned, or fixed 2-D sin-cos
    contrastive: bool = True  # CoCa: image and text embeddings for a contrastive loss as well
    embed_dim: int = 512  # width of the joint embedding space (contrastive only)
    init_logit_scale: float = math.log(1 / 0.07)  # log of the initial inverse temperature
    max_logit_scale: float = math.log(100)  # the log-scale is clamped here

    def validate(self) -> None:
        t = self.text
        check(self.decoder_depth >= 1, f"decoder_depth must be >= 1, got {self.decoder_depth}")
        check(
            t.causal and t.pool == "eot",
            "a captioner's text layers must be causal and pool at <eot> (text.causal=true, text.pool=eot)",
        )
        check(self.pooler_queries >= 0, f"pooler_queries must be >= 0, got {self.pooler_queries}")
        if self.vision is None:
            check(
                not self.contrastive, "contrastive=true needs an image tower; set contrastive=false for a GPT"
            )
            check(self.pooler_queries == 0, "pooler_queries needs an image tower")
        check(self.embed_dim > 0, f"embed_dim must be positive, got {self.embed_dim}")


class AttentionalPooler(nn.Module):
    """``num_queries`` learned queries cross-attend to the image tokens (CoCa's attentional pooler): a
    fixed-size summary for the decoder, whatever the image tower's grid.

    Args:
        dim: image token width Cv; num_queries: output tokens; num_heads: attention heads.
    """

    def __init__(self, dim: int, num_queries: int, num_heads: int, norm_type: str, norm_eps: float) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)
        self.attn = CrossAttention(dim, num_heads)
        self.norm = build_norm(norm_type, dim, norm_eps)  # type: ignore[arg-type]

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, S, Cv) -> (B, num_queries, Cv)."""
        return self.norm(self.attn(self.queries.expand(tokens.shape[0], -1, -1), context=tokens))


@dataclass
class DecodeState:
    """What incremental decoding keeps between steps: one KV cache per causal block (unimodal, then
    multimodal) and the image's cross-attention keys and values per multimodal block (None for a GPT)."""

    caches: list[KVCache]
    context_kvs: list[tuple[Tensor, Tensor]] | None

    @property
    def length(self) -> int:
        """Positions cached so far."""
        return self.caches[0].length

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B',), in that order (beam search)."""
        for cache in self.caches:
            cache.reorder(index)
        if self.context_kvs is not None:
            self.context_kvs = [
                (k.index_select(0, index), v.index_select(0, index)) for k, v in self.context_kvs
            ]


@dataclass
class CaptionerOutput:
    """What :meth:`Captioner.forward` returns."""

    logits: Tensor  # (B, T, V) next-token logits
    image_embeds: Tensor | None  # (B, E) unit norm, contrastive models only
    text_embeds: Tensor | None  # (B, E) unit norm, contrastive models only


class Captioner(nn.Module):
    """An autoregressive decoder over text that cross-attends to image tokens; see the module docstring."""

    @property
    def capabilities(self) -> frozenset[str]:
        """See :func:`mumo.models.capabilities`: text always; captions with an image tower; embeddings when
        contrastive (CoCa)."""
        return frozenset(
            {"generate"}
            | ({"caption"} if self.visual is not None else set())
            | ({"embed"} if self.config.contrastive else set())
        )

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = c = config
        t = c.text
        self.visual = build_vision_tower(c.vision) if c.vision is not None else None
        image_width = self.visual.width if self.visual is not None else None
        self.image_norm = self.pooler = None
        image_pos: Tensor | None = None
        if c.vision is not None:
            self.image_norm = build_norm(t.norm_type, image_width, t.norm_eps)
            # A conv feature map carries no position, and "left of" needs one (as in FusionModel). Learned
            # codes start as unrelated random vectors; sin-cos ones are ordered from the start, so "left of"
            # is a linear read-out of the difference of two codes.
            grid = c.vision.image_size // 2**c.vision.depth
            if c.vision.kind == "conv" and c.grid_code == "learned":
                image_pos = nn.Parameter(torch.zeros(1, grid * grid, image_width))
            elif c.vision.kind == "conv":
                image_pos = sincos_2d(grid, grid, image_width)[None]
            if c.pooler_queries:
                heads = c.vision.num_heads if image_width % c.vision.num_heads == 0 else 1
                self.pooler = AttentionalPooler(image_width, c.pooler_queries, heads, t.norm_type, t.norm_eps)
        if isinstance(image_pos, nn.Parameter) or image_pos is None:
            self.image_pos = image_pos
        else:  # fixed: a buffer, rebuilt from the config rather than saved
            self.register_buffer("image_pos", image_pos, persistent=False)
        self.text = TextTransformer(t)
        # The multimodal blocks continue the text layers: same width, heads, norm and MLP choices.
        self.decoder = Transformer.from_spec(t, depth=c.decoder_depth, context_dim=image_width)
        self.decoder_norm = build_norm(t.norm_type, t.embed_dim, t.norm_eps)
        if c.contrastive:
            self.image_proj = nn.Linear(image_width, c.embed_dim, bias=False)
            self.text_proj = nn.Linear(t.embed_dim, c.embed_dim, bias=False)
            self.logit_scale = nn.Parameter(torch.tensor(c.init_logit_scale))
        self.frozen_head: FrozenLinear | None = None  # see freeze_head
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights and embeddings, zero biases, residual-output projections
        scaled by 1/sqrt(2 * layers); the conv tower keeps PyTorch's Kaiming init."""
        layers = self.config.text.depth + self.config.decoder_depth
        for name, module in self.named_modules():
            if name.startswith("visual.") and not isinstance(module, (nn.Linear, nn.Embedding)):
                continue
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = 0.02
                if name.endswith(("attn.proj", "mlp.fc2")) and not name.startswith("visual"):
                    std = 0.02 / math.sqrt(2 * layers)
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith(("pos_embed", "cls_token", "image_pos")):
                nn.init.normal_(p, std=0.02)
        if self.config.contrastive:
            self.image_proj.weight.normal_(std=self.visual.width**-0.5)
            self.text_proj.weight.normal_(std=self.text.width**-0.5)

    # Shapes the CLI and the evaluation read.

    @property
    def image_size(self) -> int:
        """Input height and width in pixels (0 for a text-only model)."""
        return self.config.vision.image_size if self.config.vision is not None else 0

    @property
    def image_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) per channel the image tower expects; None: CLIP's (or no image tower)."""
        v = self.config.vision
        return (v.image_mean, v.image_std) if v is not None and v.image_mean is not None else None

    @property
    def context_length(self) -> int:
        """Longest token sequence, prompt and generated tokens together."""
        return self.config.text.context_length

    @property
    def vocab_size(self) -> int:
        return self.config.text.vocab_size

    # Image side.

    def _require_image_tower(self) -> nn.Module:
        if self.visual is None:
            raise ValueError("this is a text-only model (vision: null); it takes no images")
        return self.visual

    def _context(self, tokens: Tensor) -> Tensor:
        x = self.image_norm(tokens)
        if self.image_pos is not None:
            x = x + self.image_pos
        return self.pooler(x) if self.pooler is not None else x

    def image_context(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, S, Cv) tokens the decoder cross-attends to; compute once per image."""
        return self._context(self._require_image_tower().forward_features(images))

    def encode_image_and_context(self, images: Tensor) -> tuple[Tensor | None, Tensor]:
        """One image-tower pass: ((B, E) unit-norm embeddings, or None without a contrastive head;
        (B, S, Cv) decoder context)."""
        tokens = self._require_image_tower().forward_features(images)
        embeds = None
        if self.config.contrastive:
            embeds = F.normalize(self.image_proj(self.visual.pool(tokens)), dim=-1)
        return embeds, self._context(tokens)

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """(B, 3, H, W) -> (B, E) image embeddings (contrastive models)."""
        self._require_contrastive()
        x = self.image_proj(self._require_image_tower()(images))
        return F.normalize(x, dim=-1) if normalize else x

    # Text side.

    def _require_contrastive(self) -> None:
        if not self.config.contrastive:
            raise ValueError(
                "this captioner has no contrastive head (contrastive: false); it has no embeddings"
            )

    def encode_text(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, normalize: bool = True
    ) -> Tensor:
        """(B, T) ids of ``<bos> text <eot>`` [+ (B, T) 0/1 mask] -> (B, E) embeddings from the unimodal
        layers, pooled at <eot> (contrastive models)."""
        self._require_contrastive()
        x = self.text_proj(self.text(input_ids, attention_mask))
        return F.normalize(x, dim=-1) if normalize else x

    def scale_and_bias(self) -> tuple[Tensor, None]:
        """The inverse temperature exp(min(logit_scale, max)) of the contrastive loss; no logit bias."""
        self._require_contrastive()
        return self.logit_scale.clamp(max=self.config.max_logit_scale).exp(), None

    def _lm_head(self, x: Tensor) -> Tensor:
        x = self.decoder_norm(x)
        if self.frozen_head is not None:
            return self.frozen_head(x)
        # Output embedding tied to the input one (Press & Wolf, 2017), as in GPT-2: one V x C matrix.
        return F.linear(x, self.text.token_embed.weight)

    def freeze_head(self, precision: Precision, min_size: int = MIN_PACKED_SIZE) -> None:
        """Give the output layer its own frozen copy of the tied embedding (see
        :func:`mumo.layers.frozen_linear.frozen_linear`): at batch 1 it is the largest matrix a decoding
        step reads, and the token lookup keeps the float32 embedding."""
        self.frozen_head = frozen_linear(self.text.token_embed.weight, None, precision, min_size)

    def forward(
        self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> CaptionerOutput:
        """Teacher-forced pass over right-padded ``<bos> text <eot>`` ids (B, T) [+ mask] and images
        (B, 3, H, W) (None for a text-only model): next-token logits and, for CoCa, both embeddings, from
        one pass of each tower."""
        c = self.config
        mask = check_tokens(input_ids, attention_mask, c.text.context_length, c.text.pad_id)
        image_embeds = text_embeds = context = None
        if images is not None:
            image_embeds, context = self.encode_image_and_context(images)
        elif self.visual is not None:
            raise ValueError("this captioner needs images; pass images (B, 3, H, W)")
        tokens = self.text.forward_features(input_ids, mask)  # the unimodal layers: the text tower itself
        if c.contrastive:
            text_embeds = F.normalize(self.text_proj(self.text.pool(tokens, mask)), dim=-1)
        rope = self.text.rope(torch.arange(input_ids.shape[1], device=input_ids.device))
        x = self.decoder(tokens, is_causal=True, context=context, rope=rope)
        return CaptionerOutput(self._lm_head(x), image_embeds, text_embeds)

    # Decoding (see mumo.generation).

    def start_decoding(
        self, context: Tensor | None, batch_size: int, max_length: int, dtype: torch.dtype | None = None
    ) -> DecodeState:
        """Empty KV caches for ``batch_size`` rows and ``max_length`` positions, and the context's
        cross-attention keys and values (context (B, S, Cv), or None for a text-only model)."""
        c, p = self.config, self.text.token_embed.weight
        if (context is None) != (self.visual is None):
            raise ValueError("pass image context to an image captioner, and none to a text-only model")
        if max_length > c.text.context_length:
            raise ValueError(
                f"{max_length} positions exceed the model's context_length {c.text.context_length}; "
                "shorten the prompt or ask for fewer new tokens"
            )
        heads = c.text.num_heads
        caches = [
            KVCache(batch_size, heads, c.text.embed_dim // heads, max_length, dtype or p.dtype, p.device)
            for _ in range(c.text.depth + c.decoder_depth)
        ]
        kvs = self.decoder.context_kvs(context) if context is not None else None
        return DecodeState(caches, kvs)

    def decode(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        key_mask: Tensor | None = None,
        state: DecodeState | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, T, V) for new tokens (B, T) at positions (B, T).

        Args:
            input_ids: (B, T) tokens to append.
            position_ids: (B, T) their positions (left padding shifts them per row).
            key_mask: (B, S) 0/1 over every key so far (cached + new), 0 = padding; None: no padding.
            state: the caches from :meth:`start_decoding`, extended in place; None decodes without a cache
                (``input_ids`` must then be the whole sequence and ``context`` given).
            context: (B, S', Cv) image context, when decoding without a cache.
        """
        mask = padding_mask(key_mask) if key_mask is not None else None
        x = self.text.embed(input_ids, position_ids)  # left padding shifts positions per row
        rope = self.text.rope(position_ids)
        n_text = self.config.text.depth
        caches = state.caches if state is not None else None
        text_caches = caches[:n_text] if caches else None
        x = self.text.norm(
            self.text.transformer(x, mask=mask, is_causal=True, kv_caches=text_caches, rope=rope)
        )
        x = self.decoder(
            x,
            mask=mask,
            is_causal=True,
            kv_caches=caches[n_text:] if caches else None,
            context=context if state is None else None,
            context_kvs=state.context_kvs if state is not None else None,
            rope=rope,
        )
        return self._lm_head(x)


register_architecture("captioner", CaptionerConfig, Captioner)


# Named configs.


def _mini_text(vocab_size: int = 1000, context_length: int = 32) -> TextConfig:
    return TextConfig(
        vocab_size=vocab_size, context_length=context_length, embed_dim=128, depth=2, num_heads=2
    )


@register_model
def coca_conv_mini_64() -> CaptionerConfig:
    """CoCa at demo size: the demo's CNN (64 px, width 128) and 2 unimodal + 2 multimodal 128-wide blocks."""
    vision = VisionConfig(kind="conv", image_size=64, embed_dim=128, depth=4, pool="mean")
    return CaptionerConfig(vision=vision, text=_mini_text(), decoder_depth=2, embed_dim=128)


@register_model
def captioner_conv_mini_64() -> CaptionerConfig:
    """``coca_conv_mini_64`` without the contrastive head: a plain captioner."""
    return coca_conv_mini_64().replace(contrastive=False)


@register_model
def gpt_mini() -> CaptionerConfig:
    """A text-only GPT with the text shape of ``coca_conv_mini_64`` (2 + 2 blocks, width 128), so its
    weights initialise that captioner."""
    return CaptionerConfig(vision=None, text=_mini_text(), decoder_depth=2, contrastive=False)


@register_model
def gpt_small() -> CaptionerConfig:
    """A GPT of 8 blocks, width 512, 8 heads, context 128 (the generation benchmark's decoder)."""
    text = TextConfig(vocab_size=8192, context_length=128, embed_dim=512, depth=4, num_heads=8)
    return CaptionerConfig(vision=None, text=text, decoder_depth=4, contrastive=False)


@register_model
def coca_vit_tiny() -> CaptionerConfig:
    """A test-sized CoCa on a ViT: 32 px, width 32, 1 + 1 blocks, an attentional pooler of 4 queries."""
    vision = VisionConfig(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    text = TextConfig(vocab_size=320, context_length=16, embed_dim=32, depth=1, num_heads=2)
    return CaptionerConfig(vision=vision, text=text, decoder_depth=1, pooler_queries=4, embed_dim=32)


@register_model
def captioner_conv_tiny() -> CaptionerConfig:
    """A test-sized captioner on a CNN (32 px), no contrastive head."""
    vision = VisionConfig(kind="conv", image_size=32, embed_dim=32, depth=2, pool="mean")
    text = TextConfig(vocab_size=320, context_length=16, embed_dim=32, depth=1, num_heads=2)
    return CaptionerConfig(vision=vision, text=text, decoder_depth=1, contrastive=False, embed_dim=32)


@register_model
def gpt_tiny() -> CaptionerConfig:
    """A test-sized GPT: width 32, 1 + 1 blocks, vocabulary 320, context 16."""
    text = TextConfig(vocab_size=320, context_length=16, embed_dim=32, depth=1, num_heads=2)
    return CaptionerConfig(vision=None, text=text, decoder_depth=1, contrastive=False)
