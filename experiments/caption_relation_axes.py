"""How often a captioner gets a pair's relation right, split by axis: pairs side by side (left of / right
of) and pairs one above the other (above / below), and which relation word its captions use. Used for the
README's CoCa figures (issue 20): without ``data.reading_order`` a CoCa got pairs side by side right and
pairs one above the other near chance on two seeds of three.

    python experiments/caption_relation_axes.py runs/coca runs/coca_seed1 --seed 1 --scenes 600
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

import mumo
from mumo.data.shapes import ShapesConfig, ShapesDataset
from mumo.data.transforms import normalize
from mumo.eval.captioning import attribute_accuracy, caption_images
from mumo.generation import GenerationConfig

WORDS = {"to the left of": "left of", "to the right of": "right of", "above": "above", "below": "below"}


@torch.inference_mode()
def axes(run: str, seed: int, scenes: int, batch: int = 100) -> dict:
    model, tokenizer = mumo.load(run)
    model.eval()
    data = ShapesDataset("test", scenes, ShapesConfig(min_objects=2, max_objects=2, seed=seed))
    items = [data[i] for i in range(scenes)]
    texts: list[str] = []
    greedy = GenerationConfig(max_new_tokens=model.context_length)
    for start in range(0, scenes, batch):
        images = normalize(torch.stack([it["image"] for it in items[start : start + batch]]))
        texts += caption_images(model, tokenizer, images, greedy)
    right, total, said = Counter(), Counter(), Counter()
    for text, item in zip(texts, items, strict=True):
        scene = item["scene"]
        axis = "side by side" if scene.relation in ("left of", "right of") else "one above the other"
        total[axis] += 1
        # scored as `mumo eval` scores it: the best reading of the caption, the pair in either order
        ok = attribute_accuracy([text], [scene])["per_attribute"]["relation"] == 1.0
        right[axis] += ok
        said[(axis, next((WORDS[w] for w in WORDS if w in text), "none"))] += 1
    return {
        "relation": {a: right[a] / total[a] for a in total},
        "pairs": dict(total),
        "words": {f"{a}: {w}": n for (a, w), n in sorted(said.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run or model folders of captioners")
    parser.add_argument("--seed", type=int, default=1, help="data seed of the test scenes")
    parser.add_argument("--scenes", type=int, default=600, help="two-object test scenes")
    args = parser.parse_args()
    for run in args.runs:
        result = axes(run, args.seed, args.scenes)
        rel = ", ".join(f"{a} {100 * v:.1f} % of {result['pairs'][a]}" for a, v in result["relation"].items())
        print(f"{run}: relation right: {rel}")
        print("   relation words: " + ", ".join(f"{k} {n}" for k, n in result["words"].items()))


if __name__ == "__main__":
    main()
