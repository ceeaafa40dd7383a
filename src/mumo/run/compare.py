"""Train several recipes on the built-in data at one budget and compare them in one table.

``mumo compare configs/compare/*.yaml --out runs/compare`` trains each recipe into ``<out>/<recipe name>``
(resumable: an interrupted comparison picks up where it stopped, finished variants are not retrained),
evaluates every way the model can score (a fusion model twice: by its towers alone, ITC, and by ITC -> ITM
re-ranking), times text -> image queries, and writes ``compare.json`` and ``compare.md``.

With ``--seeds 0 1 2`` each recipe trains once per seed (``<out>/<recipe name>/seed<k>``): a learned figure
from one run can be luck, so the table gives each figure's worst run and its spread over the seeds, and
``compare.json`` keeps every seed's row.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mumo._io import atomic_write, atomic_write_json
from mumo.data.shapes import ShapesDataset
from mumo.data.sources import shapes_config
from mumo.data.tokenizer import Tokenizer
from mumo.data.transforms import normalize
from mumo.errors import ConfigError
from mumo.eval.matching import PairScorer
from mumo.eval.shapes_suite import evaluate_shapes
from mumo.inference import embed_images, embed_texts, eval_mode
from mumo.models import capabilities
from mumo.run.recipes import load as load_recipe
from mumo.run.train import fit
from mumo.run.train import trainer as build_trainer

logger = logging.getLogger(__name__)

ROW_FILE = "compare_row.json"  # per variant, written once its evaluation is complete
NEGATIVE_TYPES = ("swap_colours", "reverse_relation", "change_colour", "change_shape", "change_size")


def scorings(model: nn.Module) -> list[str]:
    """How a model can rank: 'itc' with embeddings, 'itm' with a matching head (both for fusion)."""
    can = capabilities(model)
    return [s for s, needs in (("itc", "embed"), ("itm", "match")) if needs in can]


@torch.no_grad()
def time_text_queries(
    model: nn.Module,
    tokenizer: Tokenizer,
    images: torch.Tensor,
    queries: Sequence[str],
    scoring: str,
    rerank_k: int = 16,
    batch_size: int = 256,
) -> dict[str, float]:
    """Milliseconds per text -> image query over a gallery of ``images`` (N, 3, H, W), normalized.

    What can be computed once per gallery (image embeddings, image tokens) is done before the clock
    starts, as an index would; the clock covers encoding the queries, scoring and, for ITM, the fusion
    passes: ``rerank_k`` per query with embeddings to shortlist by, N per query without.

    Returns:
        ``{"ms_per_query": ..., "fusion_passes_per_query": ...}``.
    """
    n = images.shape[0]
    image_embeds = (
        embed_images(model, images, batch_size=batch_size) if "embed" in capabilities(model) else None
    )
    scorer = PairScorer(model, tokenizer, batch_size=batch_size) if scoring == "itm" else None
    context = scorer.image_context(images) if scorer is not None else None
    with eval_mode(model):
        start = time.perf_counter()
        if image_embeds is not None:
            sim = (
                embed_texts(model, tokenizer, list(queries), batch_size=batch_size) @ image_embeds.T
            )  # (Q, N)
            k = min(rerank_k, n) if scorer is not None else min(10, n)
            shortlist = sim.topk(k, dim=1).indices
        else:
            shortlist = torch.arange(n).expand(len(queries), n)
        if scorer is not None:
            scorer.score_candidates(context, list(queries), shortlist, "texts").argsort(
                dim=1, descending=True
            )
        seconds = time.perf_counter() - start
    passes = 0 if scorer is None else shortlist.shape[1]
    return {"ms_per_query": 1000 * seconds / len(queries), "fusion_passes_per_query": passes}


def _samples_per_s(run_dir: Path) -> float:
    """Median training throughput over the run's logged windows (robust to resumes and warm-up)."""
    path = run_dir / "metrics.jsonl"
    values = (
        [json.loads(line).get("samples_per_s") for line in path.read_text().splitlines()]
        if path.exists()
        else []
    )
    values = [v for v in values if v]
    return statistics.median(values) if values else float("nan")


def compare(
    recipes: Sequence[str | Path],
    out_dir: str | Path,
    overrides: Sequence[str] = (),
    size: int = 1000,
    retrieval_size: int = 1000,
    rerank_k: int = 16,
    num_queries: int = 16,
    progress: bool = True,
    seeds: Sequence[int] | None = None,
    eval_seed: int | None = None,
) -> list[dict[str, Any]]:
    """Train (or resume) each recipe, evaluate each on the same test scenes, and write the table.

    Args:
        recipes: YAML recipes on the built-in shapes data; their file names (stems) name the variants.
        out_dir: runs go to ``out_dir/<stem>``; ``compare.json`` and ``compare.md`` to ``out_dir``.
        overrides: ``key=value`` applied to every recipe (e.g. ``max_steps=200`` for a quicker look).
        size: test scenes for zero-shot and the compositional probe (held-out: size // 2).
        retrieval_size: retrieval gallery (the first pairs of the same test scenes).
        rerank_k: ITC shortlist length that ITM re-ranks.
        num_queries: text queries timed per variant.
        seeds: train each recipe once per seed (``seed=k``), into ``out_dir/<stem>/seed<k>``; None: once,
            with the recipe's own seed, into ``out_dir/<stem>``.
        eval_seed: data seed of the test scenes; None: the recipe's (``data.seed``). Another seed draws
            other scenes, rendered the same way.

    Returns:
        One row per (variant, seed, scoring), as written to ``compare.json``.
    """

    out_dir = Path(out_dir)
    stems = [Path(r).stem for r in recipes]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"recipe names must differ (they name the runs): {stems}")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"give one or more different seeds, got {list(seeds)}")
    runs = [
        (recipe, stem, seed)
        for recipe, stem in zip(recipes, stems, strict=True)
        for seed in (seeds if seeds is not None else [None])
    ]
    rows: list[dict[str, Any]] = []
    for recipe, stem, seed in runs:
        run_dir = out_dir / stem if seed is None else out_dir / stem / f"seed{seed}"
        row_file = run_dir / ROW_FILE
        if row_file.exists():
            logger.info("%s: already trained and evaluated, reusing %s", run_dir, row_file)
            rows.extend(json.loads(row_file.read_text()))
            continue
        seeded = [] if seed is None else [f"seed={seed}"]
        config = load_recipe(recipe, [*overrides, *seeded, f"out_dir={run_dir}", "evaluate=false"])
        if config.data.kind != "shapes":
            raise ConfigError(f"{recipe}: compare runs on the built-in data (data.kind=shapes)")
        trainer = build_trainer(config, resume=True, progress=progress)
        results = fit(trainer)
        model, tokenizer = trainer.model.eval(), trainer.tokenizer
        shapes = shapes_config(config.data)
        if eval_seed is not None:
            shapes = shapes.replace(seed=eval_seed)
        test_set = ShapesDataset("test", retrieval_size, shapes)
        test_pairs = [test_set[i] for i in range(retrieval_size)]
        gallery = normalize(torch.stack([s["image"] for s in test_pairs]))  # (N, 3, H, W)
        queries = [s["caption"] for s in test_pairs[:num_queries]]
        variant_rows = []
        for scoring in scorings(model):
            logger.info("%s: evaluating by %s", stem, scoring)
            ev = evaluate_shapes(
                model,
                tokenizer,
                shapes,
                split="test",
                size=size,
                scoring=scoring,
                rerank_k=rerank_k,
                retrieval_size=retrieval_size,
            )
            m = ev.metrics
            variant_rows.append(
                {
                    "variant": stem,
                    "seed": config.seed,
                    "eval_seed": shapes.seed,
                    "model": config.model,
                    "objectives": list(config.objectives),
                    "hard_negatives": config.hard_negatives,
                    "scoring": scoring
                    if scoring == "itc" or "embed" not in capabilities(model)
                    else "itc->itm",
                    "zero_shot": m["zero_shot"]["top1"],
                    "held_out": m["held_out"]["top1"],
                    "t2i_R@1": m["retrieval"]["text_to_image_R@1"],
                    "t2i_R@1_any_fit": m["retrieval"].get("text_to_image_R@1_any_fit"),
                    "t2i_R@1_ceiling": m["retrieval"]["text_to_image_R@1_ceiling"],
                    "i2t_R@1": m["retrieval"]["image_to_text_R@1"],
                    "compositional": {t: m["compositional"].get(t) for t in (*NEGATIVE_TYPES, "overall")},
                    "train_samples_per_s": _samples_per_s(run_dir),
                    "train_seconds": results.get("train_seconds", float("nan")),  # a finished run: saved
                    **time_text_queries(model, tokenizer, gallery, queries, scoring, rerank_k),
                    "steps": config.max_steps,
                    "batch_size": config.batch_size,
                    "size": size,
                    "retrieval_size": retrieval_size,
                }
            )
        atomic_write_json(row_file, variant_rows)
        rows.extend(variant_rows)
    atomic_write_json(out_dir / "compare.json", rows)
    table = format_table(rows)
    atomic_write(out_dir / "compare.md", lambda p: p.write_text(table))
    return rows


def _groups(rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows of the same (variant, scoring), in first-seen order: one group per table line."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["scoring"]), []).append(r)
    return list(groups.values())


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f}"


def _span(values: Sequence[float | None]) -> str:
    """Percentages as one value, or worst–best when they differ; unknown ones (None, NaN) left out."""
    known = [v for v in values if v is not None and v == v]
    if len(known) < 2 or min(known) == max(known):
        return _pct(known[0] if known else None)
    return f"{_pct(min(known))}–{_pct(max(known))}"


def _ceiling_note(rows: Sequence[dict[str, Any]]) -> str:
    ceilings = [r.get("t2i_R@1_ceiling") for r in rows]
    if all(c is None for c in ceilings):  # rows written before the ceiling was measured
        return ""
    return (
        f" t2i fit: a hit on any image the caption fits (by embeddings; n/a for ITM); some captions fit "
        f"several images, so strict t2i R@1 cannot expect more than {_span(ceilings)} on these scenes."
    )


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (percentages, seconds, samples/s, ms per query). Runs of one
    variant with several seeds share a line: each accuracy as worst–best over the seeds, the speeds as
    medians."""

    def median(values: list[float]) -> float:
        known = [v for v in values if v == v]
        return statistics.median(known) if known else float("nan")

    head = [
        "variant",
        "scoring",
        "seeds",
        "zero-shot",
        "held-out",
        "t2i R@1",
        "t2i fit",
        "i2t R@1",
        *NEGATIVE_TYPES,
        "train s",
        "train samples/s",
        "ms / query",
        "fusion passes / query",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups = _groups(rows)
    for group in groups:
        r = group[0]
        cells = [
            r["variant"],
            r["scoring"],
            ", ".join(str(g.get("seed", "")) for g in group),
            *(
                _span([g.get(k) for g in group])
                for k in ("zero_shot", "held_out", "t2i_R@1", "t2i_R@1_any_fit", "i2t_R@1")
            ),
            *(_span([g["compositional"].get(t) for g in group]) for t in NEGATIVE_TYPES),
            f"{median([g.get('train_seconds', float('nan')) for g in group]):.0f}",
            f"{median([g['train_samples_per_s'] for g in group]):.0f}",
            f"{median([g['ms_per_query'] for g in group]):.2f}",
            str(r["fusion_passes_per_query"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        r = rows[0]
        several = any(len(g) > 1 for g in groups)
        seeds = " Several seeds: worst–best over them; seconds, samples/s and ms / query are medians."
        budgets = dict.fromkeys((g["variant"], g["steps"], g["batch_size"]) for g in rows)  # ordered, once
        if len({(steps, batch) for _, steps, batch in budgets}) == 1:
            budget = f"Budget per variant: {r['steps']} steps x {r['batch_size']} samples."
        else:  # rows trained for different budgets: say each, not the first row's as everyone's
            budget = "Budgets: " + "; ".join(f"{v}: {n} steps x {b}" for v, n, b in budgets) + "."
        lines.append(
            f"\nTest split of the built-in data: zero-shot over {r['size']} one-object scenes (36 classes), "
            f"held-out over {r['size'] // 2}, compositional probe over {r['size']} scenes, retrieval over "
            f"{r['retrieval_size']} pairs. {budget} "
            "Percentages; ms / query = one text -> image query over the retrieval gallery."
            + (seeds if several else "")
            + _ceiling_note(rows)
        )
    return "\n".join(lines) + "\n"
