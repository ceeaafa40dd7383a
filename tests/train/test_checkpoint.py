import pytest
import torch

import mumo
from mumo.errors import CheckpointError
from mumo.train.checkpoint import (
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    run_id,
    save_checkpoint,
    verify_checkpoint,
)
from mumo.train.config import OptimConfig
from mumo.train.optim import build_optimizer, build_scheduler


@pytest.fixture
def parts():
    model = mumo.create_model("clip_vit_tiny", seed=0)
    tok = mumo.Tokenizer.train(["a red circle", "a blue star"] * 5, vocab_size=300, context_length=16)
    cfg = OptimConfig(lr=1e-3, warmup_steps=2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 10)
    images, ids = torch.randn(4, 3, 32, 32), torch.randint(4, 300, (4, 16))
    out = model(images, ids)
    mumo.clip_loss(out.image_embeds, out.text_embeds, out.logit_scale).backward()
    opt.step()
    sched.step()
    return model, tok, opt, sched


def test_round_trip_restores_everything(tmp_path, parts):
    model, tok, opt, sched = parts
    rng = torch.get_rng_state()
    path = save_checkpoint(tmp_path, 1, model, tok, opt, sched, extra={"data_position": 1})
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "tokenizer.json",
        "trainer_state.json",
        "trainer_state.safetensors",
    ]
    torch.rand(5)  # move the RNG on; loading must bring it back
    model2 = mumo.create_model("clip_vit_tiny", seed=1)
    cfg = OptimConfig(lr=1e-3, warmup_steps=2)
    opt2 = build_optimizer(model2, cfg)
    sched2 = build_scheduler(opt2, cfg, 10)
    _, tok2, meta = load_checkpoint(path, model2, opt2, sched2)
    assert meta["step"] == 1 and meta["data_position"] == 1
    assert torch.equal(torch.get_rng_state(), rng)
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    sa, sb = opt.state_dict(), opt2.state_dict()
    for k in sa["state"]:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa["state"][k][key], sb["state"][k][key])
    assert sa["param_groups"] == sb["param_groups"]
    assert sched2.state_dict()["last_epoch"] == 1 and sched2.get_last_lr() == sched.get_last_lr()
    assert tok2.encode("a red star").input_ids.tolist() == tok.encode("a red star").input_ids.tolist()


def test_keeps_only_the_newest(tmp_path, parts):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, *parts, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000003"]


def test_a_run_prunes_only_its_own_checkpoints(tmp_path, parts):
    """Another run's checkpoints (older and newer steps) stay; so does a later step of this run's own,
    which a resume skipped as damaged and this run will overwrite when it gets there."""
    save_checkpoint(tmp_path, 2, *parts, extra={"run_id": "other"})
    save_checkpoint(tmp_path, 9, *parts, extra={"run_id": "other"})
    save_checkpoint(tmp_path, 7, *parts, extra={"run_id": "mine"})
    for step in (1, 3, 5):
        save_checkpoint(tmp_path, step, *parts, extra={"run_id": "mine"}, keep=1)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_000002", "step_000005", "step_000007", "step_000009"]
    assert [run_id(p) for p in list_checkpoints(tmp_path)] == ["other", "mine", "mine", "other"]


def test_truncated_checkpoint_is_detected_and_the_previous_one_used(tmp_path, parts, caplog):
    save_checkpoint(tmp_path, 1, *parts)
    newest = save_checkpoint(tmp_path, 2, *parts)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        verify_checkpoint(newest)
    assert latest_valid_checkpoint(tmp_path).name == "step_000001"
    assert "skipping checkpoint" in caplog.text
    # a flipped byte of the same length is caught by the checksum
    one = list_checkpoints(tmp_path)[0] / "trainer_state.safetensors"
    data = bytearray(one.read_bytes())
    data[-1] ^= 0xFF
    one.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        verify_checkpoint(list_checkpoints(tmp_path)[0])
    assert latest_valid_checkpoint(tmp_path) is None


def test_interrupted_save_leaves_no_checkpoint(tmp_path, parts):
    save_checkpoint(tmp_path, 1, *parts)
    # what a crash mid-save leaves: a hidden temporary folder without a manifest
    (tmp_path / "checkpoints" / ".tmp-step_000002-123").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001"]
    half = tmp_path / "checkpoints" / "step_000003"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"")
    assert latest_valid_checkpoint(tmp_path).name == "step_000001"
    save_checkpoint(tmp_path, 4, *parts)  # the next save clears what the killed one left
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_a_checkpoint_carries_the_model_folder_manifest_over_every_file(tmp_path, parts):
    # One manifest format for model folders and checkpoints: written by mumo._io, listing every file but
    # itself, and checked by load_pretrained too (a checkpoint is a loadable model folder).
    import hashlib
    import json

    from mumo._io import MANIFEST_NAME, verify_manifest
    from mumo.train.checkpoint import MANIFEST

    assert MANIFEST == MANIFEST_NAME
    path = save_checkpoint(tmp_path, 1, *parts)
    manifest = json.loads((path / MANIFEST).read_text())
    assert sorted(manifest) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "trainer_state.json",
        "trainer_state.safetensors",
    ]
    for name, entry in manifest.items():
        data = (path / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    verify_manifest(path)
    state = path / "trainer_state.json"
    state.write_text(state.read_text().replace('"step": 1', '"step": 7'))  # same length, other bytes
    with pytest.raises(CheckpointError, match="trainer_state.json does not match its checksum"):
        mumo.load_pretrained(path)
    with pytest.raises(CheckpointError, match="trainer_state.json does not match its checksum"):
        verify_checkpoint(path)


def test_a_manifest_naming_a_file_outside_the_checkpoint_is_refused(tmp_path, parts):
    import json

    path = save_checkpoint(tmp_path, 1, *parts)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["../../elsewhere"] = {"bytes": 0, "sha256": "0" * 64}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="outside"):
        verify_checkpoint(path)
    (path / "manifest.json").write_text("[]")
    with pytest.raises(CheckpointError, match="not a manifest"):
        verify_checkpoint(path)
