"""Hugging Face ``CLIPModel`` folders <-> mumo :class:`~mumo.models.CLIP`, both ways, without transformers.

A folder holds ``config.json`` (model_type "clip") and ``model.safetensors`` (or ``pytorch_model.bin``).
HF keeps separate q / k / v projections where mumo packs them into one ``qkv`` matrix; everything else is
a rename. Converting mumo -> HF -> mumo gives back the same tensors exactly.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from mumo._io import atomic_write, atomic_write_json, read_json
from mumo.data.clip_tokenizer import ClipTokenizer
from mumo.data.tokenizer import Tokenizer
from mumo.data.transforms import CLIP_MEAN, CLIP_STD
from mumo.errors import ConfigError
from mumo.interop._weights import hf_weights_file, read_state_dict
from mumo.models import CLIP, CLIPConfig, TextConfig, VisionConfig
from mumo.models._pretrained import load_state_dict_strict

_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}  # HF hidden_act -> mumo mlp_type (both exact)

# (mumo pattern, HF pattern) for one-to-one renames; {t} is the tower prefix pair, {i} a block index.
_TOWERS = (("visual", "vision_model"), ("text", "text_model"))
_BLOCK = [
    ("norm1", "layer_norm1"),
    ("norm2", "layer_norm2"),
    ("attn.proj", "self_attn.out_proj"),
    ("mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2"),
]
_FLAT = {
    "visual.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.norm_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.norm_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.norm.weight": "vision_model.post_layernorm.weight",
    "visual.norm.bias": "vision_model.post_layernorm.bias",
    "text.token_embed.weight": "text_model.embeddings.token_embedding.weight",
    "text.norm.weight": "text_model.final_layer_norm.weight",
    "text.norm.bias": "text_model.final_layer_norm.bias",
    "image_proj.weight": "visual_projection.weight",
    "text_proj.weight": "text_projection.weight",
    "logit_scale": "logit_scale",
}


def clip_config_from_hf(hf: dict[str, Any]) -> CLIPConfig:
    """The mumo config of a Hugging Face CLIP ``config.json`` dict.

    Inside ``vision_config`` / ``text_config`` a missing field takes transformers' default, as
    ``CLIPModel.from_pretrained`` would; the two tower configs themselves must be there. Without them
    every field would be a default, and a config of another format that also says model_type "clip"
    (a mumo folder's) would load as a different model (QuickGELU for GELU), so it is refused instead.
    """
    if not isinstance(hf, dict):
        raise ConfigError(f"a Hugging Face config must be a JSON object, not {type(hf).__name__}")
    if "mumo_version" in hf or ("vision" in hf and "text" in hf):
        raise ConfigError(
            "this is a mumo model config, not a Hugging Face CLIP one; load it with load_pretrained "
            "(mumo convert --from mumo)"
        )
    if hf.get("model_type") != "clip":
        raise ConfigError(
            f"expected a Hugging Face config with model_type 'clip', got {hf.get('model_type')!r}"
        )
    for key in ("vision_config", "text_config"):
        if not isinstance(hf.get(key), dict):
            raise ConfigError(f"the Hugging Face CLIP config has no {key}; is it a CLIPModel config.json?")
    v, t = hf["vision_config"], hf["text_config"]
    for tower, where in ((v, "vision_config"), (t, "text_config")):
        act = tower.get("hidden_act", "quick_gelu")
        if not isinstance(act, str) or act not in _ACTS:
            raise ConfigError(f"{where}.hidden_act={act!r} is not supported; mumo has {sorted(_ACTS)}")
    vw = _positive(v, "hidden_size", 768, "vision_config")
    tw = _positive(t, "hidden_size", 512, "text_config")
    vision = VisionConfig(
        image_size=v.get("image_size", 224),
        patch_size=v.get("patch_size", 32),
        embed_dim=vw,
        depth=v.get("num_hidden_layers", 12),
        num_heads=v.get("num_attention_heads", 12),
        mlp_ratio=_positive(v, "intermediate_size", 3072, "vision_config") / vw,
        mlp_type=_ACTS[v.get("hidden_act", "quick_gelu")],
        norm_eps=float(_positive(v, "layer_norm_eps", 1e-5, "vision_config")),
        patch_bias=False,
    )
    text = TextConfig(
        vocab_size=t.get("vocab_size", 49408),
        context_length=t.get("max_position_embeddings", 77),
        embed_dim=tw,
        depth=t.get("num_hidden_layers", 12),
        num_heads=t.get("num_attention_heads", 8),
        mlp_ratio=_positive(t, "intermediate_size", 2048, "text_config") / tw,
        mlp_type=_ACTS[t.get("hidden_act", "quick_gelu")],
        norm_eps=float(_positive(t, "layer_norm_eps", 1e-5, "text_config")),
    )
    return CLIPConfig(
        embed_dim=hf.get("projection_dim", 512),
        vision=vision,
        text=text,
        init_logit_scale=float(_number(hf, "logit_scale_init_value", math.log(1 / 0.07), "config")),
    )


def _number(cfg: dict[str, Any], key: str, default: float, where: str) -> Any:
    """``cfg[key]`` (transformers' ``default`` when absent), checked before arithmetic meets it."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"Hugging Face CLIP {where}.{key}={value!r} is not a number")
    return value


def _positive(cfg: dict[str, Any], key: str, default: float, where: str) -> Any:
    value = _number(cfg, key, default, where)
    if value <= 0:
        raise ConfigError(f"Hugging Face CLIP {where}.{key}={value!r} must be positive")
    return value


def hf_config_from_mumo(config: CLIPConfig, eos_token_id: int, bos_token_id: int, pad_token_id: int) -> dict:
    """A Hugging Face CLIP ``config.json`` dict for a mumo config, or a ConfigError naming what HF lacks."""
    v, t = config.vision, config.text
    checks = [
        (v.kind == "vit", "HF CLIPModel has only ViT image towers; export a conv encoder to ONNX instead"),
        (
            v.class_token and v.pool == "cls" and v.norm_pre and not v.patch_bias,
            "HF CLIP's ViT needs a class "
            "token, class-token pooling, a pre-norm and a bias-free patch projection",
        ),
        (v.pos_embed == "learned" and t.pos_embed == "learned", "HF CLIP needs learned position embeddings"),
        (t.causal and t.pool == "eot", "HF CLIP's text tower is causal and pools at the end token"),
        (v.norm_type == t.norm_type == "layernorm", "HF CLIP uses LayerNorm"),
        (v.mlp_type in _ACTS and t.mlp_type in _ACTS, "HF CLIP has no SwiGLU"),
        (v.qkv_bias and t.qkv_bias, "HF CLIP's attention projections have biases"),
        (config.init_logit_bias is None, "HF CLIPModel has no logit bias (SigLIP is another architecture)"),
        (eos_token_id != 2, "HF CLIP treats eos_token_id 2 as 'pool at the largest id'; use another end id"),
    ]
    for ok, why in checks:
        if not ok:
            raise ConfigError(f"cannot export to Hugging Face CLIP: {why}")
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.init_logit_scale,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.embed_dim,
            "intermediate_size": int(t.embed_dim * t.mlp_ratio),
            "num_hidden_layers": t.depth,
            "num_attention_heads": t.num_heads,
            "max_position_embeddings": t.context_length,
            "hidden_act": t.mlp_type,
            "layer_norm_eps": t.norm_eps,
            "projection_dim": config.embed_dim,
            "eos_token_id": eos_token_id,
            "bos_token_id": bos_token_id,
            "pad_token_id": pad_token_id,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": v.embed_dim,
            "intermediate_size": int(v.embed_dim * v.mlp_ratio),
            "num_hidden_layers": v.depth,
            "num_attention_heads": v.num_heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": v.in_chans,
            "hidden_act": v.mlp_type,
            "layer_norm_eps": v.norm_eps,
            "projection_dim": config.embed_dim,
        },
    }


def _block_names(mumo_prefix: str, hf_prefix: str, i: int) -> list[tuple[str, str]]:
    pairs = []
    for ours, theirs in _BLOCK:
        for p in ("weight", "bias"):
            pairs.append(
                (
                    f"{mumo_prefix}.transformer.blocks.{i}.{ours}.{p}",
                    f"{hf_prefix}.encoder.layers.{i}.{theirs}.{p}",
                )
            )
    return pairs


def hf_state_dict_to_mumo(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a HF CLIPModel state dict to mumo's names, packing q/k/v into ``qkv``."""
    back = {hf: ours for ours, hf in _FLAT.items()}
    out: dict[str, Tensor] = {}
    packed: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):  # a buffer of arange, not a weight
            continue
        if key in back:
            out[back[key]] = value
            continue
        if key == "vision_model.embeddings.class_embedding":
            out["visual.cls_token"] = value.reshape(1, 1, -1)
            continue
        m = re.fullmatch(r"(vision|text)_model\.embeddings\.position_embedding\.weight", key)
        if m:
            out[f"{'visual' if m[1] == 'vision' else 'text'}.pos_embed"] = value.unsqueeze(0)
            continue
        m = re.fullmatch(
            r"(vision|text)_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key
        )
        if m:
            tower = "visual" if m[1] == "vision" else "text"
            packed.setdefault(f"{tower}.transformer.blocks.{m[2]}.attn.qkv.{m[4]}", {})[m[3]] = value
            continue
        m = re.fullmatch(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if m:
            tower = "visual" if m[1] == "vision" else "text"
            ours = {theirs: o for o, theirs in _BLOCK}.get(m[3])
            if ours is not None:
                out[f"{tower}.transformer.blocks.{m[2]}.{ours}.{m[4]}"] = value
                continue
        out[key] = value  # unknown: kept so that loading names it
    for name, parts in packed.items():
        if set(parts) != {"q", "k", "v"}:
            raise ConfigError(f"{name}: HF weights have only the {sorted(parts)} projections")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {k: v.contiguous() for k, v in out.items()}


def mumo_state_dict_to_hf(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`hf_state_dict_to_mumo`."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in _FLAT:
            out[_FLAT[key]] = value
        elif key == "visual.cls_token":
            out["vision_model.embeddings.class_embedding"] = value.reshape(-1)
        elif key in ("visual.pos_embed", "text.pos_embed"):
            tower = "vision_model" if key.startswith("visual") else "text_model"
            out[f"{tower}.embeddings.position_embedding.weight"] = value.squeeze(0)
        elif m := re.fullmatch(r"(visual|text)\.transformer\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key):
            tower = "vision_model" if m[1] == "visual" else "text_model"
            for name, part in zip("qkv", value.chunk(3), strict=True):
                out[f"{tower}.encoder.layers.{m[2]}.self_attn.{name}_proj.{m[3]}"] = part
        elif m := re.fullmatch(r"(visual|text)\.transformer\.blocks\.(\d+)\.(.+)\.(weight|bias)", key):
            tower = "vision_model" if m[1] == "visual" else "text_model"
            theirs = dict(_BLOCK).get(m[3])
            if theirs is None:
                raise ConfigError(f"{key} has no place in a Hugging Face CLIPModel")
            out[f"{tower}.encoder.layers.{m[2]}.{theirs}.{m[4]}"] = value
        else:
            raise ConfigError(f"{key} has no place in a Hugging Face CLIPModel")
    return {k: v.contiguous() for k, v in out.items()}


def load_hf_clip(folder: str | Path) -> CLIP:
    """Build a mumo CLIP from a Hugging Face CLIP folder, every key checked; returned in eval mode."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    data = read_json(path)
    try:
        config = clip_config_from_hf(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    weights = hf_weights_file(folder)
    model = CLIP(config)
    with torch.no_grad():
        load_state_dict_strict(model, hf_state_dict_to_mumo(read_state_dict(weights)), str(weights))
    return model.eval()


def _special_tokens(tokenizer: Tokenizer | ClipTokenizer) -> dict[str, str]:
    """The special tokens' names for ``tokenizer_config.json``: names the vocabulary lacks would be added
    as new ids (49408, … past the embedding table), so they are read from the tokenizer itself."""
    if isinstance(tokenizer, ClipTokenizer):
        # OpenCLIP pads with id 0, the text '!'; named as the pad token it would also be cut out of
        # captions. HF's own CLIP tokenizers pad with the end token; the attention masks agree.
        return {
            "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eot_token,
            "pad_token": tokenizer.eot_token,
        }
    names = {k: tokenizer.id_to_token(i) for k, i in (("bos", tokenizer.bos_id), ("eos", tokenizer.eot_id))}
    return {f"{k}_token": v for k, v in names.items()} | {
        "pad_token": tokenizer.id_to_token(tokenizer.pad_id)
    }


def save_hf_clip(model: CLIP, folder: str | Path, tokenizer: Tokenizer | ClipTokenizer | None = None) -> Path:
    """Write ``model`` as a Hugging Face CLIP folder that ``transformers.CLIPModel.from_pretrained`` loads.

    With a tokenizer (mumo's BPE or the CLIP one), its ``tokenizer.json`` and a ``tokenizer_config.json``
    are written too: ``AutoTokenizer`` then gives the ids mumo gives (``<bos> … <eot>``), and the end
    token becomes the model's ``eos_token_id``.
    """

    if model.config.text.arch != "mumo":
        raise ConfigError(f"Hugging Face CLIP has its own text tower, not text.arch={model.config.text.arch}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = (
        (tokenizer.eot_id, tokenizer.bos_id, tokenizer.pad_id) if tokenizer is not None else (49407, 49406, 0)
    )
    hf_config = hf_config_from_mumo(model.config, *ids)
    state = mumo_state_dict_to_hf({k: v.detach().cpu() for k, v in model.state_dict().items()})
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    size = model.config.vision.image_size
    mean, std = model.image_normalization or (CLIP_MEAN, CLIP_STD)
    atomic_write_json(
        folder / "preprocessor_config.json",
        {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": size},
            "do_center_crop": True,
            "crop_size": {"height": size, "width": size},
            "do_normalize": True,
            "image_mean": list(mean),
            "image_std": list(std),
            "do_convert_rgb": True,
        },
    )
    if tokenizer is not None:
        atomic_write(folder / "tokenizer.json", tokenizer.save)  # frames text as <bos> … <eot>
        atomic_write_json(
            folder / "tokenizer_config.json",
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": model.config.text.context_length,
            }
            | _special_tokens(tokenizer),
        )
    atomic_write_json(folder / "config.json", hf_config)
    return folder
