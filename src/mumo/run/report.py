"""Run report: ``report.html`` (self-contained) and ``report.md`` with the metrics table and plots
(training curves, similarity matrix of test pairs with their images, zero-shot confusion matrix, retrieval
grid, generated captions), written next to the run's metrics at the end of every run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mumo.eval.captioning import CAPTION_IMAGES
from mumo.eval.shapes_suite import FIGURES, ShapesEvaluation


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics_jsonl: Path, out: Path) -> Path:
    """Training curves from a run's metrics.jsonl, one panel each: the losses (total and per objective),
    the learning rate, and the contrastive temperature when the run has one."""
    plt = _plt()
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows]
    losses = [k for k in rows[0] if k == "loss" or k.startswith("loss/")] if rows else []
    panels = [("loss", losses), ("learning rate", ["lr"]), ("temperature", ["temperature"])]
    panels = [(title, [k for k in keys if rows and k in rows[0]]) for title, keys in panels]
    panels = [(title, keys) for title, keys in panels if keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        for k in keys:
            ax.plot(steps, [r.get(k) for r in rows], label=k, linewidth=1.4 if k == "loss" else 1.0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_similarity(fig_data: ShapesEvaluation, out: Path) -> Path:
    """The (P, P) similarity matrix, each image above its column and each caption beside its row."""
    plt = _plt()
    p = fig_data.similarity.shape[0]
    fig = plt.figure(figsize=(1.0 + 0.55 * p + 4.5, 1.2 + 0.55 * p))
    grid = fig.add_gridspec(
        2, 1, height_ratios=[1, p], hspace=0.02, left=0.36, right=0.98, top=0.98, bottom=0.02
    )
    top = grid[0].subgridspec(1, p, wspace=0.05)
    for j in range(p):
        ax = fig.add_subplot(top[0, j])
        ax.imshow(fig_data.pair_images[j].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.axis("off")
    ax = fig.add_subplot(grid[1])
    sim = fig_data.similarity.numpy()
    ax.imshow(sim, cmap="viridis", aspect="auto")
    for i in range(p):
        for j in range(p):
            ax.text(
                j,
                i,
                f"{sim[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=5.5,
                color="white" if sim[i, j] < sim.max() * 0.7 else "black",
            )
    ax.set_yticks(
        range(p), [c if len(c) <= 64 else c[:61] + "..." for c in fig_data.pair_captions], fontsize=6.5
    )
    ax.set_xticks([])
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_confusion(fig_data: ShapesEvaluation, out: Path) -> Path:
    """Zero-shot confusion matrix, rows normalised to fractions."""
    plt = _plt()
    conf = fig_data.confusion.float()
    conf = conf / conf.sum(dim=1, keepdim=True).clamp_min(1)
    c = conf.shape[0]
    fig, ax = plt.subplots(figsize=(0.22 * c + 2.5, 0.22 * c + 2))
    ax.imshow(conf.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(c), fig_data.class_names, rotation=90, fontsize=6)
    ax.set_yticks(range(c), fig_data.class_names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %"


def _fmt(key: str, v: Any) -> str:
    """Fractions as percentages; counts, ranks and everything else as they are."""
    if isinstance(v, float) and not (key == "n" or key.startswith("n_") or "rank" in key) and 0.0 <= v <= 1.0:
        return _percent(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _png(image: Any) -> bytes:
    """(3, H, W) tensor in [0, 1] -> PNG bytes."""
    from io import BytesIO

    from PIL import Image

    pixels = (image.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _metric_rows(evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for group, values in evaluation.items():
        if not isinstance(values, dict):
            rows.append((group, _fmt(group, values)))
            continue
        for k, v in values.items():
            if isinstance(v, dict):  # one level deeper: VQA per kind, caption attributes per kind
                rows += [(f"{group} / {k} / {kk}", _fmt(kk, vv)) for kk, vv in v.items()]
            elif k != "examples":
                rows.append((f"{group} / {k}", _fmt(k, v)))
    return rows


def headline_rows(evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline metrics of an evaluation as (label, value) rows, what a terminal shows at the end of
    ``mumo train`` / ``finetune`` / ``demo`` and for ``mumo eval``: whichever of zero-shot, retrieval and
    the compositional probe (the built-in data), captioning, VQA, perplexity and accuracy it holds.

    A few named numbers in words; the report lists every metric under its key (``_metric_rows``).

    Args:
        evaluation: the ``eval`` part of a run's metrics.json, or what ``mumo eval`` computes.
    """
    rows: list[tuple[str, str]] = []
    if "zero_shot" in evaluation:
        zs, ho, rt = evaluation["zero_shot"], evaluation["held_out"], evaluation["retrieval"]
        rows.append(("zero-shot colour x shape top-1", _percent(zs["top1"])))
        rows.append(("held-out combinations top-1", _percent(ho["top1"])))
        if "zero_shot_paraphrased" in evaluation:
            para = evaluation["zero_shot_paraphrased"]
            detail = f"(colour {_percent(para['colour'])}, shape {_percent(para['shape'])})"
            rows.append(("zero-shot, paraphrased class names", f"{_percent(para['top1'])} {detail}"))
        rows.append((f"text->image R@1 ({rt['n']} pairs)", _percent(rt["text_to_image_R@1"])))
        if "text_to_image_R@1_ceiling" in rt:  # runs evaluated before these were added have neither
            fit = rt.get("text_to_image_R@1_any_fit")  # ITC only: ITM ranks by fusion passes
            rows.append(
                (
                    "text->image R@1 ceiling (captions that fit several images)",
                    _percent(rt["text_to_image_R@1_ceiling"]),
                )
            )
            if fit is not None:
                rows.append(("text->image R@1, any image the caption fits", _percent(fit)))
        rows.append((f"image->text R@1 ({rt['n']} pairs)", _percent(rt["image_to_text_R@1"])))
        rows += [
            (f"compositional: {k}", _percent(v))
            for k, v in evaluation["compositional"].items()
            if not k.startswith("n_")  # counts of probe items, not scores
        ]
    if "captioning" in evaluation:
        cap = evaluation["captioning"]
        rows.append((f"captions: CIDEr-D ({cap['n']} images)", f"{cap['CIDEr-D']:.3f}"))
        rows.append(("captions: BLEU-4", f"{cap['BLEU-4']:.3f}"))
        # METEOR only where Java was installed; ROUGE-L absent from runs evaluated before it was added
        rows += [(f"captions: {k}", f"{cap[k]:.3f}") for k in ("METEOR", "ROUGE-L") if k in cap]
        rows.append(("captions: attribute accuracy", _percent(cap["attribute_accuracy"])))
    if "vqa" in evaluation:
        vqa = evaluation["vqa"]
        rows.append(("VQA exact match (mean over kinds)", _percent(vqa["macro"])))
        rows += [
            (f"VQA: {k} ({vqa['counts'][k]} questions)", _percent(v)) for k, v in vqa["per_kind"].items()
        ]
    if "perplexity" in evaluation:
        rows.append(("held-out perplexity", f"{evaluation['perplexity']:.2f}"))
    for split in ("val", "test"):
        if f"{split}_accuracy" in evaluation:
            rows.append((f"{split} accuracy", _percent(evaluation[f"{split}_accuracy"])))
    return rows


SIMILARITY_NOTE = (
    "Score of each image (columns, shown on top) with each caption (rows): cosine similarity, or the ITM "
    "log-odds of a fusion model; a trained model puts its largest values on the diagonal."
)


@dataclass
class _Content:
    """What a report shows, gathered once from a run folder and drawn as Markdown and as HTML."""

    run_dir: Path
    rows: list[tuple[str, str]]  # (metric, value)
    stats: list[tuple[str, str]]  # (what, value): steps, time, speed, skipped images
    curves: Path | None = None
    similarity: Path | None = None
    pairs: int = 0  # test pairs in the similarity plot
    confusion: Path | None = None
    grid: list[tuple[str, list[tuple[bytes, bool]]]] = field(default_factory=list)  # query, (png, own)
    captioned: list[tuple[bytes | None, str, str]] = field(default_factory=list)  # png, generated, reference


def _gather(run_dir: Path) -> _Content:
    """Read the run's metrics and saved evaluation data; draw the plots (PNG files beside the report)."""

    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    evaluation = metrics.get("eval", {})
    stats = [
        (k.replace("_", " "), _fmt(k, metrics[k]))
        for k in ("steps", "train_seconds", "samples_per_s")
        if k in metrics
    ]
    if metrics.get("skipped_images"):
        stats.append(("skipped images", f"{len(metrics['skipped_images'])} (listed in metrics.json)"))
    content = _Content(run_dir, _metric_rows(evaluation), stats)
    jsonl = run_dir / "metrics.jsonl"
    if jsonl.is_file() and jsonl.read_text().strip():
        content.curves = plot_curves(jsonl, run_dir / "curves.png")
    if (run_dir / f"{FIGURES}.json").is_file():
        figures = ShapesEvaluation.load(run_dir)
        content.similarity = plot_similarity(figures, run_dir / "similarity.png")
        content.pairs = figures.similarity.shape[0]
        content.confusion = plot_confusion(figures, run_dir / "confusion.png")
        for q, query in enumerate(figures.grid_queries):
            hits = figures.grid_top[q].tolist()
            content.grid.append(
                (query, [(_png(figures.grid_images[q, j]), row == q) for j, row in enumerate(hits)])
            )
    examples = evaluation.get("captioning", {}).get("examples", [])
    if examples:
        from safetensors.torch import load_file

        saved = run_dir / CAPTION_IMAGES
        images = load_file(str(saved))["images"] if saved.is_file() else []
        content.captioned = [
            (_png(images[i]) if i < len(images) else None, g, r) for i, (g, r) in enumerate(examples)
        ]
    return content


def _markdown(c: _Content) -> str:
    md = [f"# mumo run report: `{c.run_dir}`", ""]
    if c.rows:
        md += [
            "## Metrics",
            "",
            "| metric | value |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in c.rows],
            "",
        ]
    if c.captioned:
        md += ["## Generated captions (first test images)", "", "| generated | a reference |", "|---|---|"]
        md += [f"| {g} | {r} |" for _, g, r in c.captioned] + [""]
    md += [f"- {k}: {v}" for k, v in c.stats] + [""]
    if c.curves:
        md += ["## Training curves", "", f"![curves]({c.curves.name})", ""]
    if c.similarity and c.confusion:
        md += [
            f"## Similarity of {c.pairs} test pairs",
            "",
            SIMILARITY_NOTE,
            "",
            f"![similarity]({c.similarity.name})",
        ]
        md += [
            "",
            "## Zero-shot confusion matrix (single-object test images)",
            "",
            f"![confusion]({c.confusion.name})",
            "",
        ]
    if c.grid:
        md += [
            "## Retrieval: test captions and their top images",
            "",
            "| query | own image at rank |",
            "|---|---|",
        ]
        for query, hits in c.grid:
            rank = next((str(j + 1) for j, (_, own) in enumerate(hits) if own), f"> {len(hits)}")
            md.append(f"| {query} | {rank} |")
        md.append("")
    return "\n".join([*md, "Numbers in full: `metrics.json`; pictures: `report.html`.", ""])


def _html(c: _Content) -> str:
    import html

    e = html.escape  # every text from the run, captions included, is shown, never parsed

    def plot(path: Path, alt: str) -> str:
        return f'<img class="plot" alt="{alt}" src="{_data_uri(path.read_bytes())}">'

    title = f"mumo run report: {e(str(c.run_dir))}"
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>']
    out += [f"<style>{_CSS}</style></head><body>", f"<h1>{title}</h1>"]
    if c.rows:
        out += [
            "<h2>Metrics</h2><table>",
            *[f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in c.rows],
            "</table>",
        ]
    if c.stats:
        out.append("<ul>" + "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in c.stats) + "</ul>")
    if c.curves:
        out += ["<h2>Training curves</h2>", plot(c.curves, "training curves")]
    if c.similarity and c.confusion:
        out += [
            f"<h2>Similarity of {c.pairs} test pairs</h2><p>{e(SIMILARITY_NOTE)}</p>",
            plot(c.similarity, "similarity"),
        ]
        out += ["<h2>Zero-shot confusion matrix</h2>", plot(c.confusion, "confusion matrix")]
    if c.grid:
        out += [
            "<h2>Retrieval: test captions and their top images</h2>",
            "<p>Green: the caption's own image.</p>",
        ]
        out.append('<table class="grid">')
        for query, hits in c.grid:
            cells = "".join(
                f'<td><img class="{"own" if own else "other"}" alt="rank {j + 1}" src="{_data_uri(png)}">'
                for j, (png, own) in enumerate(hits)
            )
            out.append(f'<tr><td class="text">{e(query)}</td>{cells}</tr>')
        out.append("</table>")
    if c.captioned:
        out += ['<h2>Generated captions (first test images)</h2><table class="grid">']
        out.append("<tr><th></th><th>generated</th><th>a reference</th></tr>")
        for png, generated, reference in c.captioned:
            picture = f'<img alt="test image" src="{_data_uri(png)}">' if png else ""
            texts = "".join(f'<td class="text">{e(t)}</td>' for t in (generated, reference))
            out.append(f"<tr><td>{picture}</td>{texts}</tr>")
        out.append("</table>")
    return "\n".join([*out, "<p>Numbers in full: <code>metrics.json</code>.</p></body></html>"])


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` (one self-contained page) and ``report.md`` (+ PNG plots) into a run folder
    from its metrics.json, metrics.jsonl and saved evaluation data; returns the HTML report's path.

    Sections, where the run has them: metrics, run figures, training curves (losses, learning rate,
    temperature), the similarity of test pairs, the zero-shot confusion matrix, a retrieval grid (test
    captions with their top images) and, for captioners, test images with their generated captions.
    Every text from the run (captions included) is escaped in the page: shown, never run.
    """
    run_dir = Path(run_dir)
    content = _gather(run_dir)
    (run_dir / "report.md").write_text(_markdown(content), encoding="utf-8")
    path = run_dir / "report.html"
    path.write_text(_html(content), encoding="utf-8")
    return path


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 1rem auto; padding: 0 1rem; }
body { color: #222; } h1 { font-size: 1.3rem; } h2 { font-size: 1.08rem; margin-top: 1.8rem; }
table { border-collapse: collapse; }
td, th { padding: .2rem .6rem; border-bottom: 1px solid #eee; text-align: left; }
img.plot { max-width: 100%; } .grid img { width: 64px; height: 64px; image-rendering: pixelated; }
img.own { outline: 3px solid #2a2; } img.other { outline: 1px solid #ccc; } td.text { max-width: 28rem; }
"""
