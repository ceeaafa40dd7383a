"""Hugging Face ``SiglipModel`` folders <-> mumo :class:`~mumo.models.CLIP` in SigLIP's shape, both ways,
without transformers.

A folder holds ``config.json`` (model_type "siglip"), ``model.safetensors`` (or ``pytorch_model.bin``) and,
for texts, ``spiece.model`` + ``tokenizer_config.json``. The towers are CLIP's Transformers (renamed as in
:mod:`mumo.interop.hf_clip`, q/k/v packed into one ``qkv``) plus:

    vision_model.embeddings.patch_embedding.bias -> visual.patch_embed.proj.bias
    vision_model.head.probe -> visual.attn_pool.latent
    vision_model.head.attention.in_proj_{weight,bias} [q; k; v] -> visual.attn_pool.q.* and .kv.* ([k; v])
    vision_model.head.attention.out_proj -> visual.attn_pool.proj
    vision_model.head.layernorm / mlp -> visual.attn_pool.norm / mlp
    text_model.head -> text_proj                         logit_scale, logit_bias (1,) -> () each

HF's text tower pools at the last of its positions and attends to every token: call it with ids padded
to ``max_position_embeddings`` with the pad id and no attention mask, as SiglipProcessor does (mumo's
tower pads so itself, whatever mask it is given).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from mumo._io import atomic_write, atomic_write_json, read_json
from mumo.data.sentencepiece_tokenizer import SentencePieceTokenizer
from mumo.data.transforms import SIGLIP_MEAN, SIGLIP_STD
from mumo.errors import ConfigError
from mumo.interop._weights import hf_weights_file, read_state_dict
from mumo.interop.hf_clip import hf_state_dict_to_mumo, mumo_state_dict_to_hf
from mumo.models import CLIP, CLIPConfig, TextConfig, VisionConfig
from mumo.models._pretrained import load_state_dict_strict

# HF hidden_act -> mumo mlp_type; gelu_new is the same tanh formula as gelu_pytorch_tanh
_ACTS = {
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu": "gelu",
    "quick_gelu": "quick_gelu",
}
_HF_ACT = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}


def _get(cfg: dict[str, Any], key: str, default: Any, where: str, kind: type = int) -> Any:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"Hugging Face SigLIP {where}.{key}={value!r} is not a positive number")
    if kind is int and value != int(value):
        raise ConfigError(f"Hugging Face SigLIP {where}.{key}={value!r} is not an integer")
    return kind(value)


def _act(cfg: dict[str, Any], where: str) -> str:
    act = cfg.get("hidden_act", "gelu_pytorch_tanh")
    if act not in _ACTS:
        raise ConfigError(
            f"Hugging Face SigLIP {where}.hidden_act={act!r} is not supported; mumo has {sorted(_ACTS)}"
        )
    return _ACTS[act]


def siglip_config_from_hf(hf: dict[str, Any]) -> CLIPConfig:
    """The mumo config of a Hugging Face SigLIP ``config.json`` dict (transformers' defaults fill the
    fields a tower config leaves out).

    Raises:
        ConfigError: not a SigLIP config, or one mumo does not compute exactly (named).
    """
    if not isinstance(hf, dict) or hf.get("model_type") != "siglip":
        got = hf.get("model_type") if isinstance(hf, dict) else type(hf).__name__
        raise ConfigError(f"expected a Hugging Face config with model_type 'siglip', got {got!r}")
    for key in ("vision_config", "text_config"):
        if not isinstance(hf.get(key), dict):
            raise ConfigError(
                f"the Hugging Face SigLIP config has no {key}; is it a SiglipModel config.json?"
            )
    v, t = hf["vision_config"], hf["text_config"]
    if not v.get("vision_use_head", True):
        raise ConfigError(
            "Hugging Face SigLIP vision_config.vision_use_head=false (no MAP head) is not supported"
        )
    vw = _get(v, "hidden_size", 768, "vision_config")
    tw = _get(t, "hidden_size", 768, "text_config")
    projection = _get(t, "projection_size", tw, "text_config")
    if projection != vw:
        raise ConfigError(
            f"text_config.projection_size {projection} differs from vision_config.hidden_size {vw}; the "
            "image and text embeddings of such a model do not share a space mumo can hold"
        )
    vision = VisionConfig(
        image_size=_get(v, "image_size", 224, "vision_config"),
        in_chans=_get(v, "num_channels", 3, "vision_config"),
        patch_size=_get(v, "patch_size", 16, "vision_config"),
        embed_dim=vw,
        depth=_get(v, "num_hidden_layers", 12, "vision_config"),
        num_heads=_get(v, "num_attention_heads", 12, "vision_config"),
        mlp_ratio=_get(v, "intermediate_size", 3072, "vision_config") / vw,
        mlp_type=_act(v, "vision_config"),  # type: ignore[arg-type]
        norm_eps=_get(v, "layer_norm_eps", 1e-6, "vision_config", float),
        patch_bias=True,
        class_token=False,
        norm_pre=False,
        pool="map",
        image_mean=SIGLIP_MEAN,  # SigLIP's weights expect pixels scaled to [-1, 1]
        image_std=SIGLIP_STD,
    )
    text = TextConfig(
        vocab_size=_get(t, "vocab_size", 32000, "text_config"),
        context_length=_get(t, "max_position_embeddings", 64, "text_config"),
        embed_dim=tw,
        depth=_get(t, "num_hidden_layers", 12, "text_config"),
        num_heads=_get(t, "num_attention_heads", 12, "text_config"),
        mlp_ratio=_get(t, "intermediate_size", 3072, "text_config") / tw,
        mlp_type=_act(t, "text_config"),  # type: ignore[arg-type]
        norm_eps=_get(t, "layer_norm_eps", 1e-6, "text_config", float),
        causal=False,
        pool="last",
        pad_id=int(t.get("pad_token_id", 1)),
    )
    return CLIPConfig(
        embed_dim=vw,
        vision=vision,
        text=text,
        init_logit_scale=math.log(10),  # the weights' values replace both
        init_logit_bias=-10.0,
        image_proj=False,
        text_proj_bias=True,
    )


def hf_siglip_state_dict_to_mumo(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a HF SiglipModel state dict to mumo's names (see the module docstring)."""
    out: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    for key, value in state.items():
        head = key.removeprefix("vision_model.head.")
        if key in ("logit_scale", "logit_bias"):
            out[key] = value.reshape(())
        elif key == "vision_model.embeddings.patch_embedding.bias":
            out["visual.patch_embed.proj.bias"] = value
        elif key.startswith("text_model.head."):
            out["text_proj." + key.removeprefix("text_model.head.")] = value
        elif head == "probe":
            out["visual.attn_pool.latent"] = value
        elif head in ("attention.in_proj_weight", "attention.in_proj_bias"):
            c = value.shape[0] // 3
            part = head.rpartition("_")[2]  # weight | bias
            out[f"visual.attn_pool.q.{part}"], out[f"visual.attn_pool.kv.{part}"] = value[:c], value[c:]
        elif head != key:  # out_proj, layernorm, mlp
            head = head.replace("attention.out_proj.", "proj.").replace("layernorm.", "norm.")
            out["visual.attn_pool." + head] = value
        else:
            rest[key] = value
    return {**hf_state_dict_to_mumo(rest), **{k: v.contiguous() for k, v in out.items()}}


def mumo_state_dict_to_hf_siglip(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`hf_siglip_state_dict_to_mumo`."""
    out: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    pool = {
        k.removeprefix("visual.attn_pool."): v for k, v in state.items() if k.startswith("visual.attn_pool.")
    }
    for part in ("weight", "bias"):
        out[f"vision_model.head.attention.in_proj_{part}"] = torch.cat(
            [pool.pop(f"q.{part}"), pool.pop(f"kv.{part}")]
        )
    out["vision_model.head.probe"] = pool.pop("latent")
    for key, value in pool.items():  # proj, norm, mlp
        key = key.replace("proj.", "attention.out_proj.", 1) if key.startswith("proj.") else key
        out["vision_model.head." + key.replace("norm.", "layernorm.", 1)] = value
    for key, value in state.items():
        if key.startswith("visual.attn_pool."):
            continue
        if key in ("logit_scale", "logit_bias"):
            out[key] = value.reshape(1)
        elif key == "visual.patch_embed.proj.bias":
            out["vision_model.embeddings.patch_embedding.bias"] = value
        elif key.startswith("text_proj."):
            out["text_model.head." + key.removeprefix("text_proj.")] = value
        else:
            rest[key] = value
    return {**mumo_state_dict_to_hf(rest), **{k: v.contiguous() for k, v in out.items()}}


def load_hf_siglip(folder: str | Path) -> tuple[CLIP, SentencePieceTokenizer | None]:
    """A mumo model from a Hugging Face SigLIP folder, every key checked, in eval mode; and its tokenizer
    when the folder holds ``spiece.model``."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    try:
        config = siglip_config_from_hf(read_json(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    weights = hf_weights_file(folder)
    state = read_state_dict(weights)
    if "logit_scale" in state:  # HF does not cap the scale; keep a learned one above CLIP's 100
        config = config.replace(max_logit_scale=max(config.max_logit_scale, float(state["logit_scale"])))
    model = CLIP(config)
    with torch.no_grad():
        load_state_dict_strict(model, hf_siglip_state_dict_to_mumo(state), str(weights))
    tokenizer = None
    if (folder / "spiece.model").is_file():
        tokenizer = SentencePieceTokenizer.from_folder(folder, context_length=config.text.context_length)
    return model.eval(), tokenizer


def hf_siglip_config_from_mumo(config: CLIPConfig, eos_token_id: int = 1) -> dict[str, Any]:
    """A Hugging Face SigLIP ``config.json`` dict, or a ConfigError naming what SiglipModel lacks."""
    v, t = config.vision, config.text
    checks = [
        (v.kind == "vit" and v.pool == "map", "SiglipModel's image tower is a ViT pooled by a MAP head"),
        (
            not v.class_token and not v.norm_pre and v.patch_bias,
            "SiglipModel's ViT has no class token or pre-norm and a biased patch projection",
        ),  # fmt: skip
        (t.pool == "last" and not t.causal, "SiglipModel's text tower is bidirectional, pooled at the end"),
        (v.pos_embed == "learned" and t.pos_embed == "learned", "SiglipModel needs learned positions"),
        (v.norm_type == t.norm_type == "layernorm", "SiglipModel uses LayerNorm"),
        (v.mlp_type in _HF_ACT and t.mlp_type in _HF_ACT, "SiglipModel has no SwiGLU"),
        (v.qkv_bias and t.qkv_bias, "SiglipModel's attention projections have biases"),
        (
            not config.image_proj and config.text_proj_bias,
            "SiglipModel has no image projection and a biased text head",
        ),  # fmt: skip
        (config.init_logit_bias is not None, "SiglipModel has a logit bias; this model has none"),
        (t.arch == "mumo", f"SiglipModel has its own text tower, not text.arch={t.arch}"),
    ]
    for ok, why in checks:
        if not ok:
            raise ConfigError(f"cannot export to Hugging Face SigLIP: {why}")
    return {
        "architectures": ["SiglipModel"],
        "model_type": "siglip",
        "text_config": {
            "model_type": "siglip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.embed_dim,
            "intermediate_size": int(t.embed_dim * t.mlp_ratio),
            "num_hidden_layers": t.depth,
            "num_attention_heads": t.num_heads,
            "max_position_embeddings": t.context_length,
            "hidden_act": _HF_ACT[t.mlp_type],
            "layer_norm_eps": t.norm_eps,
            "projection_size": config.embed_dim,
            "pad_token_id": t.pad_id,
            "eos_token_id": eos_token_id,
            "bos_token_id": None,  # SigLIP's texts have no start token
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": v.embed_dim,
            "intermediate_size": int(v.embed_dim * v.mlp_ratio),
            "num_hidden_layers": v.depth,
            "num_attention_heads": v.num_heads,
            "num_channels": v.in_chans,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "hidden_act": _HF_ACT[v.mlp_type],
            "layer_norm_eps": v.norm_eps,
            "vision_use_head": True,
        },
    }


def save_hf_siglip(model: CLIP, folder: str | Path, tokenizer: SentencePieceTokenizer | None = None) -> Path:
    """Write ``model`` as a folder that ``transformers.SiglipModel.from_pretrained`` loads; with a
    SentencePiece tokenizer, also ``spiece.model`` + ``tokenizer_config.json`` for ``SiglipTokenizer``.

    The logit scale is written capped as mumo computes it (HF applies no cap)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    eos = tokenizer.eot_id if tokenizer is not None else 1
    hf_config = hf_siglip_config_from_mumo(model.config, eos_token_id=eos)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state["logit_scale"] = state["logit_scale"].clamp(max=model.config.max_logit_scale)
    state = mumo_state_dict_to_hf_siglip(state)
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    size = model.config.vision.image_size
    atomic_write_json(
        folder / "preprocessor_config.json",
        {
            "image_processor_type": "SiglipImageProcessor",
            "do_resize": True,
            "size": {"height": size, "width": size},
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],  # SigLIP's normalization, to [-1, 1]
            "image_std": [0.5, 0.5, 0.5],
        },
    )
    if tokenizer is not None:
        atomic_write(folder / "spiece.model", lambda p: p.write_bytes(tokenizer.model_proto))
        atomic_write_json(
            folder / "tokenizer_config.json",
            {
                "tokenizer_class": "SiglipTokenizer",
                "model_max_length": model.config.text.context_length,
                "do_lower_case": tokenizer.lowercase,
                "eos_token": tokenizer.eos_token,
                "pad_token": tokenizer.pad_token,
                "unk_token": tokenizer.unk_token,
            },
        )
    atomic_write_json(folder / "config.json", hf_config)
    return folder


def is_hf_siglip_folder(folder: str | Path) -> bool:
    """True when ``folder/config.json`` says model_type "siglip" (a ``SiglipModel`` folder)."""
    path = Path(folder) / "config.json"
    try:
        return path.is_file() and read_json(path).get("model_type") == "siglip"
    except (ConfigError, AttributeError):  # not JSON, or not an object: the CLIP reader says so
        return False


def is_siglip_model(model: CLIP) -> bool:
    """True for a model in SigLIP's shape (a MAP-pooled image tower), which exports as ``SiglipModel``."""
    return model.config.vision.kind == "vit" and model.config.vision.pool == "map"
