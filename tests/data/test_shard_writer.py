"""Writing WebDataset shards: img2dataset's layout, readable by webdataset itself; sources (the built-in
set, a folder of captioned images, an annotation file) with unreadable items skipped and counted; the CLI."""

import io
import subprocess
import sys
import tarfile

import pytest
from PIL import Image

from mumo.data.pairs import Skipped
from mumo.data.shard_writer import pairs_from_annotations, pairs_from_folder, pairs_from_shapes, write_shards
from mumo.data.shards import count_samples, read_index
from mumo.errors import DataError, MissingExtraError


def _png(color=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_written_shards_follow_the_webdataset_layout(shards):
    import webdataset as wds

    assert read_index(shards)[0] == ("shard-000000.tar", 10) and read_index(shards)[-1] == (
        "shard-000009.tar",
        6,
    )
    with tarfile.open(shards / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert sorted(names[:3]) == ["000000000.json", "000000000.png", "000000000.txt"]
    # webdataset's own reader (what OpenCLIP uses) reads them back
    samples = list(wds.WebDataset(str(shards / "shard-000001.tar"), shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(10, 20)]
    first = samples[0]
    assert first["png"].size == (64, 64) and first["txt"] and first["json"]["index"] == 10
    assert count_samples(shards / "shard-000009.tar") == 6
    with pytest.raises(DataError, match="already holds"):
        write_shards(pairs_from_shapes(3), shards, shard_size=10)


def test_sources_folder_and_annotations(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (8, 8), color).save(src / f"im{i}.jpg")
        (src / f"im{i}.txt").write_text(f"colour {i}\n")
    (src / "nocap.png").write_bytes(_png())
    (src / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (src / "broken.txt").write_text("broken")
    items = list(pairs_from_folder(src))
    kept = [p for p in items if not isinstance(p, Skipped)]
    assert [p.caption for p in kept] == ["colour 0", "colour 1", "colour 2"]
    assert {p.reason for p in items if isinstance(p, Skipped)} == {
        "no caption file nocap.txt",
        "not a decodable image",
    }
    summary = write_shards(items, tmp_path / "out", shard_size=2)
    assert summary["samples"] == 3 and summary["shards"] == 2 and len(summary["skipped"]) == 2

    (tmp_path / "pairs.csv").write_text("filepath,title\nsrc/im0.jpg,a red one\nsrc/missing.jpg,gone\n")
    items = list(pairs_from_annotations(tmp_path / "pairs.csv"))
    assert (
        items[0].caption == "a red one"
        and items[0].ext == "jpg"
        and items[0].meta == {"source": "src/im0.jpg"}
    )
    assert isinstance(items[1], Skipped) and items[1].reason == "file not found"


def test_cli_data_shard(tmp_path):
    out = tmp_path / "s"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mumo",
            "data",
            "shard",
            "shapes",
            "--out",
            str(out),
            "--size",
            "25",
            "--shard-size",
            "10",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "wrote 25 samples in 3 shards" in run.stdout
    assert [n for _, n in read_index(out)] == [10, 10, 5]


def test_writing_without_webdataset_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "webdataset", None)  # what `import webdataset` meets when not installed
    with pytest.raises(MissingExtraError) as e:
        write_shards(pairs_from_shapes(2), tmp_path / "out", shard_size=10)
    message = str(e.value)
    assert message == "writing shards needs webdataset, which is not installed: pip install 'mumo[shards]'"
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_the_writer_names_still_import_from_shards_for_one_release():
    from mumo.data import shard_writer, shards

    for name in ("ShardPair", "pairs_from_annotations", "pairs_from_folder", "pairs_from_shapes"):
        assert getattr(shards, name) is getattr(shard_writer, name)
    from mumo.data.shards import shard_source
    from mumo.data.shards import write_shards as old

    assert old is write_shards and shard_source is shard_writer.shard_source
    with pytest.raises(AttributeError, match="no attribute 'write_shard'"):
        shards.write_shard  # noqa: B018
