"""Reading WebDataset shards: streamed across ranks x loader workers with every sample exactly once per
epoch, resumable at any batch, damaged samples counted with their keys. Writing: test_shard_writer.py."""

import io
import json
import subprocess
import sys
import tarfile
from collections import Counter

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mumo.data.pairs import Skipped
from mumo.data.shards import ShardStream, read_index
from mumo.data.transforms import train_transform
from mumo.errors import DataError, MissingExtraError


def _ids(items):
    """What a batch held: keys of samples, 'skip:<path>' for skipped records."""
    return [f"skip:{x.path}" if isinstance(x, Skipped) else x["key"] for x in items]


def _epochs(root, ranks, workers, batch, epochs=1, start=0, **kw):
    """Per rank: the id lists of its batches for ``epochs`` epochs, through a real DataLoader."""
    out = []
    for rank in range(ranks):
        stream = ShardStream(root, **kw).plan(batch, rank, ranks, workers, start)
        loader = DataLoader(stream, batch_size=batch, num_workers=workers, collate_fn=_ids)
        it = iter(loader)
        out.append([next(it) for _ in range(epochs * stream.batches_per_epoch - start)])
    return out


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on 2 cores: slow, correct
@pytest.mark.parametrize("ranks,workers", [(2, 2), (1, 0), (2, 0), (1, 3)])
def test_every_sample_exactly_once_per_epoch_across_ranks_and_workers(shards, ranks, workers):
    batch = 4
    readers = ranks * max(1, workers)
    per_epoch = 96 // (readers * batch) * readers * batch
    runs = _epochs(shards, ranks, workers, batch, epochs=2, shuffle_block=7)
    steps = len(runs[0])
    assert all(len(r) == steps for r in runs)  # ranks stay in step
    epoch_ids = []
    for e in range(2):
        ids = [k for r in runs for b in r[e * steps // 2 : (e + 1) * steps // 2] for k in b]
        assert all(not k.startswith("skip:") for k in ids)
        assert len(ids) == per_epoch and len(set(ids)) == per_epoch  # exactly once
        epoch_ids.append(ids)
    if per_epoch == 96:
        assert set(epoch_ids[0]) == {f"{i:09d}" for i in range(96)}
    assert epoch_ids[0] != epoch_ids[1]  # a new order each epoch


def test_shard_and_block_order_are_shuffled_but_fixed_by_the_seed(shards):
    a = _epochs(shards, 1, 0, 8, shuffle_block=16, seed=0)[0]
    again = _epochs(shards, 1, 0, 8, shuffle_block=16, seed=0)[0]
    other = _epochs(shards, 1, 0, 8, shuffle_block=16, seed=1)[0]
    assert a == again and a != other
    flat = [k for b in a for k in b]
    assert flat != sorted(flat)


@pytest.mark.parametrize("start", [1, 3, 5, 6])
def test_resuming_at_batch_k_gives_the_uninterrupted_batches(shards, start):
    """2 ranks x 2 workers, 6 batches per epoch and rank; starts mid-epoch, on odd batches (the round robin
    over workers must rotate), and at an epoch boundary."""
    full = _epochs(shards, 2, 2, 4, epochs=2, shuffle_block=5)
    resumed = _epochs(shards, 2, 2, 4, epochs=2, start=start, shuffle_block=5)
    for rank in range(2):
        assert resumed[rank] == full[rank][start:]


def _png(color=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_damaged_samples_are_skipped_and_counted_with_their_keys(tmp_path):
    """A garbage image, a sample without caption, one without image, a shard cut mid-way and a missing
    shard: every one is a Skipped record where its sample would be, the epoch goes on, ranks stay in step."""
    good = [(f"{i:03d}.png", _png()) for i in range(4)]
    caps = [(f"{i:03d}.txt", f"caption {i}".encode()) for i in range(4)]
    _tar(tmp_path / "a.tar", [m for pair in zip(good, caps, strict=True) for m in pair])
    _tar(
        tmp_path / "b.tar",
        [
            ("100.png", b"<html>not an image</html>"),
            ("100.txt", b"junk"),
            ("101.png", _png()),
            ("102.txt", b"x"),
        ]
        + [("103.png", _png()), ("103.txt", b"fine")],
    )
    _tar(
        tmp_path / "c.tar",
        [(f"2{i:02d}.{e}", _png() if e == "png" else b"c") for i in range(4) for e in ("png", "txt")],
    )
    raw = (tmp_path / "c.tar").read_bytes()
    (tmp_path / "c.tar").write_bytes(raw[: len(raw) // 2])  # cut in the middle of the shard
    index = {"format": "mumo-shards/1", "samples": 16}
    index["shards"] = [{"name": n, "samples": 4} for n in ("a.tar", "b.tar", "c.tar", "gone.tar")]
    (tmp_path / "shards.json").write_text(json.dumps(index))

    runs = _epochs(tmp_path, 2, 2, 2)
    assert all(len(r) == 4 for r in runs)  # 16 samples: 4 batches of 2 per rank
    ids = Counter(k for r in runs for b in r for k in b)
    assert sum(ids.values()) == 16
    kept = {k for k in ids if not k.startswith("skip:")}
    skipped = sorted(k[5:] for k in ids if k.startswith("skip:"))
    assert kept >= {"000", "001", "002", "003", "103"}
    assert any(s.startswith("b.tar/100") for s in skipped)  # undecodable image
    assert any(s.startswith("b.tar/101") for s in skipped)  # no caption
    assert any(s.startswith("b.tar/102") for s in skipped)  # no image
    assert sum(s.startswith("gone.tar#") for s in skipped) == 4
    assert any(s.startswith("c.tar#") and "after key" in s for s in skipped)
    assert len(kept) + len(skipped) == 16
    reasons = {x.reason for x in _all_skipped(tmp_path)}
    assert {"not a decodable image", "shard file missing", "no caption (.txt) in the sample"} <= reasons
    assert any(r.startswith("shard ends early") for r in reasons)


def _all_skipped(root):
    stream = ShardStream(root).plan(batch_size=16)
    return [x for x in _take(stream, 16) if isinstance(x, Skipped)]


def _take(stream, n):
    it = iter(stream)
    return [next(it) for _ in range(n)]


def test_a_folder_without_index_is_counted(shards, tmp_path):
    for p in shards.glob("*.tar"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    assert read_index(tmp_path) == read_index(shards)
    with pytest.raises(DataError, match="too few"):
        ShardStream(tmp_path).plan(batch_size=64, world_size=2)
    with pytest.raises(DataError, match="does not exist"):
        read_index(tmp_path / "nope")


def test_augmentations_follow_the_sample_not_the_reader(shards):
    """With a random crop, a sample gets the same crop whoever reads it (1 process or 2 ranks x 2
    workers), and different samples get different crops."""
    transform = train_transform(32, scale=(0.3, 0.5))

    def images(ranks, workers):
        out = {}
        for rank in range(ranks):
            stream = ShardStream(shards, transform, shuffle_block=7).plan(4, rank, ranks, workers)
            loader = DataLoader(stream, batch_size=4, num_workers=workers, collate_fn=lambda s: s)
            it = iter(loader)
            for _ in range(stream.batches_per_epoch):
                out.update({x["key"]: x["image"] for x in next(it)})
        return out

    one, many = images(1, 0), images(2, 2)
    assert one.keys() == many.keys()
    for k in one:
        torch.testing.assert_close(one[k], many[k], rtol=0, atol=0)
    # the same scene drawn twice would be a coincidence of content; compare crops of one image instead
    plain = ShardStream(shards, transform, shuffle_block=1).plan(1)
    first = [x["image"] for x in _take(plain, 2)]
    assert not torch.equal(first[0], first[1])


def test_reading_without_webdataset_is_one_line_naming_the_extra(shards, monkeypatch):
    monkeypatch.setitem(sys.modules, "webdataset", None)  # what `import webdataset` meets when not installed
    with pytest.raises(MissingExtraError) as e:
        ShardStream(shards)
    message = str(e.value)
    assert message == "data.kind=shards needs webdataset, which is not installed: pip install 'mumo[shards]'"
    assert read_index(shards)[0] == ("shard-000000.tar", 10)  # the index alone needs no webdataset


def test_mumo_data_imports_without_webdataset():
    code = (
        "import sys; sys.modules['webdataset'] = None\n"
        "import mumo.data, mumo.data.shards, mumo.data.shard_writer, mumo.data.sources\n"
        "print('ok')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
