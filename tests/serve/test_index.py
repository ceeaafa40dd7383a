"""The image index: FAISS search equals brute force, updates embed only what changed, an interrupted build
resumes, unreadable files are listed, and IVF takes over above the threshold."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import mumo
from mumo.data.shapes import ShapesConfig, write_shapes
from mumo.data.tokenizer import Tokenizer
from mumo.errors import DataError
from mumo.inference import embed_texts
from mumo.serve.index import ImageIndex, build_faiss, update_index, weights_checksum


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    tokenizer = Tokenizer.train(["a red circle", "a blue star above a green square"] * 20, vocab_size=300)
    model = mumo.create_model("clip_vit_tiny", seed=0, **{"text.vocab_size": tokenizer.vocab_size})
    mumo.save_pretrained(model, root, tokenizer=tokenizer)
    return root


@pytest.fixture
def images(tmp_path):
    folder = write_shapes(tmp_path / "shapes", 30, config=ShapesConfig(image_size=32)) / "images"
    return folder


def _load(model_dir):
    model = mumo.load_pretrained(model_dir).eval()
    tokenizer = Tokenizer.load(model_dir, context_length=model.context_length)
    return model, tokenizer


def test_search_equals_brute_force(model_dir, images, tmp_path):
    model, tokenizer = _load(model_dir)
    result = update_index(model, model_dir, images, tmp_path / "idx", batch_size=8)
    assert result["count"] == 30 and result["embedded"] == 30 and result["kind"] == "flat"
    index = ImageIndex(tmp_path / "idx")
    vectors = np.load(tmp_path / "idx" / "vectors.npy")
    assert vectors.shape == (30, model.config.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    row_of = {r["path"]: i for i, r in enumerate(index.rows)}
    # an image's own vector scores 1 (a random-init model embeds many images almost alike, so compare
    # scores, not which of several near-ties comes first)
    for i in (0, 7, 29):
        hit = index.search_vectors(vectors[i : i + 1], k=1)[0][0]
        assert hit.score == pytest.approx(1.0, abs=1e-5)
        assert hit.file == images / hit.path and hit.file.is_file()
    # a text query gets the brute-force top 5, each with its own score
    query = embed_texts(model, tokenizer, ["a red circle"]).numpy()[0]
    hits = index.search(model, tokenizer, ["a red circle"], k=5)[0]
    scores = vectors @ query
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:5], rtol=0, atol=1e-5)
    np.testing.assert_allclose([scores[row_of[h.path]] for h in hits], [h.score for h in hits], atol=1e-5)


def test_update_embeds_only_new_and_changed_files(model_dir, images, tmp_path):
    model, _ = _load(model_dir)
    out = tmp_path / "idx"
    update_index(model, model_dir, images, out, batch_size=8)
    before = dict(zip((r["path"] for r in ImageIndex(out).rows), np.load(out / "vectors.npy"), strict=True))
    files = sorted(images.iterdir())
    files[0].unlink()
    files[1].unlink()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(files[2])  # changed content (and size, time)
    for i in range(3):
        Image.new("RGB", (32, 32), (0, 40 * i, 255)).save(images / f"new{i}.png")
    calls = []
    original = model.encode_image
    model.encode_image = lambda x, **kw: calls.append(len(x)) or original(x, **kw)
    result = update_index(model, model_dir, images, out, batch_size=8)
    assert sum(calls) == 4 and result["embedded"] == 4
    assert result["removed"] == 2 and result["count"] == 31 and result["kept"] == 27
    after = ImageIndex(out)
    vectors = np.load(out / "vectors.npy")
    for row, v in zip(after.rows, vectors, strict=True):
        if row["path"] in before and row["path"] != files[2].name:
            np.testing.assert_array_equal(v, before[row["path"]])
    assert not np.allclose(
        vectors[[r["path"] for r in after.rows].index(files[2].name)], before[files[2].name]
    )


def _interrupted_build(model, model_dir, images, out):
    """An index build stopped (Ctrl-C) after its first 16 images: committed to pending/ in 2 parts."""

    def stop_after_16(done, total):
        if done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        update_index(model, model_dir, images, out, batch_size=4, commit_every=8, progress=stop_after_16)
    assert len(list((out / "pending").glob("part-*.npy"))) == 2


def test_an_interrupted_build_resumes_where_it_stopped(model_dir, images, tmp_path):
    model, _ = _load(model_dir)
    out = tmp_path / "idx"
    _interrupted_build(model, model_dir, images, out)
    calls = []
    original = model.encode_image
    model.encode_image = lambda x, **kw: calls.append(len(x)) or original(x, **kw)
    result = update_index(model, model_dir, images, out, batch_size=4, commit_every=8)
    assert sum(calls) == 14 and result["count"] == 30 and not (out / "pending").exists()
    fresh = tmp_path / "fresh"
    model.encode_image = original
    update_index(model, model_dir, images, fresh, batch_size=30)
    np.testing.assert_allclose(np.load(out / "vectors.npy"), np.load(fresh / "vectors.npy"), atol=1e-5)


def test_unreadable_files_are_skipped_and_listed(model_dir, images, tmp_path):
    model, _ = _load(model_dir)
    (images / "empty.png").write_bytes(b"")
    (images / "page.jpg").write_text("<html><script>alert(1)</script></html>")
    result = update_index(model, model_dir, images, tmp_path / "idx")
    assert result["count"] == 30
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in result["skipped"]}
    assert reasons == {"empty.png": "zero bytes", "page.jpg": "not a decodable image"}
    assert json.loads((tmp_path / "idx" / "skipped.json").read_text()) == result["skipped"]


def test_another_models_index_is_refused(model_dir, images, tmp_path):
    model, tokenizer = _load(model_dir)
    update_index(model, model_dir, images, tmp_path / "idx")
    other = tmp_path / "other"
    changed = mumo.create_model("clip_vit_tiny", seed=1, **{"text.vocab_size": tokenizer.vocab_size})
    mumo.save_pretrained(changed, other, tokenizer=tokenizer)
    with pytest.raises(DataError, match="another model"):
        update_index(changed, other, images, tmp_path / "idx")


def test_ivf_above_the_threshold_finds_stored_vectors():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(40, 32, generator=g)
    points = centers[torch.randint(0, 40, (5000,), generator=g)] + 0.3 * torch.randn(5000, 32, generator=g)
    vectors = torch.nn.functional.normalize(points, dim=-1).numpy()
    import faiss

    exact, ivf = build_faiss(vectors, ivf_threshold=10_000), build_faiss(vectors, ivf_threshold=1000)
    assert isinstance(exact, faiss.IndexFlatIP) and isinstance(ivf, faiss.IndexIVFFlat)
    queries = vectors[:200]
    _, want = exact.search(queries, 10)
    _, got = ivf.search(queries, 10)
    assert (got[:, 0] == np.arange(200)).mean() >= 0.95  # each stored vector finds itself
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got, strict=True)])
    assert recall >= 0.9, recall


def test_cli_index_and_search(model_dir, images, tmp_path):
    out = tmp_path / "idx"
    run = subprocess.run(
        [sys.executable, "-m", "mumo", "index", str(model_dir), str(images), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    said = " ".join(run.stdout.split())  # rich wraps long lines
    assert "30 images (flat search): 30 embedded, 0 kept, 0 removed, 0 skipped" in said
    run = subprocess.run(
        [sys.executable, "-m", "mumo", "search", str(out), "a red circle", "-k", "3"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 3
    scores = [float(line.split()[0]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    assert all(line.split(maxsplit=1)[1].startswith(str(images)) for line in lines)


def _other_model(tmp_path, tokenizer):
    other = tmp_path / "other"
    changed = mumo.create_model("clip_vit_tiny", seed=1, **{"text.vocab_size": tokenizer.vocab_size})
    mumo.save_pretrained(changed, other, tokenizer=tokenizer)
    return changed.eval(), other


def test_an_interrupted_build_is_not_resumed_with_another_model(model_dir, images, tmp_path, caplog):
    model, tokenizer = _load(model_dir)
    out = tmp_path / "idx"
    _interrupted_build(model, model_dir, images, out)  # 16 rows of the first model wait in pending/
    other, other_dir = _other_model(tmp_path, tokenizer)
    with caplog.at_level("WARNING", logger="mumo.serve.index"):
        result = update_index(other, other_dir, images, out, batch_size=4, commit_every=8)
    assert result["embedded"] == 30 and result["kept"] == 0 and result["count"] == 30
    assert "dropped 16 embedded rows" in caplog.text and "another model" in caplog.text
    update_index(other, other_dir, images, tmp_path / "fresh", batch_size=30)
    fresh = np.load(tmp_path / "fresh" / "vectors.npy")
    np.testing.assert_allclose(np.load(out / "vectors.npy"), fresh, atol=1e-5)  # every vector the second's
    assert json.loads((out / "index.json").read_text())["weights_sha256"] == weights_checksum(other_dir)


def test_rows_without_an_index_json_are_not_reused_by_another_model(model_dir, images, tmp_path, caplog):
    model, tokenizer = _load(model_dir)
    out = tmp_path / "idx"
    update_index(model, model_dir, images, out)
    (out / "index.json").unlink()  # killed between writing vectors.npy and index.json
    other, other_dir = _other_model(tmp_path, tokenizer)
    with caplog.at_level("WARNING", logger="mumo.serve.index"):
        result = update_index(other, other_dir, images, out)
    assert result["embedded"] == 30 and "dropped 30 embedded rows" in caplog.text
    update_index(other, other_dir, images, tmp_path / "fresh")
    fresh = np.load(tmp_path / "fresh" / "vectors.npy")
    np.testing.assert_allclose(np.load(out / "vectors.npy"), fresh, atol=1e-5)
