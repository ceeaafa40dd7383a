"""Same seed, same weights: two runs of one config end bit-identical on CPU, whatever state torch's global
generator was in before (a fresh process draws it at random), for every kind of data and for LoRA.

Each kind draws from the global generator somewhere (random crops of pairs, class folders and shards;
dropout; LoRA's initialisation), so each is a case of its own."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import mumo
from mumo.data.shapes import ShapesConfig, write_captions, write_shapes
from mumo.data.shard_writer import shard_source, write_shards
from mumo.data.tokenizer import Tokenizer
from mumo.run.train import train
from mumo.train import load_recipe

COMMON = [
    "batch_size=8",
    "max_steps=3",
    "checkpoint_every=3",
    "data.image_size=32",
    "data.tokenizer_samples=64",
    "data.tokenizer_vocab_size=300",
    "optim.warmup_steps=1",
    "evaluate=false",
    "report=false",
    "tensorboard=false",
    "threads=1",
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Every kind of training data on disk, and a pretrained dual encoder to fine-tune."""
    root = tmp_path_factory.mktemp("sources")
    shapes = ShapesConfig(image_size=32)
    pairs = write_shapes(root / "pairs", 48, config=shapes) / "captions.jsonl"
    write_shards(shard_source("shapes", size=48, image_size=32, seed=0), root / "shards", 16)
    text = root / "corpus.txt"
    write_captions(text, 200, config=shapes)
    for i, line in enumerate(pairs.read_text().splitlines()):  # class folders by the first object's colour
        record = json.loads(line)
        folder = root / "folder" / record["objects"][0]["colour"]
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(pairs.parent / record["image"]).save(folder / f"{i}.png")
    tokenizer = Tokenizer.train(["a photo of the digit one.", "a photo of a red."] * 20, 300)
    pretrained = root / "pretrained"
    model = mumo.create_model("clip_conv_tiny", seed=0, **{"text.vocab_size": tokenizer.vocab_size})
    mumo.save_pretrained(model, pretrained, tokenizer)
    return {
        "pairs": pairs,
        "shards": root / "shards",
        "text": text,
        "folder": root / "folder",
        "pre": pretrained,
    }


CASES = {
    "shapes": ["model=clip_vit_tiny"],
    "pairs": ["model=clip_conv_tiny", "data.kind=pairs", "data.path={pairs}"],
    "shards": ["model=clip_conv_tiny", "data.kind=shards", "data.path={shards}"],
    "text": ["model=gpt_tiny", "objectives=[lm]", "data.kind=text", "data.path={text}", "data.val_size=4"],
    "digits": ["init_from={pre}", "objectives=[cls]", "data.kind=digits"],
    "imagefolder": ["init_from={pre}", "objectives=[cls]", "data.kind=imagefolder", "data.path={folder}"],
    "lora": ["init_from={pre}", "objectives=[cls]", "data.kind=digits", "finetune.lora_rank=2"]
    + ["finetune.lora_dropout=0.1", r"finetune.lora_targets=['clip\.visual\.stages', 'clip\.image_proj']"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_runs_of_one_seed_end_bit_identical(sources, tmp_path, case):
    overrides = [o.format(**sources) for o in CASES[case]]
    weights = []
    for run, global_seed in enumerate((1, 2)):  # as two fresh processes would, the global state differs
        torch.manual_seed(global_seed)
        out = tmp_path / f"run{run}"
        train(load_recipe(None, [*COMMON, *overrides, "seed=7", f"out_dir={out}"]), progress=False)
        weights.append(load_file(str(out / "final" / "model.safetensors")))
    first, second = weights
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{len(different)} of {len(first)} tensors differ, e.g. {different[:3]}"
