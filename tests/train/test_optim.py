import math

import pytest
import torch

import mumo
from mumo.train.config import OptimConfig
from mumo.train.optim import build_optimizer, build_scheduler, cosine_with_warmup, param_groups


def test_no_decay_on_norms_biases_embeddings_and_temperature():
    model = mumo.create_model("clip_vit_tiny", seed=0)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "text.transformer.blocks.0.attn.qkv.weight" in decayed and "image_proj.weight" in decayed
    for name in (
        "logit_scale",
        "text.token_embed.weight",
        "text.pos_embed",
        "visual.cls_token",
        "visual.norm.weight",
        "visual.norm.bias",
        "text.transformer.blocks.0.mlp.fc1.bias",
    ):
        assert name in kept, name
    assert len(decayed) + len(kept) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out():
    model = mumo.create_model("clip_vit_tiny", seed=0)
    model.text.requires_grad_(False)
    groups = param_groups(model, 0.1)
    n = sum(len(g["params"]) for g in groups)
    assert n == sum(1 for p in model.parameters() if p.requires_grad)


def test_cosine_with_warmup_values():
    assert cosine_with_warmup(0, 10, 110) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 10, 110) == pytest.approx(1.0)
    assert cosine_with_warmup(10, 10, 110) == pytest.approx(1.0)
    assert cosine_with_warmup(60, 10, 110) == pytest.approx(0.5)
    assert cosine_with_warmup(110, 10, 110) == pytest.approx(0.0)
    assert cosine_with_warmup(110, 10, 110, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(35, 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_scheduler_drives_the_optimizer_lr():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(lr=1.0, warmup_steps=2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[-1] < lrs[3] < 1.0
