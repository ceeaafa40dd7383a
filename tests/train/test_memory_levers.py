"""Activation checkpointing gives the same gradients; bf16 / fp16 autocast trains (fp16 with loss scaling,
its scaler checkpointed)."""

import json

import pytest
import torch

import mumo
from mumo.layers.block import set_grad_checkpointing
from mumo.run.train import trainer as run_trainer
from mumo.train import load_recipe
from mumo.train.tasks import MultiTask


def _grads(model, task, batch):
    model.zero_grad(set_to_none=True)
    task.combine(task.training_forward(batch)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_changes_no_gradient():
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": 300}).double()
    task = MultiTask(model, ["itc"])
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randn(8, 3, 32, 32, generator=g, dtype=torch.float64),
        "input_ids": torch.randint(3, 300, (8, 10), generator=g),
        "attention_mask": torch.ones(8, 10, dtype=torch.long),
    }
    plain = _grads(model, task, batch)
    assert set_grad_checkpointing(model) == 2  # the image and the text stacks
    recomputed = _grads(model, task, batch)
    assert plain.keys() == recomputed.keys()
    for name, grad in plain.items():
        assert torch.equal(grad, recomputed[name]), name
    assert set_grad_checkpointing(mumo.create_model("clip_conv_tiny")) == 1  # only the text tower has blocks


TINY = [
    "model=clip_vit_tiny",
    "batch_size=8",
    "data.image_size=32",
    "data.train_size=128",
    "data.tokenizer_samples=200",
    "data.tokenizer_vocab_size=300",
    "max_steps=3",
    "checkpoint_every=3",
    "evaluate=false",
    "tensorboard=false",
    "threads=1",
]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_train_in_fp32_weights(tmp_path, precision):
    config = load_recipe(
        None, [*TINY, f"precision={precision}", "grad_checkpointing=true", f"out_dir={tmp_path}"]
    )
    trainer = run_trainer(config, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    state = trainer.model.state_dict()
    assert all(v.dtype == before[k].dtype for k, v in state.items())  # autocast leaves weights alone
    assert any(not torch.equal(v, before[k]) for k, v in state.items())  # and they trained
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    saved = json.loads(next((tmp_path / "checkpoints").glob("step_*/trainer_state.json")).read_text())
    assert bool(saved["grad_scaler"]) == (precision == "fp16")  # the loss scale survives a resume
