"""Model folders: a checksum manifest, and one-line errors for every kind of damage (issue 16, item 11)."""

import hashlib
import json
import struct

import pytest
import torch

import mumo
from mumo._io import MANIFEST_NAME, verify_manifest
from mumo.errors import CheckpointError, ConfigError, MumoError
from mumo.models import load_pretrained, save_pretrained
from mumo.models._pretrained import load_state_dict_strict


@pytest.fixture
def folder(tmp_path):
    model = mumo.create_model("clip_vit_tiny", seed=0)
    tok = mumo.Tokenizer.train(["a red circle", "a blue star"] * 5, vocab_size=300, context_length=16)
    return save_pretrained(model, tmp_path / "m", tokenizer=tok)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


def test_save_pretrained_writes_checksums_of_every_file(folder):
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert sorted(manifest) == ["config.json", "model.safetensors", "tokenizer.json"]
    for name, entry in manifest.items():
        data = (folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    verify_manifest(folder)


def test_flipped_tensor_bytes_are_refused(folder):
    # The same size, one byte of a weight changed: without checksums this loads as a different model.
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's data, far past the header
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors does not match its checksum") as e:
        load_pretrained(folder)
    one_line(e)


def test_a_folder_without_a_manifest_still_loads(folder):
    (folder / MANIFEST_NAME).unlink()  # as an older mumo wrote it
    model = load_pretrained(folder)
    assert model.config == mumo.create_model("clip_vit_tiny").config


def _damage(kind: str, data: bytes) -> bytes:
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "empty":
        return b""
    header = b"{not json at all"  # garbage where the JSON header should be
    return struct.pack("<Q", len(header)) + header + data[8 + len(header) :]


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage header"])
@pytest.mark.parametrize("manifest", [True, False])
def test_damaged_weights_are_one_line_errors(folder, kind, manifest):
    weights = folder / "model.safetensors"
    weights.write_bytes(_damage(kind, weights.read_bytes()))
    if not manifest:
        (folder / MANIFEST_NAME).unlink()
    with pytest.raises(CheckpointError) as e:
        load_pretrained(folder)
    msg = one_line(e)
    assert "model.safetensors" in msg
    if manifest and kind != "garbage header":
        assert "truncated" in msg  # the byte count is checked before the checksum


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"model_type": "clip", ', "config.json is not valid JSON"),
        ("[1, 2, 3]", "must be a JSON object, not a list"),
        ('{"embed_dim": 32}', "has no model_type"),
        ('{"model_type": "clipp"}', "model_type 'clipp'.*did you mean 'clip'"),
        (b"\xff\xfe\x00garbage", "config.json is not valid JSON"),
    ],
)
def test_damaged_config_is_a_one_line_error(folder, text, match):
    config = folder / "config.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    (folder / MANIFEST_NAME).unlink()  # with it, the checksum would catch the change first
    with pytest.raises(ConfigError, match=match) as e:
        load_pretrained(folder)
    assert str(config) in one_line(e)


def test_a_changed_config_is_caught_by_the_manifest(folder):
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"depth": 2', '"depth": 1', 1))  # a valid config
    with pytest.raises(CheckpointError, match="config.json does not match its checksum"):
        load_pretrained(folder)


def test_the_cli_prints_one_line_for_a_damaged_folder(folder, tmp_path, monkeypatch, capsys):
    from mumo.cli import main

    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    monkeypatch.setattr(
        "sys.argv", ["mumo", "convert", str(folder), str(tmp_path / "out"), "--from", "mumo", "--to", "mumo"]
    )
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "model.safetensors" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_mismatch_with_another_model_is_one_readable_line():
    # Resuming with another model: hundreds of keys differ; the message says how many and names a few.
    model = mumo.create_model("clip_vit_tiny", seed=0)
    other = mumo.create_model("coca_vit_tiny", seed=0).state_dict()
    with pytest.raises(CheckpointError) as e:
        load_state_dict_strict(model, other, "runs/x/checkpoints/step_000010/model.safetensors")
    msg = one_line(e)
    expected = model.state_dict()
    n_missing = len(set(expected) - set(other))
    n_unexpected = len(set(other) - set(expected))
    assert n_missing > 3 and n_unexpected > 3
    assert f"{n_missing} missing (" in msg and f"{n_unexpected} unexpected (" in msg
    assert "more)" in msg
    assert sorted(set(expected) - set(other))[0] in msg  # the first names are still there


def test_a_single_mismatch_is_named_in_full():
    model = mumo.create_model("clip_vit_tiny", seed=0)
    state = dict(model.state_dict())
    del state["text.norm.weight"]
    state["logit_scale"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_strict(model, state, "w.safetensors")
    msg = one_line(e)
    assert "1 missing (text.norm.weight)" in msg
    assert "1 wrong shape (logit_scale: (3,) != ())" in msg
    assert "more" not in msg and "unexpected" not in msg


def test_json_list_as_a_model_config_file(tmp_path):
    path = tmp_path / "model.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object, not a list") as e:
        mumo.create_model(path)
    one_line(e)
    assert isinstance(e.value, MumoError)


def test_a_folder_of_symlinks_loads(folder, tmp_path):
    # A Hugging Face hub download is a folder of symlinks into the cache's blobs; its manifest holds.
    linked = tmp_path / "snapshot"
    linked.mkdir()
    for f in folder.iterdir():
        (linked / f.name).symlink_to(f)
    assert load_pretrained(linked).config == load_pretrained(folder).config


def test_a_missing_folder_or_a_file_says_what_it_is(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="missing does not exist; give a model folder or a run folder"):
        mumo.load_pretrained(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="weights.bin is a file; give a model folder or a run folder"):
        mumo.load_pretrained(tmp_path / "weights.bin")
