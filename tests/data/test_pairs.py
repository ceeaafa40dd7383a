import contextlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mumo.data.pairs import PairsDataset, Skipped, SkipReport, collate_skipping, load_rgb
from mumo.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform, normalize, train_transform
from mumo.errors import DataError

S = 16


def write_images(root):
    """Three good images and four bad ones; returns rows (path, caption) and the expected skip reasons."""
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "img/good.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "img/good.jpg")
    Image.fromarray(rng.integers(0, 256, (18, 25), dtype=np.uint8)).save(root / "img/gray.png")  # mode L
    (root / "img/empty.jpg").write_bytes(b"")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "img/full.jpg", quality=95)
    data = (root / "img/full.jpg").read_bytes()
    (root / "img/cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "img/notes.jpg").write_text("these are notes, not pixels\n")
    rows = [
        ("img/good.png", "a red square, on the left"),
        ("img/empty.jpg", "nothing"),
        ("img/good.jpg", "noise"),
        ("img/cut.jpg", "half an image"),
        ("img/notes.jpg", "a text file"),
        ("img/missing.png", "gone"),
        ("img/gray.png", "a gray thing"),
    ]
    bad = {
        "img/empty.jpg": "zero bytes",
        "img/cut.jpg": "truncated image",
        "img/notes.jpg": "not a decodable image",
        "img/missing.png": "file not found",
    }
    return rows, bad


def write_csv(path, header, rows, delimiter):
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)


def test_exactly_the_bad_images_are_skipped_each_with_its_reason(tmp_path):
    rows, bad = write_images(tmp_path)
    write_csv(tmp_path / "train.tsv", ["filepath", "title"], rows, "\t")
    ds = PairsDataset(tmp_path / "train.tsv", transform=eval_transform(S))
    assert len(ds) == 7 and ds.image_key == "filepath" and ds.caption_key == "title"

    items = [ds[i] for i in range(len(ds))]
    kept, skipped = collate_skipping(items)
    assert {s.path: s.reason for s in skipped} == {str(tmp_path / p): r for p, r in bad.items()}
    assert [s.index for s in skipped] == [1, 3, 4, 5]
    assert [s["index"] for s in kept] == [0, 2, 6]
    assert [s["caption"] for s in kept] == ["a red square, on the left", "noise", "a gray thing"]
    for s in kept:
        assert s["image"].shape == (3, S, S) and s["image"].dtype == torch.float32

    report = SkipReport()
    report.add(skipped)
    assert report.count == 4
    summary = report.summary()
    assert summary.startswith("4 images were skipped: ")
    for p, r in bad.items():
        assert f"{tmp_path / p} ({r})" in summary
    assert report.by_reason() == {r: 1 for r in bad.values()}


def test_skipped_samples_flow_through_a_dataloader_and_are_counted(tmp_path):
    rows, bad = write_images(tmp_path)
    write_csv(tmp_path / "train.csv", ["image", "caption"], rows, ",")
    ds = PairsDataset(tmp_path / "train.csv", transform=train_transform(S))
    report = SkipReport()
    n_kept = 0
    for samples, skipped in DataLoader(ds, batch_size=3, collate_fn=collate_skipping):
        report.add(skipped)
        if samples:
            images = torch.stack([s["image"] for s in samples])
            assert images.shape == (len(samples), 3, S, S)
        n_kept += len(samples)
    assert (n_kept, report.count) == (3, 4)
    assert report.summary(max_listed=1).endswith(
        "and 3 more (truncated image: 1, not a decodable image: 1, file not found: 1)"
    )
    report.reset()
    assert report.summary() == "no images were skipped"


def test_summary_grammar_for_one_image():
    report = SkipReport()
    report.add([Skipped("a/b.jpg", "truncated image")])
    assert report.summary() == "1 image was skipped: a/b.jpg (truncated image)"


def test_comma_csv_with_quoted_commas_tab_csv_and_jsonl_read_the_same(tmp_path):
    rows, _ = write_images(tmp_path)
    write_csv(tmp_path / "a.csv", ["file", "text"], rows, ",")
    write_csv(tmp_path / "a.tsv", ["path", "caption"], rows, "\t")
    with (tmp_path / "a.jsonl").open("w") as f:
        for p, c in rows:
            f.write(json.dumps({"image_path": p, "caption": c, "extra": 1}) + "\n")
        f.write("\n")  # a trailing blank line is not a row
    for name in ("a.csv", "a.tsv", "a.jsonl"):
        ds = PairsDataset(tmp_path / name)
        assert ds.image_paths == [p for p, _ in rows]
        assert ds.captions == [c for _, c in rows]
    sample = PairsDataset(tmp_path / "a.jsonl")[0]  # no transform: uint8 at the file's size
    assert sample["image"].shape == (3, 20, 30) and sample["image"].dtype == torch.uint8


def test_image_root_and_absolute_paths(tmp_path):
    rows, _ = write_images(tmp_path)
    (tmp_path / "ann").mkdir()
    rel = [(p.removeprefix("img/"), c) for p, c in rows[:1]] + [(str(tmp_path / rows[2][0]), rows[2][1])]
    write_csv(tmp_path / "ann/a.csv", ["image", "caption"], rel, ",")
    assert isinstance(PairsDataset(tmp_path / "ann/a.csv")[0], Skipped)  # relative to ann/ by default
    ds = PairsDataset(tmp_path / "ann/a.csv", image_root=tmp_path / "img")
    assert not isinstance(ds[0], Skipped) and not isinstance(ds[1], Skipped)


def test_missing_column_error_names_the_keys_found_and_accepted(tmp_path):
    write_csv(tmp_path / "a.csv", ["img", "caption"], [("x.png", "a cat")], ",")
    with pytest.raises(DataError) as e:
        PairsDataset(tmp_path / "a.csv")
    msg = str(e.value)
    assert "no image column" in msg and "['img', 'caption']" in msg and "'filepath'" in msg
    assert "image_key=" in msg
    assert PairsDataset(tmp_path / "a.csv", image_key="img").image_paths == ["x.png"]
    with pytest.raises(DataError, match="no column 'title'"):
        PairsDataset(tmp_path / "a.csv", image_key="img", caption_key="title")


def test_malformed_annotation_files_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        PairsDataset(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("image,caption\n")
    with pytest.raises(DataError, match="no rows"):
        PairsDataset(tmp_path / "empty.csv")
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "caption": "x"}\n{oops\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        PairsDataset(tmp_path / "bad.jsonl")
    (tmp_path / "short.csv").write_text("image,caption\na.png,x\nb.png\n")
    with pytest.raises(DataError, match="line 3: no caption"):
        PairsDataset(tmp_path / "short.csv")


def test_load_rgb_names_a_missing_file():
    assert load_rgb("/definitely/not/here.png") == "file not found"


@pytest.mark.parametrize("make", [eval_transform, train_transform])
def test_constant_colour_maps_to_normalised_value(make):
    colour = (200, 100, 30)
    image = Image.new("RGB", (37, 23), colour)  # not square: the transform must crop
    x = make(S)(image)
    assert x.shape == (3, S, S) and x.dtype == torch.float32 and type(x) is torch.Tensor
    expected = (torch.tensor(colour) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(x, expected.view(3, 1, 1).expand(3, S, S), atol=1e-5, rtol=0)


def test_train_transform_is_deterministic_under_a_torch_seed_and_never_flips():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    t = train_transform(S, scale=(0.3, 1.0))
    torch.manual_seed(123)
    a = t(image)
    torch.manual_seed(123)
    assert torch.equal(a, t(image))
    torch.manual_seed(124)
    assert not torch.equal(a, t(image))

    half = np.zeros((32, 32, 3), dtype=np.uint8)
    half[:, :16, 0] = 255  # red on the left, blue on the right
    half[:, 16:, 2] = 255
    t = train_transform(S, scale=(1.0, 1.0))
    for seed in range(20):
        torch.manual_seed(seed)
        x = t(Image.fromarray(half))
        assert x[0, :, 0].min() > x[2, :, 0].max()  # left column stays red
        assert x[2, :, -1].min() > x[0, :, -1].max()  # right column stays blue


def test_normalize_accepts_uint8_and_float_alike():
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    torch.testing.assert_close(normalize(images), normalize(images.float() / 255))
    with pytest.raises(DataError):
        normalize(torch.zeros(2, 1, 4, 4))


def test_an_image_over_the_pixel_limit_is_skipped_without_being_decoded(tmp_path, monkeypatch):
    from PIL import ImageFile

    from mumo.data.pairs import MAX_PIXELS, decode_rgb

    assert MAX_PIXELS == 40_000_000
    Image.new("1", (10_000, 5_000)).save(tmp_path / "huge.png")  # 50 M pixels, a few KB; Pillow warns at 89 M
    Image.new("RGB", (30, 20), (200, 100, 30)).save(tmp_path / "small.png")
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.size) or load(im))
    reason = "too many pixels (10000 x 5000; the limit is 40,000,000)"
    assert load_rgb(tmp_path / "huge.png") == reason
    assert decode_rgb((tmp_path / "huge.png").read_bytes()) == reason
    assert decoded == []  # refused from the header: not one pixel decoded
    small = load_rgb(tmp_path / "small.png")
    assert small.size == (30, 20) and small.mode == "RGB" and small.getpixel((29, 19)) == (200, 100, 30)
    assert (30, 20) in decoded  # the spy does see an ordinary decode
    assert load_rgb(tmp_path / "small.png", max_pixels=599) == "too many pixels (30 x 20; the limit is 599)"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decoding_for_a_small_output_shrinks_early_and_matches_a_full_decode(fmt, tmp_path):
    from mumo.data.pairs import decode_image

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)  # a smooth 1200 x 900 picture
    Image.fromarray(smooth).resize((1200, 900), Image.Resampling.BICUBIC).save(tmp_path / "a", format=fmt)
    held = []
    with open(tmp_path / "a", "rb") as f:  # for a 32-pixel model: keep the shorter side >= 64
        small = decode_image(f, min_side=64, hold=lambda n: held.append(n) or contextlib.nullcontext())
    full = load_rgb(tmp_path / "a")
    # JPEG: the decoder itself works at 1/8 scale, and holds only that many pixels; PNG: decoded in full, then
    # reduced by 14 (whole boxes, centred) before the RGB copy
    want = {"JPEG": ((150, 113), 150 * 113), "PNG": ((85, 64), 1200 * 900)}[fmt]
    assert (small.size, held) == (want[0], [want[1]]) and small.mode == "RGB"
    diff = (eval_transform(32)(small) - eval_transform(32)(full)).abs()  # normalised units (1/255 ~ 0.015)
    assert diff.max() < 0.1 and diff.mean() < 0.02  # measured: 0.04-0.06 and 0.006-0.009


_LATIN1 = "image,caption\na.png,caf\xe9\n".encode("latin-1")


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("p.csv", _LATIN1, r"p.csv, line 2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"),
        ("p.txt", b"a.png a red circle\n", r"CSV \(.csv, .tsv\) or JSON Lines \(.jsonl, .ndjson\).*'.txt'"),
        ("p.json", b'[{"image": "a.png", "caption": "x"}]', "got '.json'"),
        ("p.csv", b"image,caption\na.png," + b"x" * 200_000 + b"\n", r"p.csv, line 2: not valid CSV \(field"),
    ],
)
def test_an_annotation_file_in_another_encoding_or_format_is_one_clear_error(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match=message):
        PairsDataset(tmp_path / name)
