"""GradCache: the chunked gradient equals the full-batch gradient; buffers are updated once per chunk."""

import pytest
import torch

import mumo
from mumo.errors import ConfigError
from mumo.run.train import trainer as run_trainer
from mumo.train import load_recipe
from mumo.train.grad_cache import grad_cache_backward
from mumo.train.tasks import MultiTask


def _batch(n=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 32, 32, generator=g, dtype=dtype)
    lengths = torch.randint(3, 12, (n,), generator=g)
    ids = torch.randint(3, 300, (n, 12), generator=g)
    mask = (torch.arange(12) < lengths[:, None]).long()
    return {"images": images, "input_ids": ids * mask, "attention_mask": mask}


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk", [4, 5, 16])
def test_four_chunks_give_the_full_batch_gradient(chunk):
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": 300}).double()
    task = MultiTask(model, ["itc"])
    batch = _batch()
    full = task.combine(task.training_forward(batch))
    full.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    loss = task.grad_cache_step(batch, chunk_size=chunk)["itc"]
    got = _grads(model)
    assert set(got) == set(expected) and "logit_scale" in got
    torch.testing.assert_close(loss, full.detach(), rtol=0, atol=1e-12)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    worst = max((got[n] - expected[n]).abs().max().item() for n in expected)
    assert worst < 1e-10  # float64: equal up to rounding


def test_float32_gradients_agree_within_1e_6():
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": 300})
    task = MultiTask(model, ["itc"])
    batch = _batch(dtype=torch.float32)
    task.combine(task.training_forward(batch)).backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    task.grad_cache_step(batch, chunk_size=4)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_batch_norm_statistics_are_updated_once_per_chunk():
    model = mumo.create_model("clip_conv_tiny", seed=0, **{"text.vocab_size": 300})
    plain = mumo.create_model("clip_conv_tiny", seed=0, **{"text.vocab_size": 300})
    batch = _batch(dtype=torch.float32)
    MultiTask(model, ["itc"]).grad_cache_step(batch, chunk_size=8)
    for start in (0, 8):  # what two chunked forward passes do to the statistics
        plain.encode_image(batch["images"][start : start + 8])
    for (name, a), b in zip(model.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_the_scale_and_dropout_replay():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    x = torch.randn(8, 4)
    loss_fn = lambda a, b: (a * b).sum()  # noqa: E731

    def embed(start, end):
        out = layer(x[start:end])
        return out, out

    torch.manual_seed(1)
    grad_cache_backward(layer, embed, loss_fn, 8, 3, scale=0.5)
    got = layer[0].weight.grad.clone()
    layer.zero_grad()
    torch.manual_seed(1)
    parts = [layer(x[s : min(s + 3, 8)]) for s in range(0, 8, 3)]  # the same draws, in the same order
    out = torch.cat(parts)
    (0.5 * loss_fn(out, out)).backward()
    torch.testing.assert_close(got, layer[0].weight.grad)


def test_grad_cache_through_the_trainer_matches_plain_training(tmp_path):
    common = [
        "model=clip_vit_tiny",
        "batch_size=16",
        "data.image_size=32",
        "data.train_size=256",
        "data.tokenizer_samples=200",
        "data.tokenizer_vocab_size=300",
        "max_steps=2",
        "evaluate=false",
        "tensorboard=false",
        "threads=1",
    ]
    plain = run_trainer(load_recipe(None, [*common, f"out_dir={tmp_path / 'a'}"]), progress=False)
    plain.fit()
    cached = run_trainer(
        load_recipe(None, [*common, f"out_dir={tmp_path / 'b'}", "grad_cache_chunk=4"]), progress=False
    )
    cached.fit()
    for (name, a), b in zip(
        plain.model.state_dict().items(), cached.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ConfigError, match="objectives must be"):
        load_recipe(None, ["grad_cache_chunk=4", "objectives=[itc, itm]", "model=fusion_vit_tiny"])
