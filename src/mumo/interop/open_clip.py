"""Import OpenCLIP models: its model config (JSON) and state dict -> a mumo :class:`~mumo.models.CLIP`.

Reads files directly; ``open_clip`` need not be installed. Supported: ViT image towers and the CLIP text
Transformer (GELU or QuickGELU, class-token or mean pooling, with or without ``ln_pre``), with an optional
logit bias. Anything else (ModifiedResNet ``RN*`` towers, timm or Hugging Face towers, attentional
pooling, layer scale, text pooling other than at the end token, ...) is refused by name rather than
loaded as a different model.

OpenCLIP -> mumo names:
    visual.conv1 -> visual.patch_embed.proj          visual.class_embedding -> visual.cls_token
    visual.positional_embedding -> visual.pos_embed  visual.ln_pre / ln_post -> visual.norm_pre / norm
    *.resblocks.i.ln_1 / ln_2 -> *.blocks.i.norm1 / norm2
    *.attn.in_proj_{weight,bias} -> *.attn.qkv.*     *.attn.out_proj -> *.attn.proj
    *.mlp.c_fc / c_proj -> *.mlp.fc1 / fc2           visual.proj (C, E) -> image_proj.weight (E, C)
    token_embedding -> text.token_embed              positional_embedding -> text.pos_embed
    ln_final -> text.norm                            text_projection (C, E) -> text_proj.weight (E, C)
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mumo._io import read_json
from mumo.errors import ConfigError
from mumo.interop._weights import read_state_dict
from mumo.models import CLIP, CLIPConfig, TextConfig, VisionConfig
from mumo.models._pretrained import load_state_dict_strict

# OpenCLIP's CLIPVisionCfg / CLIPTextCfg defaults for the fields we read.
_VISION_DEFAULTS = {
    "layers": 12,
    "width": 768,
    "head_width": 64,
    "mlp_ratio": 4.0,
    "patch_size": 16,
    "image_size": 224,
    "pool_type": "tok",
    "no_ln_pre": False,
    "final_ln_after_pool": False,
}
_TEXT_DEFAULTS = {
    "context_length": 77,
    "vocab_size": 49408,
    "width": 512,
    "heads": 8,
    "layers": 12,
    "mlp_ratio": 4.0,
    "pool_type": "argmax",
    "embed_cls": False,
    "no_causal_mask": False,
    "proj_bias": False,
    "proj_type": "linear",
    "final_ln_after_pool": False,
}
# Options that change the computation in ways mumo does not model; refused when set to a non-default.
_VISION_UNSUPPORTED = {
    "timm_model_name": None,
    "attentional_pool": False,
    "ls_init_value": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
    "pos_embed_type": "learnable",
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": "default",  # "custom": OpenCLIP's CustomResidualAttentionBlock
}
_TEXT_UNSUPPORTED = {
    # mumo pools at the last real token, where "argmax" lands for CLIP-tokenized text; "last" takes the
    # last position whatever the padding, "first" / "eos" / "none" other tokens: each another model
    "pool_type": "argmax",
    "embed_cls": False,
    "no_causal_mask": False,
    "final_ln_after_pool": False,
    "proj_bias": False,
    "proj_type": "linear",
    "hf_model_name": None,
    "ls_init_value": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": "default",  # "custom": OpenCLIP's CustomResidualAttentionBlock
}


def _number(value: Any, name: str, kind: type[int] | type[float] = int) -> Any:
    """``value`` as ``kind``, or a ConfigError naming the field (``int("wide")`` would say nothing)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (kind is int and value != int(value)):
        raise ConfigError(f"OpenCLIP {name}={value!r} is not {'an integer' if kind is int else 'a number'}")
    return kind(value)


def _single(value: Any, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ConfigError(f"OpenCLIP {name} {value} is not square; mumo models square images only")
        value = value[0]
    return _number(value, name)


def _refuse(cfg: dict[str, Any], unsupported: dict[str, Any], tower: str) -> None:
    for key, default in unsupported.items():
        if key in cfg and cfg[key] is not None and cfg[key] != default:
            raise ConfigError(
                f"OpenCLIP {tower}_cfg.{key}={cfg[key]!r} is not supported by mumo's importer"
                + (f" (only {key}={default!r} is)" if default is not None else "")
            )


def _tower(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    tower = cfg.get(key)
    if not isinstance(tower, dict):
        raise ConfigError(f"OpenCLIP {key} must be a JSON object, not {type(tower).__name__}")
    return tower


def clip_config_from_open_clip(cfg: dict[str, Any]) -> CLIPConfig:
    """The mumo config of an OpenCLIP model config (``{"embed_dim", "vision_cfg", "text_cfg", ...}``, or an
    ``open_clip_config.json`` holding it under ``model_cfg``).

    Raises:
        ConfigError: a field is malformed, or names a tower or option mumo does not compute exactly.
    """
    if isinstance(cfg, dict) and "model_cfg" in cfg:
        cfg = cfg["model_cfg"]
    if not isinstance(cfg, dict):
        raise ConfigError(f"an OpenCLIP model config must be a JSON object, not {type(cfg).__name__}")
    if "embed_dim" not in cfg or "vision_cfg" not in cfg or "text_cfg" not in cfg:
        raise ConfigError("an OpenCLIP model config needs 'embed_dim', 'vision_cfg' and 'text_cfg'")
    vision_cfg, text_cfg = _tower(cfg, "vision_cfg"), _tower(cfg, "text_cfg")
    if isinstance(vision_cfg.get("layers"), (list, tuple)):  # open_clip's RN50, RN101, RN50x4, ...
        raise ConfigError(
            f"OpenCLIP vision_cfg.layers={vision_cfg['layers']} is a ModifiedResNet (RN*) image tower; "
            "mumo's importer reads ViT towers only"
        )
    v = {**_VISION_DEFAULTS, **vision_cfg}
    t = {**_TEXT_DEFAULTS, **text_cfg}
    _refuse(vision_cfg, _VISION_UNSUPPORTED, "vision")
    _refuse(text_cfg, _TEXT_UNSUPPORTED, "text")
    if v["pool_type"] not in ("tok", "avg") or v["final_ln_after_pool"]:
        raise ConfigError(
            f"OpenCLIP vision pool_type={v['pool_type']!r} (final_ln_after_pool) is not supported"
        )
    mlp = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    width = _number(v["width"], "vision_cfg.width")
    vision = VisionConfig(
        image_size=_single(v["image_size"], "vision_cfg.image_size"),
        patch_size=_single(v["patch_size"], "vision_cfg.patch_size"),
        embed_dim=width,
        depth=_number(v["layers"], "vision_cfg.layers"),
        num_heads=width // _number(v["head_width"], "vision_cfg.head_width"),
        mlp_ratio=_number(v["mlp_ratio"], "vision_cfg.mlp_ratio", float),
        mlp_type=mlp,
        patch_bias=False,
        class_token=True,
        norm_pre=not v["no_ln_pre"],
        pool="cls" if v["pool_type"] == "tok" else "mean",
    )
    text = TextConfig(
        vocab_size=_number(t["vocab_size"], "text_cfg.vocab_size"),
        context_length=_number(t["context_length"], "text_cfg.context_length"),
        embed_dim=_number(t["width"], "text_cfg.width"),
        depth=_number(t["layers"], "text_cfg.layers"),
        num_heads=_number(t["heads"], "text_cfg.heads"),
        mlp_ratio=_number(t["mlp_ratio"], "text_cfg.mlp_ratio", float),
        mlp_type=mlp,
        causal=True,
        pool="eot",
    )
    bias = cfg.get("init_logit_bias")
    return CLIPConfig(
        embed_dim=_number(cfg["embed_dim"], "embed_dim"),
        vision=vision,
        text=text,
        init_logit_scale=_number(cfg.get("init_logit_scale", math.log(1 / 0.07)), "init_logit_scale", float),
        init_logit_bias=_number(bias, "init_logit_bias", float) if bias is not None else None,
    )


_BLOCK_RENAMES = [
    (r"\.resblocks\.(\d+)\.ln_1\.", r".blocks.\1.norm1."),
    (r"\.resblocks\.(\d+)\.ln_2\.", r".blocks.\1.norm2."),
    (r"\.resblocks\.(\d+)\.attn\.in_proj_weight$", r".blocks.\1.attn.qkv.weight"),
    (r"\.resblocks\.(\d+)\.attn\.in_proj_bias$", r".blocks.\1.attn.qkv.bias"),
    (r"\.resblocks\.(\d+)\.attn\.out_proj\.", r".blocks.\1.attn.proj."),
    (r"\.resblocks\.(\d+)\.mlp\.c_fc\.", r".blocks.\1.mlp.fc1."),
    (r"\.resblocks\.(\d+)\.mlp\.c_proj\.", r".blocks.\1.mlp.fc2."),
]


def convert_open_clip_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and reshape where layouts differ) an OpenCLIP CLIP state dict to mumo's names.

    Keys mumo has no use for (the text tower's cached causal mask) are dropped; every other unknown key
    is kept under its own name so that loading reports it.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "attn_mask":  # a cached causal mask buffer, not a weight
            continue
        new = key
        if key == "visual.class_embedding":
            new, value = "visual.cls_token", value.reshape(1, 1, -1)
        elif key == "visual.positional_embedding":
            new, value = "visual.pos_embed", value.unsqueeze(0)
        elif key == "positional_embedding":
            new, value = "text.pos_embed", value.unsqueeze(0)
        elif key == "visual.proj":
            new, value = "image_proj.weight", value.T
        elif key == "text_projection":
            new, value = "text_proj.weight", value.T
        else:
            new = {
                "visual.conv1.weight": "visual.patch_embed.proj.weight",
                "visual.ln_pre.weight": "visual.norm_pre.weight",
                "visual.ln_pre.bias": "visual.norm_pre.bias",
                "visual.ln_post.weight": "visual.norm.weight",
                "visual.ln_post.bias": "visual.norm.bias",
                "token_embedding.weight": "text.token_embed.weight",
                "ln_final.weight": "text.norm.weight",
                "ln_final.bias": "text.norm.bias",
            }.get(key, key)
            if new.startswith("transformer."):
                new = "text." + new
            for pattern, repl in _BLOCK_RENAMES:
                new = re.sub(pattern, repl, new)
        out[new] = value.contiguous()
    return out


def load_open_clip(
    config: str | Path | dict[str, Any], weights: str | Path | dict[str, Tensor], pad_id: int = 1
) -> CLIP:
    """Build a mumo CLIP from an OpenCLIP model config and weights, with every key checked. SigLIP models
    (a timm image tower with MAP pooling) are read by :mod:`mumo.interop.open_clip_siglip`.

    Args:
        config: the model config as a dict, or a JSON file (a model config or ``open_clip_config.json``).
        weights: a ``.safetensors`` / ``.bin`` / ``.pt`` file, or a state dict.
        pad_id: SigLIP only: its tokenizer's padding id (its text tower attends to padding); CLIP ignores it.

    Returns:
        The model in eval mode. Its text tower pools at the last real token, which is where OpenCLIP's
        argmax pooling lands for CLIP-tokenized text; pass the tokenizer's attention mask.

    Raises:
        ConfigError: the config is not a JSON file or describes a model mumo cannot compute exactly.
        CheckpointError: the weights cannot be read or do not match the config.
    """
    if not isinstance(config, dict):
        path = Path(config)
        if not path.is_file():  # often a model name, which is a file in open_clip's package
            name = path.name if path.suffix == ".json" else f"{path.name}.json"
            raise ConfigError(
                f"OpenCLIP config {str(config)!r} is not a file; pass the model's JSON config "
                f"(for a model name, open_clip's model_configs/{name})"
            )
        config = read_json(path)
    # open_clip_siglip builds on this module's helpers: imported here, not at the top, to break the cycle.
    from mumo.interop import open_clip_siglip as siglip_import

    siglip = siglip_import.is_siglip(config)
    mumo_config = None if siglip else clip_config_from_open_clip(config)  # refuses before reading weights
    state = weights if isinstance(weights, dict) else read_state_dict(weights)
    if siglip:
        mumo_config = siglip_import.siglip_config_from_open_clip(config, state, pad_id)
        state = siglip_import.convert_siglip_state_dict(state)
    else:
        state = convert_open_clip_state_dict(state)
    model = CLIP(mumo_config)
    source = "OpenCLIP state dict" if isinstance(weights, dict) else str(weights)
    with torch.no_grad():
        load_state_dict_strict(model, state, source)
    return model.eval()
