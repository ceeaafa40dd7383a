"""SyncBatchNorm: plain batch norm in one process; over two processes (gloo, CPU) the output, the gradients
and the running statistics of the global batch."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

import mumo
from mumo.layers.batch_norm import SyncBatchNorm, sync_batch_norm

WORLD = 2


def _layer() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.BatchNorm2d(3, momentum=0.3).double()
    with torch.no_grad():  # not the identity, so weight and bias gradients mean something
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 5, 4, generator=g, dtype=torch.float64) * 3 + 2  # (B, C, H, W), off-centre
    return x, torch.randn(6, 3, 5, 4, generator=g, dtype=torch.float64)  # and a gradient to pull back


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        layer = _layer()
        sync_batch_norm(wrapper := nn.Sequential(layer))
        x, up = (t[rank * 3 : rank * 3 + 3] for t in _batch())  # 3 of the 6 samples on each rank
        x.requires_grad_(True)
        y = wrapper(x)
        (y * up).sum().backward()
        norm = wrapper[0]
        save_file(
            {
                "y": y.detach(),
                "x_grad": x.grad,
                "weight_grad": norm.weight.grad,
                "bias_grad": norm.bias.grad,
                "running_mean": norm.running_mean,
                "running_var": norm.running_var,
            },
            f"{out}/rank{rank}.safetensors",
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_processes_normalise_by_the_global_batch(tmp_path, free_port):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    layer = _layer()
    x, up = _batch()
    x.requires_grad_(True)
    y = layer(x)
    (y * up).sum().backward()
    for rank in range(WORLD):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        share = slice(rank * 3, rank * 3 + 3)
        close = dict(rtol=0, atol=1e-12)
        torch.testing.assert_close(got["y"], y.detach()[share], **close)
        torch.testing.assert_close(got["x_grad"], x.grad[share], **close)
        # each rank's parameter gradient is its own samples' part; DDP sums (averages) them
        if rank == 0:
            total_w, total_b = got["weight_grad"], got["bias_grad"]
        else:
            torch.testing.assert_close(total_w + got["weight_grad"], layer.weight.grad, **close)
            torch.testing.assert_close(total_b + got["bias_grad"], layer.bias.grad, **close)
        torch.testing.assert_close(got["running_mean"], layer.running_mean, **close)
        torch.testing.assert_close(got["running_var"], layer.running_var, **close)


def test_in_one_process_it_is_batch_norm_and_the_swap_keeps_every_tensor():
    model = mumo.create_model("clip_conv_tiny", seed=0).double()
    reference = mumo.create_model("clip_conv_tiny", seed=0).double()
    model.visual.requires_grad_(False)
    before = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    assert sync_batch_norm(model) == 2
    assert sync_batch_norm(model) == 0  # already synced
    after = model.state_dict(keep_vars=True)
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)  # the same tensors
    assert sum(isinstance(m, SyncBatchNorm) for m in model.modules()) == 2
    assert not any(p.requires_grad for p in model.visual.parameters())
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    model.train(), reference.train()
    torch.testing.assert_close(model.encode_image(images), reference.encode_image(images), rtol=0, atol=1e-12)
    for (name, a), b in zip(model.named_buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)  # running statistics moved alike
    model.eval(), reference.eval()  # plain batch norm with the running statistics
    torch.testing.assert_close(model.encode_image(images), reference.encode_image(images), rtol=0, atol=1e-12)


def test_its_float32_statistics_of_channels_last_activations_are_exact():
    """(PyTorch's own CPU kernel sums a channels-last input's statistics sequentially in float32: here it
    misses by ~2.6e-4.)"""
    torch.manual_seed(0)
    x = (torch.relu(torch.randn(32, 4, 64, 64)) * 3 + 0.2).contiguous(memory_format=torch.channels_last)
    exact = x.double().mean(dim=(0, 2, 3))
    norm = SyncBatchNorm(4, momentum=1.0)
    norm(x)
    assert (norm.running_mean.double() - exact).abs().max() < 1e-6  # measured: ~6e-8


def test_an_input_without_channels_is_refused():
    with pytest.raises(ValueError, match=r"expected \(B, C, ...\) input"):
        SyncBatchNorm(3)(torch.zeros(3))
