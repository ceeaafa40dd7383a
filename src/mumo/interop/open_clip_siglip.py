"""Import OpenCLIP's SigLIP models (``ViT-B-16-SigLIP`` and its family): a timm ViT image tower pooled by a
MAP head, OpenCLIP's bidirectional text tower pooled at the last position, and a logit bias.

OpenCLIP describes the image tower by a timm model name only (``vision_cfg.timm_model_name``), so mumo
keeps a table of the timm SigLIP towers it reads (:data:`TIMM_SIGLIP_TOWERS`: heads and activation per
name) and takes every size from the weights themselves. Supported: ``timm_pool='map'`` with
``timm_proj='none'`` (every OpenCLIP SigLIP config); refused by name: SigLIP 2's ``gap`` towers, any other
timm model, a timm projection, text options other than SigLIP's (see :func:`siglip_config_from_open_clip`).

OpenCLIP -> mumo names:
    visual.trunk.patch_embed.proj -> visual.patch_embed.proj     visual.trunk.pos_embed -> visual.pos_embed
    visual.trunk.blocks.i.* -> visual.transformer.blocks.i.*     visual.trunk.norm -> visual.norm
    visual.trunk.attn_pool.* -> visual.attn_pool.*               text.token_embedding -> text.token_embed
    text.positional_embedding -> text.pos_embed                  text.ln_final -> text.norm
    text.transformer.resblocks.i.* -> text.transformer.blocks.i.* (as for CLIP)
    text.text_projection (Linear) -> text_proj                   logit_scale, logit_bias: kept
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from mumo._io import read_json
from mumo.data.sentencepiece_tokenizer import SentencePieceTokenizer
from mumo.data.transforms import SIGLIP_MEAN, SIGLIP_STD
from mumo.errors import CheckpointError, ConfigError
from mumo.interop.open_clip import _BLOCK_RENAMES, _TEXT_DEFAULTS, _number, _single, _tower, load_open_clip
from mumo.models import CLIP, CLIPConfig, TextConfig, VisionConfig

# timm SigLIP image towers -> (num_heads, MLP activation); the sizes are read from the weights. From timm's
# vision_transformer.py: the later (SigLIP 2-era) towers use GELU's tanh form.
TIMM_SIGLIP_TOWERS: dict[str, tuple[int, str]] = {
    **{f"vit_base_patch16_siglip_{r}": (12, "gelu") for r in (224, 256, 384, 512)},
    "vit_base_patch32_siglip_256": (12, "gelu_tanh"),
    "vit_large_patch16_siglip_256": (16, "gelu"),
    "vit_large_patch16_siglip_384": (16, "gelu"),
    "vit_large_patch16_siglip_512": (16, "gelu_tanh"),
    **{f"vit_so400m_patch14_siglip_{r}": (16, "gelu") for r in (224, 378, 384)},
    **{f"vit_so400m_patch16_siglip_{r}": (16, "gelu_tanh") for r in (256, 384, 512)},
    **{f"vit_giantopt_patch16_siglip_{r}": (16, "gelu_tanh") for r in (256, 384)},
}
# text_cfg fields OpenCLIP's SigLIP configs set, with the value mumo computes; anything else is refused.
_TEXT_REQUIRED = {"no_causal_mask": True, "pool_type": "last", "proj_type": "linear", "proj_bias": True}
_TEXT_IGNORED = {"hf_tokenizer_name", "tokenizer_kwargs", "context_length", "vocab_size", "width", "heads",
                 "layers", "mlp_ratio", "norm_kwargs", "act_kwargs", "pad_id", "output_tokens"}  # fmt: skip


def is_siglip(cfg: dict[str, Any]) -> bool:
    """True for an OpenCLIP model config (or ``open_clip_config.json``) whose image tower is a timm model
    with MAP pooling: SigLIP's shape, read by this module rather than the CLIP importer."""
    cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else cfg
    vision = cfg.get("vision_cfg") if isinstance(cfg, dict) else None
    return isinstance(vision, dict) and vision.get("timm_model_name") is not None


def _act(kwargs: Any, where: str) -> str:
    if not kwargs:
        return "gelu"
    if kwargs == {"approximate": "tanh"}:
        return "gelu_tanh"
    raise ConfigError(f"OpenCLIP {where}.act_kwargs={kwargs!r} is not supported (only approximate='tanh' is)")


def _eps(kwargs: Any, where: str) -> float:
    if not kwargs:
        return 1e-5  # torch's LayerNorm default, what OpenCLIP builds without norm_kwargs
    if set(kwargs) != {"eps"}:
        raise ConfigError(f"OpenCLIP {where}.norm_kwargs={kwargs!r} is not supported (only eps is)")
    return _number(kwargs["eps"], f"{where}.norm_kwargs.eps", float)


def _shape(state: dict[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"the OpenCLIP SigLIP weights have no {key}; are they of this config?")
    return tuple(state[key].shape)


def siglip_config_from_open_clip(
    cfg: dict[str, Any], state: dict[str, Tensor], pad_id: int = 1
) -> CLIPConfig:
    """The mumo config of an OpenCLIP SigLIP model: its config (or ``open_clip_config.json``) and weights
    (the image tower's sizes are only in the weights).

    Args:
        pad_id: the tokenizer's padding id. SigLIP's text tower attends to padding, so it must be the id the
            model was trained with (1, ``</s>``, in Google's SigLIP vocabularies).

    Raises:
        ConfigError: the config names a tower or option mumo does not compute exactly (named).
        CheckpointError: a weight the sizes are read from is missing.
    """
    cfg = cfg.get("model_cfg", cfg)
    vision_cfg, text_cfg = _tower(cfg, "vision_cfg"), _tower(cfg, "text_cfg")
    name = vision_cfg.get("timm_model_name")
    if name not in TIMM_SIGLIP_TOWERS:
        raise ConfigError(
            f"OpenCLIP vision_cfg.timm_model_name={name!r} is not a timm SigLIP tower mumo reads; it reads "
            f"{', '.join(sorted(TIMM_SIGLIP_TOWERS))}"
        )
    for key, want in (("timm_pool", "map"), ("timm_proj", "none")):
        if vision_cfg.get(key, "avg" if key == "timm_pool" else "linear") != want:
            raise ConfigError(
                f"OpenCLIP vision_cfg.{key}={vision_cfg.get(key)!r} is not supported (only {want!r})"
            )
    extra = sorted(set(text_cfg) - set(_TEXT_REQUIRED) - _TEXT_IGNORED)
    if extra:
        raise ConfigError(f"OpenCLIP text_cfg.{extra[0]} is not supported for a SigLIP model by mumo")
    for key, want in _TEXT_REQUIRED.items():
        value = text_cfg.get(key, _TEXT_DEFAULTS[key])
        if value != want:
            raise ConfigError(
                f"OpenCLIP text_cfg.{key}={value!r} is not supported for a SigLIP model "
                f"(only {want!r}, SigLIP's text tower)"
            )
    if cfg.get("quick_gelu", False):
        raise ConfigError("OpenCLIP quick_gelu=true is not supported for a SigLIP model")
    heads, vision_act = TIMM_SIGLIP_TOWERS[name]
    width, _, patch, _ = _shape(state, "visual.trunk.patch_embed.proj.weight")
    hidden = _shape(state, "visual.trunk.blocks.0.mlp.fc1.weight")[0]
    depth = len({k.split(".")[3] for k in state if k.startswith("visual.trunk.blocks.")})
    vision = VisionConfig(
        image_size=_single(vision_cfg.get("image_size", 224), "vision_cfg.image_size"),
        patch_size=patch,
        embed_dim=width,
        depth=depth,
        num_heads=heads,
        mlp_ratio=hidden / width,
        mlp_type=vision_act,  # type: ignore[arg-type]
        norm_eps=1e-6,  # timm's SigLIP ViTs: LayerNorm(eps=1e-6)
        patch_bias=True,
        class_token=False,
        norm_pre=False,
        pool="map",
        image_mean=SIGLIP_MEAN,  # SigLIP's weights expect pixels scaled to [-1, 1]
        image_std=SIGLIP_STD,
    )
    t_width = _number(text_cfg.get("width", 512), "text_cfg.width")
    t_hidden = _number(text_cfg.get("mlp_ratio", 4.0), "text_cfg.mlp_ratio", float) * t_width
    text = TextConfig(
        vocab_size=_number(text_cfg.get("vocab_size", 49408), "text_cfg.vocab_size"),
        context_length=_number(text_cfg.get("context_length", 77), "text_cfg.context_length"),
        embed_dim=t_width,
        depth=_number(text_cfg.get("layers", 12), "text_cfg.layers"),
        num_heads=_number(text_cfg.get("heads", 8), "text_cfg.heads"),
        mlp_ratio=t_hidden / t_width,
        mlp_type=_act(text_cfg.get("act_kwargs"), "text_cfg"),  # type: ignore[arg-type]
        norm_eps=_eps(text_cfg.get("norm_kwargs"), "text_cfg"),
        causal=False,
        pool="last",
        pad_id=pad_id,
    )
    for tower, hid in ((vision, hidden), (text, round(t_hidden))):
        if int(tower.embed_dim * tower.mlp_ratio) != hid:  # build_mlp rounds down
            raise ConfigError(f"the MLP width {hid} of width {tower.embed_dim} does not round-trip in mumo")
    bias = cfg.get("init_logit_bias")
    scale = state.get("logit_scale")
    # OpenCLIP does not cap the scale at inference; a learned one above CLIP's cap of 100 stays as it is.
    max_scale = max(math.log(100), float(scale)) if scale is not None else math.log(100)
    return CLIPConfig(
        embed_dim=_number(cfg["embed_dim"], "embed_dim"),
        vision=vision,
        text=text,
        init_logit_scale=math.log(10),  # the weights' value replaces it
        max_logit_scale=max_scale,
        init_logit_bias=_number(bias, "init_logit_bias", float) if bias is not None else -10.0,
        image_proj=False,
        text_proj_bias=True,
    )


def convert_siglip_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an OpenCLIP SigLIP state dict to mumo's names (unknown keys kept, so loading names them)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        if key.startswith("visual.trunk."):
            new = "visual." + key.removeprefix("visual.trunk.")
            new = re.sub(r"^visual\.blocks\.", "visual.transformer.blocks.", new)
        elif key == "text.positional_embedding":
            new, value = "text.pos_embed", value.unsqueeze(0)
        elif key.startswith("text.text_projection."):
            new = "text_proj." + key.removeprefix("text.text_projection.")
        else:
            new = {"text.token_embedding.weight": "text.token_embed.weight"}.get(key, key)
            new = re.sub(r"^text\.ln_final\.", "text.norm.", new)
            for pattern, repl in _BLOCK_RENAMES:
                new = re.sub(pattern, repl, new)
        if key in ("logit_scale", "logit_bias"):
            value = value.reshape(())
        out[new] = value.contiguous()
    return out


def load_open_clip_folder(
    folder: Path, config: Path, weights: Path
) -> tuple[CLIP, SentencePieceTokenizer | None]:
    """An OpenCLIP hub folder's model and, for SigLIP, its tokenizer.

    OpenCLIP names SigLIP's tokenizer by a Hugging Face repository (``text_cfg.hf_tokenizer_name``) that
    it downloads; mumo downloads nothing, so the folder must hold the SentencePiece model itself:
    ``spiece.model`` (+ ``tokenizer_config.json``), as the hub's ``timm/ViT-*-SigLIP*`` repositories do.
    Without it the model loads alone (padding id 1, SigLIP's) and ``mumo embed --texts`` has no tokenizer.
    CLIP folders return no tokenizer here: OpenCLIP's CLIP BPE is not in them.
    """
    tokenizer = None
    if (folder / "spiece.model").is_file() and is_siglip(read_json(config)):
        tokenizer = SentencePieceTokenizer.from_folder(folder, clean="open_clip")
    model = load_open_clip(config, weights, pad_id=tokenizer.pad_id if tokenizer is not None else 1)
    if tokenizer is not None:
        tokenizer.context_length = model.context_length  # the model's, whatever tokenizer_config.json says
    return model, tokenizer
