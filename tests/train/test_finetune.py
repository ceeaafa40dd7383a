"""Adapting a pretrained model: locked towers get no gradient, LoRA trains only its adapters (and the head),
layer-wise lr decay, and fine-tuning runs through the trainer on labelled images (digits) end to end."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import mumo
from mumo.data.tokenizer import Tokenizer
from mumo.errors import CheckpointError, ConfigError
from mumo.layers.lora import lora_layers
from mumo.models import ImageClassifier
from mumo.run.train import train
from mumo.run.train import trainer as run_trainer
from mumo.train import TrainConfig, load_recipe
from mumo.train.config import FinetuneConfig
from mumo.train.finetune import (
    apply_finetune,
    inference_only_modules,
    layer_lr_scales,
    load_adapter,
    lock_towers,
    towers,
)
from mumo.train.optim import build_optimizer


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def _clip_loss(model):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 32, 32, generator=g)
    ids = torch.randint(3, 100, (4, 6), generator=g)
    out = model(images, ids)
    return torch.nn.functional.cross_entropy(out.logits_per_image, torch.arange(4))


def test_towers_are_found_with_their_layers():
    model = mumo.create_model("clip_vit_tiny", seed=0)
    found = towers(model)
    assert list(found) == ["visual", "text"]
    assert found["visual"].layer_of("transformer.blocks.1.mlp.fc1.weight") == 2
    assert found["visual"].layer_of("patch_embed.proj.weight") == 0
    assert found["text"].layer_of("norm.weight") == found["text"].num_layers + 1
    conv = mumo.create_model("clip_conv_tiny", seed=0).visual
    assert [conv.layer_of(f"stages.{i}.weight") for i in (0, 1, 4, 5)] == [1, 1, 2, 2]


@pytest.mark.parametrize("side", ["image", "text"])
def test_a_locked_tower_gets_no_gradient(side):
    model = mumo.create_model("clip_vit_tiny", seed=0)
    locked = lock_towers(model, image=side == "image", text=side == "text")
    assert locked == ["visual" if side == "image" else "text"]
    got = _grads(model, _clip_loss(model))
    prefix = locked[0] + "."
    assert not any(n.startswith(prefix) for n in got)
    other = "text." if side == "image" else "visual."
    assert any(n.startswith(other) for n in got)
    assert {"image_proj.weight", "text_proj.weight", "logit_scale"} <= got  # projections still learn


def test_unlocked_layers_train_only_the_top_of_a_locked_tower():
    model = mumo.create_model("clip_vit_tiny", seed=0)  # 2 blocks per tower
    lock_towers(model, image=True, text=False, unlocked_layers=1)
    got = {n for n in _grads(model, _clip_loss(model)) if n.startswith("visual.")}
    assert got and all(n.startswith(("visual.transformer.blocks.1.", "visual.norm.")) for n in got)
    assert any(n.startswith("visual.norm.") for n in got)
    with pytest.raises(ConfigError, match="has 2 layers"):
        lock_towers(mumo.create_model("clip_vit_tiny"), image=True, text=False, unlocked_layers=3)


def test_a_locked_conv_tower_keeps_its_batch_norm_statistics():
    model = mumo.create_model("clip_conv_tiny", seed=0)
    lock_towers(model, image=True, text=False)
    frozen = inference_only_modules(model)
    assert model.visual in frozen
    before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    model.train()
    for m in frozen:
        m.eval()
    _clip_loss(model).backward()
    for k, v in model.visual.state_dict().items():
        assert torch.equal(v, before[k]), k
    # freeze_norm_stats: every batch norm stays in eval mode, though its scale and shift train
    fresh = mumo.create_model("clip_conv_tiny", seed=0)
    norms = inference_only_modules(fresh, norm_stats=True)
    assert norms and all(isinstance(m, torch.nn.BatchNorm2d) for m in norms)


def test_lora_trains_only_adapters_and_what_is_named():
    model = mumo.create_model("clip_vit_tiny", seed=0)
    total = sum(p.numel() for p in model.parameters())
    summary = apply_finetune(model, FinetuneConfig(lora_rank=2, lora_also_train=("logit_scale",)))
    adapters = lora_layers(model)
    assert summary["lora_layers"] == len(adapters) == 16  # qkv, proj, fc1, fc2 in 2 + 2 blocks
    expected = sum(m.lora_a.numel() + m.lora_b.numel() for m in adapters.values()) + 1
    assert summary["trainable_params"] == expected
    assert summary["total_params"] == total + expected - 1
    got = _grads(model, _clip_loss(model))
    assert got and all(n.endswith(("lora_a", "lora_b")) or n == "logit_scale" for n in got)
    assert "logit_scale" in got


def test_finetune_settings_that_train_nothing_or_match_nothing_are_refused():
    with pytest.raises(ConfigError, match="lora_targets"):
        apply_finetune(
            mumo.create_model("clip_vit_tiny"), FinetuneConfig(lora_rank=2, lora_targets=("nope",))
        )
    model = mumo.create_model("clip_vit_tiny")
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no parameter to train"):
        apply_finetune(model, FinetuneConfig())
    with pytest.raises(ConfigError, match="LoRA freezes everything"):
        FinetuneConfig(lora_rank=2, lock_image=True)


def test_layer_decay_gives_each_layer_its_learning_rate():
    model = mumo.create_model("clip_vit_tiny", seed=0)  # depth 2: layers 0, 1, 2 and the top 3
    scales = layer_lr_scales(model, 0.5)
    assert scales["visual.patch_embed.proj.weight"] == 0.5**3
    assert scales["visual.transformer.blocks.0.attn.qkv.weight"] == 0.5**2
    assert scales["text.transformer.blocks.1.mlp.fc1.weight"] == 0.5
    assert scales["visual.norm.weight"] == 1.0 and "image_proj.weight" not in scales
    assert layer_lr_scales(model, 1.0) == {}

    from mumo.train.config import OptimConfig

    opt = build_optimizer(model, OptimConfig(lr=1e-3, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["visual.patch_embed.proj.weight"])] == pytest.approx(1e-3 * 0.125)
    assert lr_of[id(named["image_proj.weight"])] == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)


# --- through the trainer: a tiny CLIP "pretrained" on shapes, fine-tuned on the digits ---------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A random-init conv CLIP (32 px) saved with a tokenizer, standing in for a pretrained model."""
    folder = tmp_path_factory.mktemp("pretrained")
    model = mumo.create_model("clip_conv_tiny", seed=0, **{"text.vocab_size": 300})
    tokenizer = Tokenizer.train(["a photo of the digit one.", "a red circle", "a blue square"] * 20, 300)
    mumo.save_pretrained(model, folder, tokenizer)
    return folder


def _finetune(pretrained, out, *extra):
    config = load_recipe(
        None,
        [
            f"init_from={pretrained}",
            "objectives=[cls]",
            "data.kind=digits",
            "data.image_size=32",
            "batch_size=32",
            "max_steps=6",
            "checkpoint_every=3",
            "optim.warmup_steps=2",
            "tensorboard=false",
            "threads=1",
            f"out_dir={out}",
            *extra,
        ],
    )
    return train(config, progress=False)


def test_full_finetuning_on_digits_starts_from_the_zero_shot_head(pretrained, tmp_path):
    results = _finetune(pretrained, tmp_path)
    assert {"val_accuracy", "test_accuracy"} <= set(results["eval"])
    assert results["trainable_params"] == results["total_params"]
    model = mumo.load_pretrained(tmp_path / "final")
    assert isinstance(model, ImageClassifier) and model.class_names[3] == "three"
    assert model.config.templates == ("a photo of a {}.",)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "train_accuracy" in rows[-1] and "loss/cls" in rows[-1]


def test_lora_finetuning_saves_a_plain_merged_model_and_the_adapter_alone(pretrained, tmp_path):
    targets = "finetune.lora_targets=['clip\\.visual\\.stages', 'clip\\.image_proj']"
    results = _finetune(pretrained, tmp_path, "finetune.lora_rank=2", targets)
    assert results["trainable_params"] < 0.05 * results["total_params"]
    merged = mumo.load_pretrained(tmp_path / "final")  # a plain classifier, no LoRA layers
    assert not lora_layers(merged)
    adapter = load_file(str(tmp_path / "final" / "adapter.safetensors"))
    assert set(adapter) == {
        *(f"clip.visual.stages.{i}.{w}" for i in (0, 4) for w in ("lora_a", "lora_b")),
        "clip.image_proj.lora_a",
        "clip.image_proj.lora_b",
        "head.weight",
        "head.bias",
    }
    # the pretrained model plus the adapter alone computes what the merged model does
    start = ImageClassifier.from_clip(mumo.load_pretrained(pretrained), merged.class_names)
    rebuilt = load_adapter(start, tmp_path / "final").eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), merged.eval()(images), rtol=1e-4, atol=1e-4)
    # the folder's checksums cover the adapter too: a damaged one is refused, not loaded as another
    weights = tmp_path / "final" / "adapter.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    start = ImageClassifier.from_clip(mumo.load_pretrained(pretrained), merged.class_names)
    with pytest.raises(CheckpointError, match="adapter.safetensors does not match its checksum"):
        load_adapter(start, tmp_path / "final")


def test_a_lora_run_resumes_from_its_checkpoint_to_the_same_weights(pretrained, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _finetune(pretrained, straight, "finetune.lora_rank=2", "evaluate=false")
    _finetune(pretrained, resumed, "finetune.lora_rank=2", "evaluate=false")
    # forget everything after the step-3 checkpoint, as a crash there would, and resume
    shutil.rmtree(resumed / "final")
    shutil.rmtree(resumed / "checkpoints" / "step_000006")
    config = TrainConfig.from_dict(json.loads((resumed / "train_config.json").read_text()))
    assert run_trainer(config, resume=True, progress=False).step == 3
    train(config, resume=True, progress=False)
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(resumed / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_labelled_data_needs_a_pretrained_model_and_the_cls_objective():
    with pytest.raises(ConfigError, match="init_from"):
        load_recipe(None, ["data.kind=digits", "objectives=[cls]"])
    with pytest.raises(ConfigError, match="cls objective"):
        load_recipe(None, ["data.kind=digits", "init_from=x"])


def test_a_max_steps_0_run_saves_and_evaluates_its_starting_model(pretrained, tmp_path):
    results = _finetune(pretrained, tmp_path, "finetune.head=linear_probe", "max_steps=0")
    assert results["steps"] == 0 and 0.0 <= results["eval"]["test_accuracy"] <= 1.0
    assert isinstance(mumo.load_pretrained(tmp_path / "final"), ImageClassifier)
