"""CLIP dual encoder (Radford et al., 2021): late fusion of an image tower and a text tower.

images (B, 3, H, W) -> vision tower -> (B, Cv) -> image_proj -> L2 norm -> (B, E)
ids    (B, T)       -> text tower   -> (B, Ct) -> text_proj  -> L2 norm -> (B, E)
logits_per_image = exp(logit_scale) * image_embeds @ text_embeds.T [+ logit_bias]   (B, B)

A logit bias turns the model into SigLIP (Zhai et al., 2023), trained with the sigmoid loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mumo._config import Config, check
from mumo.models._registry import register_architecture, register_model
from mumo.models.bert import BertEncoder
from mumo.models.text import TextConfig, TextTransformer
from mumo.models.vision import VisionConfig, build_vision_tower


def build_text_tower(config: TextConfig) -> nn.Module:
    """The text encoder ``config.arch`` names: :class:`TextTransformer`, or BERT (:mod:`mumo.models.bert`)."""
    return BertEncoder(config) if config.arch == "bert" else TextTransformer(config)

@dataclass
class CLIPConfig(Config):
    model_type: Literal["clip"] = "clip"  # architecture tag stored in config.json
    # where the data decides sizes: the vocabulary (the tokenizer's) and the image size (data.image_size)
    data_fields: ClassVar[tuple[str, str]] = ("text.vocab_size", "vision.image_size")
    embed_dim: int = 512  # width of the joint embedding space
    vision: VisionConfig = field(default_factory=VisionConfig)  # image tower
    text: TextConfig = field(default_factory=TextConfig)  # text tower
    init_logit_scale: float = math.log(1 / 0.07)  # log of the initial inverse temperature
    max_logit_scale: float = math.log(100)  # the log-scale is clamped here (CLIP's 100 cap)
    init_logit_bias: float | None = None  # a learnable logit bias for SigLIP (e.g. -10); None: no bias
    # False: the pooled image features are the embedding, with no projection (SigLIP, whose MAP head ends
    # the image tower); needs vision.embed_dim == embed_dim
    image_proj: bool = True
    text_proj_bias: bool = False  # a bias on the text projection (SigLIP's text head has one)

    def validate(self) -> None:
        check(self.embed_dim > 0, f"embed_dim must be positive, got {self.embed_dim}")
        check(
            self.image_proj or self.vision.embed_dim == self.embed_dim,
            f"image_proj=False needs vision.embed_dim {self.vision.embed_dim} == embed_dim {self.embed_dim}",
        )
        check(
            self.init_logit_scale <= self.max_logit_scale,
            f"init_logit_scale {self.init_logit_scale:.3f} is above "
            f"max_logit_scale {self.max_logit_scale:.3f}",
        )


@dataclass
class CLIPOutput:
    """What :meth:`CLIP.forward` returns. Logits are computed on access, from the embeddings."""

    image_embeds: Tensor  # (B, E), unit norm
    text_embeds: Tensor  # (B', E), unit norm
    logit_scale: Tensor  # () exp of the clamped log-scale: the inverse temperature
    logit_bias: Tensor | None  # () or None

    @property
    def logits_per_image(self) -> Tensor:
        """(B, B') similarity of every image to every text, scaled [and biased]."""
        logits = self.logit_scale * self.image_embeds @ self.text_embeds.T
        return logits + self.logit_bias if self.logit_bias is not None else logits

    @property
    def logits_per_text(self) -> Tensor:
        """(B', B), the transpose of ``logits_per_image``."""
        return self.logits_per_image.T


class CLIP(nn.Module):
    """Dual encoder with projections into a shared space and a learnable temperature."""

    capabilities = frozenset({"embed"})  # see mumo.models.capabilities

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = c = config
        self.visual = build_vision_tower(c.vision)
        self.text = build_text_tower(c.text)
        self.image_proj = (
            nn.Linear(self.visual.width, c.embed_dim, bias=False) if c.image_proj else nn.Identity()
        )
        self.text_proj = nn.Linear(self.text.width, c.embed_dim, bias=c.text_proj_bias)
        self.logit_scale = nn.Parameter(torch.tensor(c.init_logit_scale))
        self.logit_bias = (
            nn.Parameter(torch.tensor(c.init_logit_bias)) if c.init_logit_bias is not None else None
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise as GPT-2 / CLIP do: N(0, 0.02) weights, zero biases, and residual-output projections
        scaled by 1/sqrt(2 * depth) so the residual stream keeps unit scale at any depth."""
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = 0.02
                if name.endswith(("attn.proj", "mlp.fc2")):
                    depth = self.config.vision.depth if name.startswith("visual") else self.config.text.depth
                    std = 0.02 / math.sqrt(2 * depth)
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d) and name.endswith("patch_embed.proj"):
                nn.init.normal_(module.weight, std=0.02)  # the conv encoder keeps PyTorch's Kaiming init
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith(("pos_embed", "cls_token", "attn_pool.latent")):
                nn.init.normal_(p, std=0.02)
        if isinstance(self.image_proj, nn.Linear):
            self.image_proj.weight.normal_(std=self.visual.width**-0.5)
        self.text_proj.weight.normal_(std=self.text.width**-0.5)

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """(B, 3, H, W) -> (B, E) image embeddings, unit norm unless ``normalize=False``."""
        x = self.image_proj(self.visual(images))
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, normalize: bool = True
    ) -> Tensor:
        """(B, T) token ids [+ (B, T) 0/1 mask] -> (B, E) text embeddings, unit norm unless told not to."""
        x = self.text_proj(self.text(input_ids, attention_mask))
        return F.normalize(x, dim=-1) if normalize else x

    def scale_and_bias(self) -> tuple[Tensor, Tensor | None]:
        """The inverse temperature exp(min(logit_scale, max)) and the logit bias (None without one).

        Clamping here, not after the optimizer step, keeps the cap wherever the model is used; the
        gradient to the temperature is zero only while it sits at the cap.
        """
        scale = self.logit_scale.clamp(max=self.config.max_logit_scale).exp()
        return scale, self.logit_bias

    @property
    def image_size(self) -> int:
        """Input height and width in pixels."""
        return self.config.vision.image_size

    @property
    def image_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) per channel the image tower expects; None: CLIP's."""
        v = self.config.vision
        return (v.image_mean, v.image_std) if v.image_mean is not None else None

    @property
    def context_length(self) -> int:
        """Longest token sequence the text tower takes."""
        return self.config.text.context_length

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> CLIPOutput:
        """Embed a batch of images (B, 3, H, W) and texts (B', T); see :class:`CLIPOutput`."""
        scale, bias = self.scale_and_bias()
        return CLIPOutput(
            image_embeds=self.encode_image(images),
            text_embeds=self.encode_text(input_ids, attention_mask),
            logit_scale=scale,
            logit_bias=bias,
        )


register_architecture("clip", CLIPConfig, CLIP)


class WrapsCLIP:
    """The dual-encoder interface of a model built around a CLIP held as ``self.clip`` (a fusion model, an
    image classifier): what evaluation, zero-shot and the contrastive loss call, passed through."""

    clip: CLIP

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """(B, 3, H, W) -> (B, E) image embeddings; see :meth:`CLIP.encode_image`."""
        return self.clip.encode_image(images, normalize=normalize)

    def encode_text(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, normalize: bool = True
    ) -> Tensor:
        """(B, T) ids [+ (B, T) 0/1 mask] -> (B, E) text embeddings; see :meth:`CLIP.encode_text`."""
        return self.clip.encode_text(input_ids, attention_mask, normalize=normalize)

    def scale_and_bias(self) -> tuple[Tensor, Tensor | None]:
        """The CLIP's inverse temperature and logit bias."""
        return self.clip.scale_and_bias()

    @property
    def image_size(self) -> int:
        """Input height and width in pixels."""
        return self.clip.image_size

    @property
    def image_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) per channel the image tower expects; None: CLIP's."""
        return self.clip.image_normalization

    @property
    def context_length(self) -> int:
        """Longest token sequence the text tower takes."""
        return self.clip.context_length


# Named configs. Standard sizes follow OpenCLIP's ViT-B-32 / ViT-B-16 / ViT-L-14 (same parameter counts).


def _clip_text_base(embed_dim: int = 512, num_heads: int = 8) -> TextConfig:
    return TextConfig(vocab_size=49408, context_length=77, embed_dim=embed_dim, depth=12, num_heads=num_heads)


@register_model
def clip_vit_b32() -> CLIPConfig:
    """ViT-B/32 at 224 px with the CLIP text Transformer (151 M parameters)."""
    vision = VisionConfig(image_size=224, patch_size=32, embed_dim=768, depth=12, num_heads=12)
    return CLIPConfig(embed_dim=512, vision=vision, text=_clip_text_base())


@register_model
def clip_vit_b16() -> CLIPConfig:
    """ViT-B/16 at 224 px with the CLIP text Transformer (150 M parameters)."""
    vision = VisionConfig(image_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return CLIPConfig(embed_dim=512, vision=vision, text=_clip_text_base())


@register_model
def clip_vit_l14() -> CLIPConfig:
    """ViT-L/14 at 224 px with a 768-wide text Transformer (428 M parameters)."""
    vision = VisionConfig(image_size=224, patch_size=14, embed_dim=1024, depth=24, num_heads=16)
    return CLIPConfig(embed_dim=768, vision=vision, text=_clip_text_base(768, 12))


@register_model
def clip_vit_small_64() -> CLIPConfig:
    """The shared benchmark config: ViT 64 px, patch 8, width 256, depth 4; text context 32, vocab 1000."""
    vision = VisionConfig(image_size=64, patch_size=8, embed_dim=256, depth=4, num_heads=4)
    text = TextConfig(vocab_size=1000, context_length=32, embed_dim=256, depth=4, num_heads=4)
    return CLIPConfig(embed_dim=256, vision=vision, text=text)


@register_model
def clip_conv_small_64() -> CLIPConfig:
    """A 4-stage CNN image tower (64 px) with a small text Transformer: the fast CPU choice."""
    vision = VisionConfig(kind="conv", image_size=64, embed_dim=256, depth=4, pool="mean")
    text = TextConfig(vocab_size=1000, context_length=32, embed_dim=256, depth=4, num_heads=4)
    return CLIPConfig(embed_dim=256, vision=vision, text=text)


@register_model
def clip_conv_mini_64() -> CLIPConfig:
    """The demo model: a 4-stage CNN (16 -> 128 channels) and a 2-block, 128-wide text Transformer at 64 px;
    about 600 training samples/s on 2 CPU cores."""
    vision = VisionConfig(kind="conv", image_size=64, embed_dim=128, depth=4, pool="mean")
    text = TextConfig(vocab_size=1000, context_length=32, embed_dim=128, depth=2, num_heads=2)
    return CLIPConfig(embed_dim=128, vision=vision, text=text)


@register_model
def clip_vit_tiny() -> CLIPConfig:
    """A test-sized ViT CLIP: 32 px, width 32, depth 2."""
    vision = VisionConfig(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    text = TextConfig(vocab_size=320, context_length=16, embed_dim=32, depth=2, num_heads=2)
    return CLIPConfig(embed_dim=32, vision=vision, text=text)


@register_model
def clip_conv_tiny() -> CLIPConfig:
    """A test-sized CNN CLIP: 32 px, 2 conv stages."""
    vision = VisionConfig(kind="conv", image_size=32, embed_dim=32, depth=2, pool="mean")
    text = TextConfig(vocab_size=320, context_length=16, embed_dim=32, depth=2, num_heads=2)
    return CLIPConfig(embed_dim=32, vision=vision, text=text)


@register_model
def clip_vit_tiny_bidir() -> CLIPConfig:
    """Test-sized variant with the other options: sin-cos positions, mean pooling, RMSNorm, SwiGLU,
    and a bidirectional text tower pooled by a class token."""
    common = dict(
        embed_dim=32, depth=2, num_heads=2, norm_type="rmsnorm", mlp_type="swiglu", pos_embed="sincos"
    )
    vision = VisionConfig(image_size=32, patch_size=8, class_token=False, pool="mean", **common)
    text = TextConfig(vocab_size=320, context_length=16, causal=False, pool="cls", **common)
    return CLIPConfig(embed_dim=32, vision=vision, text=text)


@register_model
def siglip_vit_tiny() -> CLIPConfig:
    """Test-sized SigLIP: a logit bias initialised at -10 and scale at 10, for the sigmoid loss."""
    return clip_vit_tiny().replace(init_logit_scale=math.log(10), init_logit_bias=-10.0)


def _siglip(vision: VisionConfig, text: TextConfig, embed_dim: int) -> CLIPConfig:
    """SigLIP's architecture (Zhai et al., 2023) on given tower sizes: a ViT without class token or
    pre-norm, pooled by a MAP head, no image projection; a bidirectional text tower over texts padded to
    the full context, pooled at the last position, with a biased linear head; LayerNorm eps 1e-6."""
    vision = vision.replace(
        class_token=False, norm_pre=False, patch_bias=True, pool="map", norm_eps=1e-6, mlp_type="gelu_tanh"
    )
    text = text.replace(causal=False, pool="last", norm_eps=1e-6, mlp_type="gelu_tanh")
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=vision,
        text=text,
        init_logit_scale=math.log(10),
        init_logit_bias=-10.0,
        image_proj=False,
        text_proj_bias=True,
    )


@register_model
def siglip_vit_b16() -> CLIPConfig:
    """SigLIP ViT-B/16 at 224 px (Hugging Face google/siglip-base-patch16-224's shape: 32,000 ids, 64
    tokens; 203 M parameters)."""
    vision = VisionConfig(image_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12)
    text = TextConfig(vocab_size=32000, context_length=64, embed_dim=768, depth=12, num_heads=12, pad_id=1)
    return _siglip(vision, text, 768)


@register_model
def siglip_map_vit_tiny() -> CLIPConfig:
    """Test-sized SigLIP architecture (MAP head, last-position text pooling): 32 px, width 32, depth 2."""
    vision = VisionConfig(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    text = TextConfig(vocab_size=320, context_length=16, embed_dim=32, depth=2, num_heads=2, pad_id=1)
    return _siglip(vision, text, 32)
