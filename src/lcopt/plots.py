"""The plots stage: PNG figures from the long table, meant to be read by a person.

- quality vs memory and quality vs latency, one panel per dataset, one point per (model, stack);
- precision vs recall on QA tasks (F1 can hold while the two trade places);
- per-dataset bars of LongBench's score with 95% CIs.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from lcopt.io import atomic_file


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, ".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def _grid(n: int):
    cols = min(3, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _styles(variants: list) -> dict:
    """A distinct (colour, marker) per variant: 20 colours, then the markers change."""
    markers = "osD^v<>P*X"
    return {v: (plt.get_cmap("tab20")(i % 20), markers[(i // 20) % len(markers)]) for i, v in enumerate(variants)}


def _err_bars(value: float, low: float, high: float) -> tuple[float, float]:
    """Error-bar lengths (×100), clipped at 0: when every resample is equal (say all 1.0), the CI
    can miss the mean by a float rounding step, and matplotlib refuses negative lengths."""
    return max(0.0, 100 * (value - low)), max(0.0, 100 * (high - value))


def _points(long: pl.DataFrame, x_metric: str) -> pl.DataFrame:
    quality = long.filter((pl.col("kind") == "quality") & (pl.col("metric") == "score")).select(
        "model", "stack", "dataset", pl.col("value").alias("score"), "ci_low", "ci_high"
    )
    x = long.filter((pl.col("kind") == "system") & (pl.col("metric") == x_metric)).select(
        "model", "stack", "dataset", pl.col("value").alias("x")
    )
    return quality.join(x, on=["model", "stack", "dataset"], how="inner")


def quality_vs(long: pl.DataFrame, x_metric: str, x_label: str, scale: float, path: Path) -> None:
    """One panel per dataset; one colour per (model, stack), the same in every panel."""
    pts = _points(long, x_metric)
    datasets = sorted(pts["dataset"].unique().to_list()) or ["(no data)"]
    variants = sorted(set(pts.select("model", "stack").rows()))
    styles = _styles(variants)
    fig, axes = _grid(len(datasets))
    for ax, ds in zip(axes, datasets, strict=True):
        for r in pts.filter(pl.col("dataset") == ds).iter_rows(named=True):
            yerr = [[d] for d in _err_bars(r["score"], r["ci_low"], r["ci_high"])]
            ax.errorbar(
                r["x"] * scale,
                100 * r["score"],
                yerr=yerr,
                fmt=styles[(r["model"], r["stack"])][1],
                capsize=3,
                color=styles[(r["model"], r["stack"])][0],
                label=f"{r['model']} / {r['stack']}",
            )
        ax.set_title(ds)
        ax.set_xlabel(x_label)
        ax.set_ylabel("LongBench score (×100)")
        ax.set_ylim(-2, 105)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle(f"Quality vs {x_label} (95% CI)")
    _save(fig, path)


def precision_recall(long: pl.DataFrame, path: Path) -> None:
    q = long.filter(
        (pl.col("kind") == "quality")
        & pl.col("metric").is_in(["precision", "recall"])
        & (pl.col("longbench_metric") == "qa_f1")
    )
    table = (
        q.pivot(on="metric", index=["model", "stack", "dataset"], values="value", aggregate_function="first")
        if not q.is_empty()
        else pl.DataFrame()
    )
    fig, ax = plt.subplots(figsize=(6, 5))
    if not table.is_empty():
        for ds in sorted(table["dataset"].unique().to_list()):
            sub = table.filter(pl.col("dataset") == ds)
            ax.scatter(100 * sub["recall"].to_numpy(), 100 * sub["precision"].to_numpy(), label=ds)
            for r in sub.iter_rows(named=True):
                ax.annotate(
                    f"{r['model']}/{r['stack']}",
                    (100 * r["recall"], 100 * r["precision"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.legend(fontsize=8)
    ax.plot([0, 100], [0, 100], ls=":", color="grey")
    ax.set_xlim(0, 105)
    ax.set_ylim(0, 105)
    ax.set_xlabel("token recall (×100)")
    ax.set_ylabel("token precision (×100)")
    ax.set_title("Precision vs recall (QA tasks)")
    ax.grid(alpha=0.3)
    _save(fig, path)


def score_bars(long: pl.DataFrame, path: Path) -> None:
    """One panel per dataset, one horizontal bar per (model, stack): readable for any number of stacks."""
    q = long.filter((pl.col("kind") == "quality") & (pl.col("metric") == "score"))
    datasets = sorted(q["dataset"].unique().to_list()) or ["(no data)"]
    variants = sorted(set(q.select("model", "stack").rows()))
    styles = _styles(variants)
    fig, axes = _grid(len(datasets))
    rows = math.ceil(len(axes) / 3)  # _grid's rows: room for one bar per variant in each
    fig.set_figheight(max(fig.get_figheight(), rows * (0.22 * len(variants) + 1)))
    for ax, ds in zip(axes, datasets, strict=True):
        rows = {(r["model"], r["stack"]): r for r in q.filter(pl.col("dataset") == ds).iter_rows(named=True)}
        shown = [v for v in variants if v in rows]
        values = [100 * rows[v]["value"] for v in shown]
        bars = [_err_bars(rows[v]["value"], rows[v]["ci_low"], rows[v]["ci_high"]) for v in shown]
        errors = [[lo for lo, _ in bars], [hi for _, hi in bars]]
        ax.barh(range(len(shown)), values, xerr=errors, capsize=2, color=[styles[v][0] for v in shown])
        ax.set_yticks(range(len(shown)), [f"{m} / {st}" for m, st in shown], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 105)
        ax.set_xlabel("LongBench score (×100), 95% CI")
        ax.set_title(ds)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Score per dataset")
    _save(fig, path)


def write_plots(long_parquet: Path, out_dir: Path) -> None:
    long = pl.read_parquet(long_parquet)
    out_dir = Path(out_dir)
    quality_vs(long, "peak_mem_bytes", "peak memory (MiB)", 2**-20, out_dir / "quality_vs_memory.png")
    quality_vs(long, "e2e_s", "end-to-end latency (s)", 1.0, out_dir / "quality_vs_latency.png")
    precision_recall(long, out_dir / "precision_recall.png")
    score_bars(long, out_dir / "scores.png")
