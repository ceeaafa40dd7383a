"""Transfer of a model pretrained on the built-in shapes to scikit-learn's handwritten digits: linear probe,
full fine-tuning, LoRA, LP-FT, and WiSE-FT sweeps (digits accuracy against zero-shot accuracy on the
built-in data). Every run goes through the committed recipes (configs/finetune/) and the public API; the
tables are printed and written to OUT/digits_transfer.md and .json. Used for the README's figures:

    python experiments/digits_transfer.py --pretrained runs/compare/dual --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import mumo
from mumo.data.config import DataConfig
from mumo.data.sources import data_source
from mumo.data.tokenizer import Tokenizer
from mumo.eval.classify import labelled_tensors
from mumo.eval.linear_probe import probe_images
from mumo.eval.wise_ft import target_and_zero_shot, wise_ft_sweep
from mumo.models._pretrained import model_folder
from mumo.run.heads import zero_shot_start
from mumo.run.train import fit, trainer
from mumo.train import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "finetune"


def finetune(recipe: str, out: Path, overrides: list[str]) -> dict:
    config = load_recipe(RECIPES / f"{recipe}.yaml", [f"out_dir={out}", *overrides])
    # resumed: an interrupted run continues, a finished one returns its metrics (the script can be rerun)
    return fit(trainer(config, resume=True, progress=False))


def mean_range(values: list[float]) -> str:
    pct = [100 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.1f}"
    return f"{statistics.mean(pct):.1f} ({min(pct):.1f}–{max(pct):.1f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrained", default="runs/compare/dual", help="a CLIP pretrained on the built-in data")
    p.add_argument("--out", type=Path, default=Path("runs/finetune/transfer"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (data order)")
    p.add_argument("--alphas", type=float, nargs="+", default=[i / 10 for i in range(11)])
    p.add_argument("--size", type=int, default=1000, help="built-in test scenes for zero-shot accuracy")
    p.add_argument("--steps", type=int, default=None, help="override every recipe's max_steps (smoke runs)")
    args = p.parse_args()
    pretrained = mumo.load_pretrained(model_folder(args.pretrained)).eval()
    base = [f"init_from={args.pretrained}", f"data.image_size={pretrained.image_size}"]
    if args.steps is not None:
        base.append(f"max_steps={args.steps}")

    tokenizer = Tokenizer.load(model_folder(args.pretrained))
    tokenizer.context_length = pretrained.context_length
    data = DataConfig(kind="digits", image_size=pretrained.image_size)
    source = data_source(data)
    mean, std = source.normalization or (None, None)
    train, val, test = (labelled_tensors(source.split(s), mean, std) for s in ("train", "val", "test"))
    probe = probe_images(pretrained, train, test, val=val)
    print(f"linear probe (L-BFGS, l2 {probe.l2:g} on val, refit on train+val): {100 * probe.accuracy:.1f} %")

    runs: dict[str, dict[int, dict]] = {"full": {}, "lora": {}, "lpft": {}}
    lp = finetune("digits_probe", args.out / "probe", base[:2])  # no training steps, whatever --steps says
    for seed in args.seeds:
        s = [f"seed={seed}"]
        runs["full"][seed] = finetune("digits", args.out / f"full_s{seed}", [*base, *s])
        runs["lora"][seed] = finetune("digits_lora", args.out / f"lora_s{seed}", [*base, *s])
        lpft_init = [f"init_from={args.out / 'probe'}", *base[1:]]  # stage 2 starts from the probe
        runs["lpft"][seed] = finetune("digits_lpft", args.out / f"lpft_s{seed}", [*lpft_init, *s])
        print(
            f"seed {seed}: "
            + ", ".join(f"{k} {100 * v[seed]['eval']['test_accuracy']:.1f} %" for k, v in runs.items())
        )

    evaluate = target_and_zero_shot(tokenizer, test, args.size)
    seed = args.seeds[0]
    sweeps = {}
    tuned = mumo.load_pretrained(args.out / f"full_s{seed}" / "final")
    sweeps["FT from the zero-shot head"] = wise_ft_sweep(
        zero_shot_start(pretrained, tuned, tokenizer), tuned, args.alphas, evaluate
    )
    start = mumo.load_pretrained(args.out / "probe" / "final")
    tuned = mumo.load_pretrained(args.out / f"lpft_s{seed}" / "final")
    sweeps["LP-FT (alpha 0: the probe)"] = wise_ft_sweep(start, tuned, args.alphas, evaluate)

    params = {k: (v[seed]["trainable_params"], v[seed]["total_params"]) for k, v in runs.items()}
    # What classification uses: the image tower, its projection and the head (not the text tower).
    image_path = sum(
        p.numel() for n, p in tuned.named_parameters() if not n.startswith(("clip.text", "clip.text_proj"))
    )
    lines = [
        f"# Digits transfer from {args.pretrained} (seeds {args.seeds}; test split, {len(test[1])} scans)",
        "",
        "| method | digits test accuracy, % (mean, range) | trained parameters | of the image path |",
        "|---|---|---|---|",
        f"| linear probe (L-BFGS) | {100 * probe.accuracy:.1f} | head only | |",
        f"| linear-probe head through the trainer | {100 * lp['eval']['test_accuracy']:.1f} | 0 steps | |",
    ]
    names = {
        "full": "full fine-tuning (300 steps)",
        "lora": "LoRA (rank 2 + BN scale/shift + head, 600 steps)",
        "lpft": "LP-FT (300 steps)",
    }
    for key, name in names.items():
        acc = mean_range([r["eval"]["test_accuracy"] for r in runs[key].values()])
        n, total = params[key]
        of_path = f"{100 * min(n, image_path) / image_path:.1f} % of {image_path:,}"
        lines.append(f"| {name} | {acc} | {n:,} of {total:,} ({100 * n / total:.2f} %) | {of_path} |")
    for title, rows in sweeps.items():
        lines += [
            "",
            f"## WiSE-FT: {title}, seed {seed}",
            "",
            "| alpha | digits test, % | built-in zero-shot, % |",
        ]
        lines.append("|---|---|---|")
        lines += [f"| {r['alpha']:g} | {100 * r['target']:.1f} | {100 * r['zero_shot']:.1f} |" for r in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digits_transfer.md").write_text(table)
    result = {"probe": probe.to_dict(), "runs": runs, "sweeps": sweeps}
    (args.out / "digits_transfer.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
