"""Reference SigLIP models for the interop tests, random init with noise on every parameter (so zero biases
and unit norm scales are tested too), tiny and offline."""

import pytest
import torch

TIMM_NAME = "vit_tiny_patch8_siglip_32"  # registered with timm here; mumo's table is given it per test
SIGLIP_CFG = {  # OpenCLIP's ViT-B-16-SigLIP.json in small
    "embed_dim": 48,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {
        "image_size": 32,
        "timm_model_name": TIMM_NAME,
        "timm_model_pretrained": False,
        "timm_pool": "map",
        "timm_proj": "none",
    },
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 160,
        "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
        "tokenizer_kwargs": {"clean": "canonicalize"},
        "width": 32,
        "heads": 2,
        "layers": 2,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": 1e-6},
    },
}


def _register_tiny_timm_siglip() -> None:
    timm = pytest.importorskip("timm")
    from timm.models import register_model
    from timm.models.vision_transformer import _create_vision_transformer

    if TIMM_NAME in timm.list_models(TIMM_NAME):
        return

    def vit_tiny_patch8_siglip_32(pretrained: bool = False, **kwargs):
        args = dict(patch_size=8, embed_dim=48, depth=2, num_heads=3, class_token=False, global_pool="map")
        return _create_vision_transformer(
            "vit_base_patch16_siglip_224", pretrained=pretrained, **dict(args, img_size=32, **kwargs)
        )

    vit_tiny_patch8_siglip_32.__name__ = TIMM_NAME
    register_model(vit_tiny_patch8_siglip_32)


def add_noise(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


@pytest.fixture
def open_clip_siglip(monkeypatch):
    """(OpenCLIP CustomTextCLIP, its config) with the tiny timm tower known to mumo's importer."""
    open_clip = pytest.importorskip("open_clip")
    from mumo.interop import open_clip_siglip

    _register_tiny_timm_siglip()
    monkeypatch.setitem(open_clip_siglip.TIMM_SIGLIP_TOWERS, TIMM_NAME, (3, "gelu"))
    torch.manual_seed(0)
    ref = open_clip.CustomTextCLIP(
        embed_dim=48,
        vision_cfg=SIGLIP_CFG["vision_cfg"],
        text_cfg=SIGLIP_CFG["text_cfg"],
        init_logit_bias=-10,
    )
    return add_noise(ref), SIGLIP_CFG


def siglip_texts(vocab: int, length: int, pad_id: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Right-padded ids (3, length) as SigLIP's tokenizer pads them: real tokens, </s> (1), then pad_id."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (3, length), generator=gen)
    mask = torch.zeros_like(ids)
    for row, n in enumerate((length, 7, 2)):
        ids[row, n - 1] = 1
        ids[row, n:] = pad_id
        mask[row, :n] = 1
    return ids, mask
