"""`mumo convert` (mumo.cli.models) from the folders users have: an OpenCLIP repository as the hub holds it,
a run folder, a training checkpoint; the folders it writes are taken by every command as they are."""

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

import mumo
from mumo.interop.hf_clip import load_hf_clip

open_clip = pytest.importorskip("open_clip")


def _open_clip_hub_folder(path):
    """A random-init ``ViT-B-32`` shrunk to 32 px and one block per tower, in the hub layout OpenCLIP's
    ``save_for_hf`` writes (``open_clip_config.json`` + ``open_clip_model.safetensors``, no tokenizer)."""
    from open_clip.push_to_hf_hub import save_config_for_hf

    cfg = copy.deepcopy(open_clip.get_model_config("ViT-B-32"))
    cfg["embed_dim"] = 32
    cfg["vision_cfg"].update(image_size=32, layers=1, width=64, head_width=32, patch_size=16)
    cfg["text_cfg"].update(width=32, heads=2, layers=1)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None, **cfg).eval()
    path.mkdir()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors")
    )
    save_config_for_hf(model, path / "open_clip_config.json", model_config=cfg)
    return model


def test_an_open_clip_folder_converts_to_one_that_embed_zero_shot_and_index_take(
    invoke, shapes_dir, tmp_path
):
    ref = _open_clip_hub_folder(tmp_path / "oc")
    invoke("convert", str(tmp_path / "oc"), str(tmp_path / "m"), "--from", "open_clip", "--to", "mumo")
    texts = ["a red circle", "a blue star above a green cross"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    invoke(
        "embed", str(tmp_path / "m"), "--texts", str(tmp_path / "t.txt"), "--out", str(tmp_path / "t.jsonl")
    )
    got = torch.tensor(
        [json.loads(line)["embedding"] for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    )
    with torch.no_grad():  # OpenCLIP's own tokenizer and text tower
        expected = ref.encode_text(open_clip.get_tokenizer("ViT-B-32")(texts), normalize=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    image = sorted((shapes_dir / "images").glob("*.png"))[0]
    result = invoke("zero-shot", str(tmp_path / "m"), str(image), "--labels", "a red circle,a blue star")
    assert sorted(line.split(maxsplit=1)[1] for line in result.output.strip().splitlines()) == [
        "a blue star",
        "a red circle",
    ]
    images = tmp_path / "images"
    shutil.copytree(shapes_dir / "images", images)
    result = invoke("index", str(tmp_path / "m"), str(images), "--out", str(tmp_path / "index"))
    assert "6 images" in result.output and "6 embedded" in result.output


def test_convert_takes_a_run_folder_and_a_training_checkpoint(invoke, run_dir, tmp_path):
    invoke("convert", str(run_dir), str(tmp_path / "h"), "--from", "mumo", "--to", "hf")
    final = mumo.load_pretrained(run_dir / "final")
    assert all(
        torch.equal(v, final.state_dict()[k]) for k, v in load_hf_clip(tmp_path / "h").state_dict().items()
    )
    checkpoint = sorted((run_dir / "checkpoints").iterdir())[-1]
    invoke("convert", str(checkpoint), str(tmp_path / "m"), "--from", "mumo", "--to", "mumo")
    model, tokenizer = mumo.load(tmp_path / "m")
    assert isinstance(tokenizer, mumo.Tokenizer)
    saved = mumo.load_pretrained(checkpoint).state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
