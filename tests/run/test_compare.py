"""`mumo compare`: variants trained at one budget, one table, resumable."""

import json

import pytest

from mumo.errors import ConfigError
from mumo.run.compare import compare, format_table

COMMON = """
batch_size: 16
max_steps: 3
log_every: 1
threads: 1
tensorboard: false
data:
  image_size: 32
  max_objects: 2
  train_size: 256
  tokenizer_samples: 200
  tokenizer_vocab_size: 300
optim:
  warmup_steps: 0
"""


def test_compare_trains_each_recipe_once_and_writes_one_table(tmp_path):
    (tmp_path / "common.yaml").write_text(COMMON)
    (tmp_path / "dual.yaml").write_text("base: common.yaml\nmodel: clip_conv_tiny\n")
    (tmp_path / "fusion.yaml").write_text(
        "base: common.yaml\nmodel: fusion_vit_tiny\nobjectives: [itc, itm]\nhard_negatives: 1\n"
    )
    (tmp_path / "early.yaml").write_text("base: common.yaml\nmodel: single_stream_tiny\nobjectives: [itm]\n")
    recipes = [tmp_path / f"{n}.yaml" for n in ("dual", "fusion", "early")]
    out = tmp_path / "out"
    rows = compare(recipes, out, size=8, retrieval_size=6, rerank_k=3, num_queries=2, progress=False)
    assert [(r["variant"], r["scoring"]) for r in rows] == [
        ("dual", "itc"),
        ("fusion", "itc"),
        ("fusion", "itc->itm"),
        ("early", "itm"),
    ]
    passes = {(r["variant"], r["scoring"]): r["fusion_passes_per_query"] for r in rows}
    expected = {("dual", "itc"): 0, ("fusion", "itc"): 0, ("fusion", "itc->itm"): 3, ("early", "itm"): 6}
    assert passes == expected  # ITC alone: none; re-ranking: the shortlist; early fusion: the gallery
    for r in rows:
        assert 0.0 <= r["zero_shot"] <= 1.0 and 0.0 <= r["compositional"]["change_colour"] <= 1.0
        assert r["train_samples_per_s"] > 0 and r["ms_per_query"] > 0 and r["steps"] == 3
    table = (out / "compare.md").read_text()
    assert table == format_table(rows) and table.count("\n| ") == 4 and "3 steps x 16 samples" in table
    assert json.loads((out / "compare.json").read_text()) == rows

    # a second call reuses finished variants instead of retraining them
    stamp = (out / "dual" / "final" / "model.safetensors").stat().st_mtime_ns
    again = compare(recipes[:1], out, size=8, retrieval_size=6, num_queries=2, progress=False)
    assert again == rows[:1]
    assert (out / "dual" / "final" / "model.safetensors").stat().st_mtime_ns == stamp


def test_compare_refuses_recipes_with_the_same_name(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "dual.yaml").write_text(COMMON)
    with pytest.raises(ConfigError, match="must differ"):
        compare([tmp_path / "a" / "dual.yaml", tmp_path / "b" / "dual.yaml"], tmp_path / "out")


def test_compare_over_seeds_trains_each_seed_and_gives_the_worst_and_best(tmp_path):
    (tmp_path / "common.yaml").write_text(COMMON)
    (tmp_path / "dual.yaml").write_text("base: common.yaml\nmodel: clip_conv_tiny\n")
    out = tmp_path / "out"
    kwargs = dict(size=8, retrieval_size=6, num_queries=2, progress=False)
    rows = compare([tmp_path / "dual.yaml"], out, seeds=[3, 4], eval_seed=9, **kwargs)
    assert [(r["seed"], r["eval_seed"]) for r in rows] == [(3, 9), (4, 9)]
    assert all(r["train_seconds"] > 0 for r in rows)
    assert json.loads((out / "dual" / "seed4" / "train_config.json").read_text())["seed"] == 4
    line = format_table(rows).splitlines()[2]
    worst, best = sorted(r["t2i_R@1"] for r in rows)
    expected = f"{100 * worst:.1f}" if worst == best else f"{100 * worst:.1f}–{100 * best:.1f}"
    assert line.startswith("| dual | itc | 3, 4 | ") and f"| {expected} |" in line
    assert f"Budget per variant: {rows[0]['steps']} steps x" in format_table(rows)
    longer = {**rows[1], "variant": "longer", "steps": 5 * rows[1]["steps"]}
    footer = format_table([rows[0], longer])
    assert "Budget per variant" not in footer  # not the first row's budget as everyone's
    assert f"dual: {rows[0]['steps']} steps x" in footer and f"longer: {longer['steps']} steps x" in footer
    with pytest.raises(ConfigError, match="different seeds"):
        compare([tmp_path / "dual.yaml"], out, seeds=[1, 1])
