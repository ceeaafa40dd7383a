"""Run report: ``report.md`` with the metrics table and plots (loss curve, similarity matrix of test
pairs with their images, zero-shot confusion matrix), written next to the run's metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mumo.eval.shapes_suite import FIGURES, ShapesEvaluation


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def plot_loss(metrics_jsonl: Path, out: Path) -> Path:
    """Loss (and learning rate) against step from a run's metrics.jsonl."""
    plt = _plt()
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [r["loss"] for r in rows], label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.grid(alpha=0.3)
    if rows and "lr" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(steps, [r["lr"] for r in rows], color="tab:orange", alpha=0.6, label="lr")
        ax2.set_ylabel("learning rate")
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


def _fmt(key: str, v: Any) -> str:
    """Fractions as percentages; counts, ranks and everything else as they are."""
    if isinstance(v, float) and not (key == "n" or key.startswith("n_") or "rank" in key) and 0.0 <= v <= 1.0:
        return f"{100 * v:.1f} %"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` (+ PNG plots) into a run folder from its metrics.json, metrics.jsonl and saved
    evaluation figures; returns the report's path."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    figures = ShapesEvaluation.load(run_dir) if (run_dir / f"{FIGURES}.json").is_file() else None
    lines = [f"# mumo run report: `{run_dir}`", ""]
    evaluation = metrics.get("eval", {})
    if evaluation:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        for group, values in evaluation.items():
            if not isinstance(values, dict):
                lines.append(f"| {group} | {_fmt(group, values)} |")
                continue
            for k, v in values.items():
                if isinstance(v, dict):  # one level deeper: VQA per kind, caption attributes per kind
                    lines += [f"| {group} / {k} / {kk} | {_fmt(kk, vv)} |" for kk, vv in v.items()]
                elif k != "examples":
                    lines.append(f"| {group} / {k} | {_fmt(k, v)} |")
        lines.append("")
        examples = evaluation.get("captioning", {}).get("examples", [])
        if examples:
            lines += [
                "## Generated captions (first test images)",
                "",
                "| generated | a reference |",
                "|---|---|",
            ]
            lines += [f"| {g} | {r} |" for g, r in examples]
            lines.append("")
    for key in ("steps", "train_seconds", "samples_per_s"):
        if key in metrics:
            lines.append(f"- {key.replace('_', ' ')}: {_fmt(key, metrics[key])}")
    if metrics.get("skipped_images"):
        lines.append(f"- skipped images: {len(metrics['skipped_images'])} (listed in metrics.json)")
    lines.append("")
    jsonl = run_dir / "metrics.jsonl"
    if jsonl.is_file() and jsonl.read_text().strip():
        lines += ["## Training loss", "", f"![loss]({plot_loss(jsonl, run_dir / 'loss.png').name})", ""]
    if figures is not None:
        sim = plot_similarity(figures, run_dir / "similarity.png")
        conf = plot_confusion(figures, run_dir / "confusion.png")
        lines += [
            f"## Similarity of {figures.similarity.shape[0]} test pairs",
            "",
            "Score of each image (columns, shown on top) with each caption (rows): cosine similarity, or "
            "the ITM log-odds of a fusion model; a trained model puts its largest values on the diagonal.",
            "",
            f"![similarity]({sim.name})",
            "",
            "## Zero-shot confusion matrix (single-object test images)",
            "",
            f"![confusion]({conf.name})",
            "",
        ]
    lines += ["Numbers in full: `metrics.json`.", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
