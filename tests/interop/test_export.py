import json
from pathlib import Path

import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

import mumo  # noqa: E402
from mumo.errors import ExportError, MumoError  # noqa: E402
from mumo.interop import export as export_mod  # noqa: E402
from mumo.interop import export_onnx  # noqa: E402

# The three tiny registered models plus a mean-pooled text tower, the one pooling none of them uses, and
# a rotary text tower.
CASES = {
    "clip_vit_tiny": {},
    "clip_conv_tiny": {},
    "clip_vit_tiny_bidir": {},
    "clip_vit_tiny_meanpool": {"text.pool": "mean"},
    "clip_vit_tiny_rope": {"text.pos_embed": "rope"},
}


def _model(case: str) -> mumo.CLIP:
    name = case.replace("_meanpool", "").replace("_rope", "")
    return mumo.create_model(name, seed=0, **CASES[case]).eval()


def _texts(batch: int, length: int, lengths: list[int], left: bool = False) -> tuple[Tensor, Tensor]:
    """(B, T) ids and 0/1 mask, padded on the right (or left) to ``length``; real lengths ``lengths``."""
    gen = torch.Generator().manual_seed(batch * 100 + length)
    ids = torch.randint(1, 320, (batch, length), generator=gen)
    pos = torch.arange(length)[None, :]
    n = torch.tensor(lengths)[:, None]
    mask = (pos >= length - n) if left else (pos < n)
    return ids * mask, mask.long()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[mumo.CLIP, dict[str, Path]]]:
    out = {}
    for case in CASES:
        model = _model(case)
        out[case] = (model, export_onnx(model, tmp_path_factory.mktemp(case), check=False))
    return out


def _session(path: Path) -> "ort.InferenceSession":
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_matches_pytorch(exported: dict, case: str) -> None:
    model, paths = exported[case]
    image_sess, text_sess = _session(paths["image"]), _session(paths["text"])
    gen = torch.Generator().manual_seed(1)
    # T = 16 is the context length; T = 9 exercises the dynamic length axis.
    for batch, length, lengths in [(1, 16, [16]), (4, 16, [1, 5, 16, 11]), (4, 9, [9, 2, 7, 4]), (1, 3, [2])]:
        images = torch.randn(batch, 3, 32, 32, generator=gen)
        got = image_sess.run(None, {"images": images.numpy()})[0]
        want = model.encode_image(images).detach()
        assert got.shape == (batch, 32)
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=0)

        ids, mask = _texts(batch, length, lengths)
        got = text_sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        want = model.encode_text(ids, mask).detach()
        assert got.shape == (batch, 32)
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.from_numpy(got).norm(dim=-1), torch.ones(batch))


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_files_are_valid_with_named_dynamic_axes(exported: dict, case: str) -> None:
    _, paths = exported[case]
    for key, inputs, output in [
        ("image", {"images": ["batch", 3, 32, 32]}, "image_embeds"),
        (
            "text",
            {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]},
            "text_embeds",
        ),
    ]:
        graph = onnx.load(str(paths[key]))
        onnx.checker.check_model(graph, full_check=True)
        dims = {
            v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.graph.input, *graph.graph.output]
        }
        assert dims == {**inputs, output: ["batch", 32]}


@pytest.mark.parametrize("case", list(CASES))
def test_export_wrappers_equal_encoders(case: str) -> None:
    """The export-only modules always mask; eager encode_text drops the mask when it can. Same result."""
    model = _model(case)
    with torch.no_grad():
        images = torch.randn(3, 3, 32, 32)
        torch.testing.assert_close(export_mod._ImageEncoder(model)(images), model.encode_image(images))
        wrapper = export_mod._TextEncoder(model)
        for left in (False, True):
            for lengths in ([16, 16, 16], [16, 4, 1]):
                ids, mask = _texts(3, 16, lengths, left=left)
                torch.testing.assert_close(wrapper(ids, mask), model.encode_text(ids, mask))


def test_export_with_check_writes_config(tmp_path: Path) -> None:
    model = mumo.create_model("clip_vit_tiny", seed=0)  # train mode: export must not change it
    paths = export_onnx(model, tmp_path / "out")
    assert model.training
    assert {k: p.name for k, p in paths.items()} == {
        "image": "image_encoder.onnx",
        "text": "text_encoder.onnx",
        "config": "onnx_config.json",
    }
    config = json.loads(paths["config"].read_text())
    assert (config["image_size"], config["context_length"], config["embed_dim"]) == (32, 16, 32)
    assert config["image_preprocessing"]["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert config["image_preprocessing"]["std"] == pytest.approx([0.26862954, 0.26130258, 0.27577711])
    assert list(config["text_encoder"]["inputs"]) == ["input_ids", "attention_mask"]
    assert config["text_encoder"]["inputs"]["input_ids"]["dtype"] == "int64"


def test_conv_model_checks_in_train_mode(tmp_path: Path) -> None:
    """BatchNorm: the graph and the comparison both use running statistics, whatever the caller's mode."""
    model = mumo.create_model("clip_conv_tiny", seed=0)
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    diffs = export_mod.check_onnx(model, export_onnx(model, tmp_path, check=False))
    assert max(diffs.values()) < 1e-5
    assert model.training


def test_mismatch_raises_export_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forward = export_mod._TextEncoder.forward
    monkeypatch.setattr(export_mod._TextEncoder, "forward", lambda self, i, a: forward(self, i, a) + 1e-3)
    model = mumo.create_model("clip_vit_tiny", seed=0)
    with pytest.raises(ExportError, match="text encoder differs from PyTorch") as info:
        export_onnx(model, tmp_path)
    assert isinstance(info.value, MumoError)


@pytest.mark.parametrize("opset", [13, 21])
def test_unsupported_opset_raises_export_error(tmp_path: Path, opset: int) -> None:
    model = mumo.create_model("clip_vit_tiny", seed=0)
    with pytest.raises(ExportError, match=f"opset {opset} is not supported: use 14 to 20"):
        export_onnx(model, tmp_path, opset=opset)


def test_failed_export_raises_export_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Exporting the operator 'aten::foo' is not supported\n<graph dump>")

    monkeypatch.setattr(torch.onnx, "export", fail)
    model = mumo.create_model("clip_vit_tiny", seed=0)
    with pytest.raises(ExportError, match=r"failed: Exporting the operator 'aten::foo' is not supported$"):
        export_onnx(model, tmp_path)
