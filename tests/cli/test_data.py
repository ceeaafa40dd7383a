"""`mumo data shapes` (mumo.cli.data); the shapes_dir fixture (conftest) runs it."""

import json


def test_data_shapes_writes_images_and_captions(shapes_dir):
    lines = (shapes_dir / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 6 and len(list((shapes_dir / "images").glob("*.png"))) == 6
    assert {"image", "caption", "negatives"} <= set(json.loads(lines[0]))
