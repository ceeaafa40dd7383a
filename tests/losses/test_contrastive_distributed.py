"""Two real processes on loopback (gloo): the gathered losses against the single-process loss."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mumo.losses import ClipLoss, SigLipLoss, clip_loss, siglip_loss

WORLD, B, E = 2, 3, 4
MODES = [(True, True), (False, True), (False, False)]  # (local_loss, gather_with_grad)


def global_features() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = WORLD * B
    return F.normalize(torch.randn(n, E, generator=g), dim=-1), F.normalize(
        torch.randn(n, E, generator=g), dim=-1
    )


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        images, texts = global_features()
        rows = slice(rank * B, (rank + 1) * B)
        result = {}
        for local, with_grad in MODES:
            img = images[rows].clone().requires_grad_()
            txt = texts[rows].clone().requires_grad_()
            loss = ClipLoss(local_loss=local, gather_with_grad=with_grad, rank=rank, world_size=WORLD)(
                img, txt, 5.0
            )
            loss.backward()
            key = f"clip_{int(local)}{int(with_grad)}"
            result[f"{key}_loss"] = loss.detach().reshape(1)
            result[f"{key}_gimg"], result[f"{key}_gtxt"] = img.grad, txt.grad
        img = images[rows].clone().requires_grad_()
        txt = texts[rows].clone().requires_grad_()
        loss = SigLipLoss(rank=rank, world_size=WORLD)(img, txt, 10.0, -10.0)
        loss.backward()
        result.update(siglip_loss=loss.detach().reshape(1), siglip_gimg=img.grad, siglip_gtxt=txt.grad)
        save_file(result, f"{out_dir}/rank{rank}.safetensors")
        dist.barrier()  # no rank tears the group down while another still talks to it
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, free_port):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [load_file(str(out / f"rank{r}.safetensors")) for r in range(WORLD)]


def single_process_grads(loss_fn):
    images, texts = global_features()
    images.requires_grad_()
    texts.requires_grad_()
    loss = loss_fn(images, texts)
    loss.backward()
    return loss.detach(), images.grad, texts.grad


@pytest.mark.parametrize("local, with_grad", MODES)
def test_clip_loss_across_two_processes_matches_one(ranks, local, with_grad):
    loss, g_img, g_txt = single_process_grads(lambda i, t: clip_loss(i, t, 5.0))
    key = f"clip_{int(local)}{int(with_grad)}"
    mean_loss = sum(r[f"{key}_loss"] for r in ranks) / WORLD
    torch.testing.assert_close(mean_loss[0], loss)
    # What DDP does: average the ranks' gradients. With gradient gathering that is the exact
    # single-process gradient; without it, 1 / WORLD of it (documented behaviour).
    factor = 1.0 if with_grad else 1.0 / WORLD
    for r, res in enumerate(ranks):
        rows = slice(r * B, (r + 1) * B)
        torch.testing.assert_close(res[f"{key}_gimg"] / WORLD, factor * g_img[rows])
        torch.testing.assert_close(res[f"{key}_gtxt"] / WORLD, factor * g_txt[rows])


def test_siglip_loss_across_two_processes_matches_one(ranks):
    loss, g_img, g_txt = single_process_grads(lambda i, t: siglip_loss(i, t, 10.0, -10.0))
    torch.testing.assert_close(sum(r["siglip_loss"] for r in ranks)[0] / WORLD, loss)
    for r, res in enumerate(ranks):
        rows = slice(r * B, (r + 1) * B)
        torch.testing.assert_close(res["siglip_gimg"] / WORLD, g_img[rows])
        torch.testing.assert_close(res["siglip_gtxt"] / WORLD, g_txt[rows])
