"""The built-in shapes set as a torch data set drawn on the fly, and written to disk: an image folder with
``captions.jsonl``, or a caption-only text corpus.

Sample ``i`` of a split depends only on ``(seed, split, i)``, so any worker in any order draws the same
pixels and text.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mumo.data.shapes.draw import render
from mumo.data.shapes.language import _captioned, hard_negatives
from mumo.data.shapes.scene import Scene, ShapesConfig, _split_id
from mumo.data.shapes.vqa import check_question_weights, pick_question
from mumo.errors import ConfigError


class ShapesDataset(torch.utils.data.Dataset):
    """``size`` samples of one split, drawn on the fly.

    Each item is a dict: ``image`` (3, H, W) float in [0, 1] (or ``transform(PIL image)``), ``caption``
    (one template, chosen by ``(seed, split, index)``), ``scene`` (:class:`Scene`) and ``index``. The
    default collate cannot batch ``scene``; drop it or collate it as a list. With ``questions``, the
    caption is a question and its answer (:func:`pick_question`, its kinds drawn in proportion to
    ``question_weights``), ``prompt`` the question alone and ``kind`` its kind.
    """

    def __init__(
        self,
        split: str,
        size: int,
        config: ShapesConfig | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        questions: bool = False,
        question_weights: dict[str, float] | None = None,
    ) -> None:
        self.split, self.split_id = split, _split_id(split)
        self.questions = questions
        check_question_weights(question_weights, "ShapesDataset question_weights")
        self.question_weights = question_weights
        if size < 0:
            raise ConfigError(f"ShapesDataset size must be >= 0, got {size}")
        self.size = size
        self.config = config or ShapesConfig()
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a ShapesDataset of size {self.size}")
        scene, _, caption = _captioned(self.config, self.split_id, index)
        if self.transform is not None:
            image = self.transform(Image.fromarray(render(scene, self.config.image_size)))
        else:
            image = scene_image(scene, self.config.image_size)
        item = {"image": image, "caption": caption, "scene": scene, "index": index}
        if self.questions:  # VQA as generation: the text is "question answer", the question its prompt
            rng = np.random.default_rng([self.config.seed, self.split_id, index, 1])
            q = pick_question(scene, float(rng.random()), float(rng.random()), self.question_weights)
            item.update(caption=f"{q.question} {q.answer}", prompt=q.question, kind=q.kind)
        return item


def scene_image(scene: Scene, image_size: int = 64) -> torch.Tensor:
    """A scene drawn as a (3, H, W) float tensor in [0, 1], as :class:`ShapesDataset` gives it."""
    return torch.from_numpy(render(scene, image_size)).permute(2, 0, 1).float().div_(255.0)


def write_shapes(
    out_dir: str | Path, n: int, split: str = "train", config: ShapesConfig | None = None
) -> Path:
    """Write ``n`` samples as ``images/000000.png …`` plus ``captions.jsonl`` (one JSON object per line:
    image, caption, captions, objects, relation, negatives). Returns ``out_dir``."""
    from rich.progress import track

    config, split_id, out = config or ShapesConfig(), _split_id(split), Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(out / "captions.jsonl", "w", encoding="utf-8") as f:
        for i in track(range(n), description=f"shapes {split}", disable=n < 2000):
            scene, texts, caption = _captioned(config, split_id, i)
            name = f"images/{i:06d}.png"
            Image.fromarray(render(scene, config.image_size)).save(out / name)
            record = {
                "image": name,
                "caption": caption,
                "captions": texts,
                "objects": [dataclasses.asdict(o) for o in scene.objects],
                "relation": scene.relation,
                "negatives": hard_negatives(scene),
            }
            f.write(json.dumps(record) + "\n")
    return out


def write_captions(
    path: str | Path, n: int, split: str = "train", config: ShapesConfig | None = None
) -> Path:
    """Write the captions of ``n`` samples of ``split``, one per line and no images: a text corpus for
    pretraining a language model on the built-in data's text alone. Returns ``path``."""
    config, split_id, path = config or ShapesConfig(), _split_id(split), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(_captioned(config, split_id, i)[2] + "\n")
    return path
