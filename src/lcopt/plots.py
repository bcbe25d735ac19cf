"""The plots stage: PNG figures read from the Polars tables only, meant to be read by a person.

Per model and task family (QA, multi-hop QA, summarization, retrieval):
- quality vs peak memory and vs decode latency, one panel per dataset, the Pareto front marked and
  its stacks named;
- token precision vs recall with F1 iso-lines (F1 can hold while the two trade places).
Per model:
- the interaction heatmap of every Level-2 stack (its measured score vs what independent parts keep,
  hatched where Benjamini–Hochberg's q ≥ 0.05);
- measured time beside the roofline (theoretical) time, where the run has GPU data;
- context-length scaling (score and time to first token vs prompt length) and the passkey needle's
  depth × length heatmap.
Over the run: per-dataset bars of LongBench's score with 95% CIs.

Every stack keeps one style in every figure: colour = its first technique, marker = its second
(Okabe–Ito colours, safe for colour-blind readers); the baseline is a black star.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lcopt.io import atomic_file
from lcopt.report import Figure, level, report_family
from lcopt.stats import as_percent

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency; yellow last (faint on white).
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#999999", "#F0E442")
SECOND_MARKERS = "s^vDPX<>ph"
BASELINE_STYLE = ("#000000", "*")

# x axes of the trade-off figures: system metric -> (axis label with unit, scale from the table's unit)
X_METRICS = {
    "peak_mem_bytes": ("peak memory (MiB)", 2**-20),
    "tpot_s": ("decode latency (ms per output token)", 1e3),
}
# measured system metric <- its roofline (theoretical) counterpart, both in seconds. The GPU engine
# writes `roofline_*`; a measured metric without its roofline pair is not drawn.
ROOFLINE_PAIRS = {
    "roofline_prefill_s": ("ttft_s", "prefill (time to first token)"),
    "roofline_decode_s": ("tpot_s", "decode (per output token)"),
}


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _grid(n: int, cols: int = 3, width: float = 4.4, height: float = 3.6):
    cols = min(cols, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _message(path: Path, title: str, text: str) -> None:
    """A figure that says why there is nothing to draw, so the report never has a silent gap."""
    fig, ax = plt.subplots(figsize=(7, 2.2))
    ax.axis("off")
    ax.set_title(title, loc="left", fontsize=12)
    ax.text(0.0, 0.5, text, ha="left", va="center", wrap=True, fontsize=11, transform=ax.transAxes)
    _save(fig, path)


def stack_order(stacks: Sequence[str]) -> list[str]:
    """Baseline, then Level 1, then Level 2..., alphabetical within a level."""
    return sorted(set(stacks), key=lambda s: (level(s), s))


def stack_styles(stacks: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per stack: colour from its first technique, marker from its second ('o' alone)."""
    ordered = stack_order(stacks)
    techniques: list[str] = []
    for s in ordered:
        for t in [] if s == "baseline" else s.split("+"):
            if t not in techniques:
                techniques.append(t)
    colour = {t: OKABE_ITO[i % len(OKABE_ITO)] for i, t in enumerate(techniques)}
    marker = {t: SECOND_MARKERS[i % len(SECOND_MARKERS)] for i, t in enumerate(techniques)}
    styles = {}
    for s in ordered:
        if s == "baseline":
            styles[s] = BASELINE_STYLE
        else:
            parts = s.split("+")
            styles[s] = (colour[parts[0]], marker[parts[1]] if len(parts) > 1 else "o")
    return styles


def _stack_legend(fig, styles: dict[str, tuple[str, str]]) -> None:
    """One legend entry per stack, outside the axes (right), so it never covers data."""
    handles = [
        plt.Line2D([], [], ls="", marker=m, color=c, markersize=9 if m == "*" else 7, label=s)
        for s, (c, m) in styles.items()
    ]
    ncol = 1 if len(handles) <= 12 else 2
    # the legend takes its width from the figure: widen the figure by as much, so the axes keep theirs
    width, height = fig.get_size_inches()
    fig.set_size_inches(width + ncol * (0.5 + 0.07 * max((len(s) for s in styles), default=0)), height)
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="stack", title_fontsize=9,
               frameon=False, ncol=ncol)  # fmt: skip


def _err_bars(value: float, low: float, high: float) -> tuple[float, float]:
    """Error-bar lengths (×100), clipped at 0: when every resample is equal (say all 1.0), the CI
    can miss the mean by a float rounding step, and matplotlib refuses negative lengths."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return 0.0, 0.0
    return max(0.0, 100 * (value - low)), max(0.0, 100 * (high - value))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point beats: lower or equal x (cost) and higher or equal y
    (quality), better in one. Sorted by x. Of exact duplicates, the first is kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front, best_y = [], -math.inf
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def _with_family(long: pl.DataFrame) -> pl.DataFrame:
    return long.with_columns(pl.col("family").map_elements(report_family, return_dtype=pl.Utf8).alias("report_family"))


def _scores(long: pl.DataFrame, model: str, family: str | None = None) -> pl.DataFrame:
    sel = _with_family(long).filter(
        (pl.col("kind") == "quality") & (pl.col("metric") == "score") & (pl.col("model") == model)
    )
    if family is not None:
        sel = sel.filter(pl.col("report_family") == family)
    return sel.select("stack", "dataset", pl.col("value").alias("score"), "ci_low", "ci_high", "n_values")


def _system(long: pl.DataFrame, model: str, metric: str) -> pl.DataFrame:
    return long.filter((pl.col("kind") == "system") & (pl.col("metric") == metric) & (pl.col("model") == model)).select(
        "stack", "dataset", pl.col("value").alias(metric)
    )


def _label_front(ax, points: list[tuple[float, float]], names: list[str]) -> None:
    """Name the Pareto front's stacks up-left of their points: no point lies there (it would beat the
    front), so a label never covers data; a label that would touch the one below moves up."""
    ax.autoscale_view()
    to_points = 72 / ax.figure.dpi
    last_top = -math.inf
    for (x, y), name in zip(points, names, strict=True):  # cheapest first, so y rises
        py = ax.transData.transform((x, y))[1]
        bottom = max(py + 3 / to_points, last_top + 2 / to_points)
        ax.annotate(
            name,
            (x, y),
            xytext=(-3, (bottom - py) * to_points),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.1",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
        )
        last_top = bottom + 10 / to_points


def quality_vs(long: pl.DataFrame, model: str, family: str, x_metric: str, path: Path) -> dict[str, list[str]]:
    """One panel per dataset of the family: score (95% CI) against a system cost, the Pareto front
    (cheapest stack for each level of quality) as a dashed step line with its stacks named.
    Returns each dataset's front, cheapest first."""
    x_label, scale = X_METRICS[x_metric]
    pts = _scores(long, model, family).join(_system(long, model, x_metric), on=["stack", "dataset"], how="inner")
    title = f"{model}, {family}: quality vs {x_label.split(' (')[0]}"
    if pts.is_empty():
        _message(path, title, f"No {family} dataset with a measured {x_metric} in this run.")
        return {}
    fronts = {}
    styles = stack_styles(pts["stack"].to_list())
    datasets = sorted(pts["dataset"].unique().to_list())
    fig, axes = _grid(len(datasets))
    for ax, ds in zip(axes, datasets, strict=True):
        rows = pts.filter(pl.col("dataset") == ds).sort("stack").to_dicts()
        for r in rows:
            colour, marker = styles[r["stack"]]
            lo, hi = _err_bars(r["score"], r["ci_low"], r["ci_high"])
            ax.errorbar(
                r[x_metric] * scale,
                100 * r["score"],
                yerr=[[lo], [hi]],
                fmt=marker,
                color=colour,
                ecolor=colour,
                elinewidth=0.8,
                capsize=2,
                markersize=9 if marker == "*" else 6,
                alpha=0.9,
            )
        base = [r for r in rows if r["stack"] == "baseline"]
        if base:
            ax.axhline(100 * base[0]["score"], color="black", lw=0.7, ls=":", zorder=0)
        xy = [(r[x_metric] * scale, 100 * r["score"]) for r in rows]
        front = pareto_front(xy)
        fronts[ds] = [rows[i]["stack"] for i in front]
        fx, fy = [xy[i][0] for i in front], [xy[i][1] for i in front]
        ax.plot(fx, fy, ls="--", color="0.35", lw=1, drawstyle="steps-post", zorder=0)
        n = max(r["n_values"] for r in rows)
        ax.set_title(f"{ds} (n = {n})", fontsize=10)
        ax.set_xlabel(x_label)
        ax.set_ylabel("score (×100, 95% CI)")
        ax.set_ylim(-3, 112)
        ax.margins(x=0.2)
        ax.grid(alpha=0.3)
        _label_front(ax, [xy[i] for i in front], [rows[i]["stack"] for i in front])
    _stack_legend(fig, styles)
    fig.suptitle(f"{title}\n(up-left is better; dashed: Pareto front, named; dotted: baseline score)", fontsize=11)
    _save(fig, path)
    return fronts


def _f1_isolines(ax, levels: Sequence[float] = (0.2, 0.4, 0.6, 0.8)) -> None:
    """Curves of equal F1 = 2PR/(P+R) in the recall (x) / precision (y) plane, ×100."""
    for f in levels:
        r = np.linspace(f / 2 + 1e-3, 1.0, 200)
        p = f * r / (2 * r - f)
        keep = p <= 1.0
        ax.plot(100 * r[keep], 100 * p[keep], color="0.6", lw=0.8, ls="-", zorder=0)
        ax.text(100, 100 * f / (2 - f), f"F1 = {100 * f:.0f}", fontsize=7, color="0.4", ha="right", va="bottom")


def precision_recall(long: pl.DataFrame, model: str, family: str, path: Path) -> None:
    """One panel per dataset: each stack's token precision against its recall, over F1 iso-lines. Two
    stacks on one iso-line have the same F1 and can still differ: one says less but right (high
    precision), the other more of the answer with extra words (high recall)."""
    q = _with_family(long).filter(
        (pl.col("kind") == "quality")
        & pl.col("metric").is_in(["precision", "recall"])
        & (pl.col("model") == model)
        & (pl.col("report_family") == family)
    )
    title = f"{model}, {family}: token precision vs recall"
    if q.is_empty():
        _message(path, title, f"No {family} dataset with precision and recall in this run.")
        return
    table = q.pivot(on="metric", index=["stack", "dataset"], values="value", aggregate_function="first")
    styles = stack_styles(table["stack"].to_list())
    datasets = sorted(table["dataset"].unique().to_list())
    fig, axes = _grid(len(datasets), width=4.2, height=4.0)
    for ax, ds in zip(axes, datasets, strict=True):
        _f1_isolines(ax)
        ax.plot([0, 100], [0, 100], ls=":", color="0.75", lw=0.8, zorder=0)
        for r in table.filter(pl.col("dataset") == ds).sort("stack").iter_rows(named=True):
            if r["precision"] is None or r["recall"] is None:
                continue
            colour, marker = styles[r["stack"]]
            ax.plot(
                100 * r["recall"],
                100 * r["precision"],
                marker=marker,
                color=colour,
                ls="",
                markersize=9 if marker == "*" else 6,
                alpha=0.9,
            )
        ax.set_xlim(0, 102)
        ax.set_ylim(0, 102)
        ax.set_aspect("equal")
        ax.set_title(ds, fontsize=10)
        ax.set_xlabel("token recall (×100)")
        ax.set_ylabel("token precision (×100)")
        ax.grid(alpha=0.25)
    _stack_legend(fig, styles)
    fig.suptitle(f"{title}\n(grey curves: equal F1; dotted: precision = recall)", fontsize=11)
    _save(fig, path)


# The compounding table's columns the interaction heatmap reads (lcopt.aggregate.compounding).
INTERACTION_COLUMNS = (
    "model",
    "dataset",
    "stack",
    "score",
    "expected",
    "interaction",
    "interaction_ci_low",
    "interaction_ci_high",
    "distinguishable",
    "measurable",
)


def interaction_heatmap(compounding: pl.DataFrame, model: str, path: Path) -> dict[tuple[str, str], float]:
    """Rows: every stack of several techniques; columns: datasets. Colour: how far the stack falls below
    (red) or rises above (blue) what its parts predict if independent, as -interaction (the log ratio of
    stack to expected, signed so that red is worse); each cell prints it as a percent change, then stack /
    expected (×100) and the 95% CI. Hatched: q ≥ 0.05 (Benjamini–Hochberg within the model's table), not
    told from independence; grey "not measurable": the baseline or a part is too near 0 for a ratio.
    Returns the colour value per (stack, dataset) (NaN where there is none)."""
    title = f"{model}: stack interactions (measured vs expected from its parts)"
    missing = [c for c in INTERACTION_COLUMNS if c not in compounding.columns]
    if missing:
        raise ValueError(
            f"compounding table has columns {compounding.columns}; the interaction heatmap needs "
            f"{list(INTERACTION_COLUMNS)} (lcopt.aggregate.compounding), missing {missing}"
        )
    comp = compounding.filter(pl.col("model") == model)
    if comp.is_empty():
        _message(path, title, "No stack of several techniques whose parts all ran alone: nothing to compare.")
        return {}
    stacks = stack_order(comp["stack"].to_list())
    datasets = sorted(comp["dataset"].unique().to_list())
    cells = {(r["stack"], r["dataset"]): r for r in comp.iter_rows(named=True)}
    worse = np.full((len(stacks), len(datasets)), np.nan)
    for (s, d), r in cells.items():
        if r["interaction"] is not None:
            worse[stacks.index(s), datasets.index(d)] = -r["interaction"]
    vmax = max(math.log(1.25), float(np.nanmax(np.abs(worse)))) if np.isfinite(worse).any() else 1.0
    fig, ax = plt.subplots(figsize=(max(7.0, 2.4 + 1.5 * len(datasets)), 1.8 + 0.5 * len(stacks)), layout="constrained")
    image = ax.imshow(worse, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    for (s, d), r in cells.items():
        i, j = stacks.index(s), datasets.index(d)
        value = worse[i, j]
        if r["measurable"] is False:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.85", lw=0))
            ax.text(j, i, "not\nmeasurable", ha="center", va="center", fontsize=7, color="0.3")
            continue
        if math.isnan(value):
            ax.text(j, i, "—", ha="center", va="center", fontsize=8)
            continue
        text = f"{as_percent(r['interaction'])}\n{100 * r['score']:.1f} / {100 * r['expected']:.1f}"
        if r["interaction_ci_low"] is not None and r["interaction_ci_high"] is not None:
            text += f"\n[{as_percent(r['interaction_ci_low'])}, {as_percent(r['interaction_ci_high'])}]"
        dark = abs(value) > 0.6 * vmax
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        if r["distinguishable"] is False:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", ec="0.5", lw=0))
    ax.set_xticks(range(len(datasets)), datasets, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(stacks)), stacks, fontsize=8)
    ax.set_xlabel("dataset")
    ax.set_ylabel("stack")
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: as_percent(-v)))
    bar.set_label("stack vs expected if independent\n(red: below, compounds; blue: above, overlaps)", fontsize=8)
    note = (
        "cell: stack vs expected (percent change), then stack / expected score (×100),\n"
        "then its 95% CI; hatched: q ≥ 0.05 (Benjamini–Hochberg within the model), not told from independence"
    )
    fig.suptitle(f"{title}\n{note}", fontsize=9)
    _save(fig, path)
    return {k: float(worse[stacks.index(k[0]), datasets.index(k[1])]) for k in cells}


def roofline(long: pl.DataFrame, model: str, path: Path) -> bool:
    """Measured time beside its roofline (theoretical) time, per stack: one row of panels per phase
    (prefill, decode), one column per dataset. Draws a "no GPU data" figure and returns False when the
    run recorded no roofline times."""
    title = f"{model}: measured time vs roofline"
    sysm = long.filter((pl.col("kind") == "system") & (pl.col("model") == model))
    phases = {}
    for theory, (measured, phase) in ROOFLINE_PAIRS.items():
        t = sysm.filter((pl.col("metric") == theory) & pl.col("value").is_not_null())
        m = sysm.filter(pl.col("metric") == measured)
        pair = m.select("stack", "dataset", pl.col("value").alias("measured")).join(
            t.select("stack", "dataset", pl.col("value").alias("roofline")), on=["stack", "dataset"]
        )
        if not pair.is_empty():
            phases[phase] = pair
    if not phases:
        _message(
            path,
            title,
            "No GPU data in this run: no roofline (theoretical) times were recorded, so there is nothing "
            "to compare the measured times with. A GPU run fills this figure.",
        )
        return False
    stacks = stack_order([s for p in phases.values() for s in p["stack"].to_list()])
    datasets = sorted({d for p in phases.values() for d in p["dataset"].to_list()})
    fig, grid = plt.subplots(
        len(phases),
        len(datasets),
        figsize=(1.5 + 3.6 * len(datasets), len(phases) * (1.0 + 0.28 * len(stacks))),
        squeeze=False,
        layout="constrained",
    )
    for row, (phase, pair) in zip(grid, phases.items(), strict=True):
        for ax, ds in zip(row, datasets, strict=True):
            rows = {r["stack"]: r for r in pair.filter(pl.col("dataset") == ds).iter_rows(named=True)}
            shown = [s for s in stacks if s in rows]
            y = np.arange(len(shown))
            ax.barh(y - 0.2, [1e3 * rows[s]["measured"] for s in shown], height=0.4, color="#0072B2", label="measured")
            ax.barh(y + 0.2, [1e3 * rows[s]["roofline"] for s in shown], height=0.4, color="#E69F00", label="roofline")
            ax.set_yticks(y, shown, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel(f"{phase.split(' (')[0]} time (ms)")
            ax.set_title(f"{ds}: {phase}", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
    handles, labels = grid[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle(f"{title}\n(the closer the bars, the nearer the stack runs to the hardware's limit)", fontsize=11)
    _save(fig, path)
    return True


def context_scaling(long: pl.DataFrame, model: str, path: Path) -> list[str]:
    """For each task run at several context lengths: score and time to first token against the prompt
    length (the longest prompt of the dataset over stacks, i.e. before prompt compression; tokens), one
    line per stack; the dashed line is the model's input limit. Returns the tasks drawn."""
    title = f"{model}: context-length scaling"
    sel = long.filter(pl.col("model") == model)
    tokens = (
        sel.filter((pl.col("kind") == "system") & (pl.col("metric") == "n_input_tokens"))
        .group_by("dataset")
        .agg(pl.col("value").max().alias("tokens"))
    )
    scores = _scores(long, model).join(sel.select("dataset", "task").unique(), on="dataset")
    ttft = _system(long, model, "ttft_s")
    pts = scores.join(tokens, on="dataset").join(ttft, on=["stack", "dataset"], how="left")
    lengths = pts.group_by("task").agg(pl.col("dataset").n_unique().alias("k")).filter(pl.col("k") >= 2)
    tasks = sorted(lengths["task"].to_list())
    if not tasks:
        _message(
            path,
            title,
            "No task ran at two or more context lengths. config/scaling.yaml runs the synthetic tasks from "
            "1K words up to the model's limit.",
        )
        return []
    limit = sel["max_input_tokens"].drop_nulls().max()
    styles = stack_styles(pts["stack"].to_list())
    fig, axes = plt.subplots(
        2, len(tasks), figsize=(4.6 * len(tasks) + 1.5, 6.6), squeeze=False, layout="constrained", sharex="col"
    )
    for j, task in enumerate(tasks):
        sub = pts.filter(pl.col("task") == task).sort("tokens")
        for stack in stack_order(sub["stack"].to_list()):
            line = sub.filter(pl.col("stack") == stack)
            colour, marker = styles[stack]
            kw = {"color": colour, "marker": marker, "markersize": 8 if marker == "*" else 5, "lw": 1, "alpha": 0.85}
            axes[0][j].plot(line["tokens"], 100 * line["score"], **kw)
            if line["ttft_s"].drop_nulls().len():
                axes[1][j].plot(line["tokens"], 1e3 * line["ttft_s"], **kw)
        for ax in axes[:, j]:
            if limit:
                ax.axvline(limit, color="0.3", ls="--", lw=1)
            ax.grid(alpha=0.3)
        if limit:
            axes[0][j].text(limit, 104, " model limit", fontsize=7, color="0.3", ha="right", va="bottom")
        axes[0][j].set_title(task, fontsize=10)
        axes[0][j].set_ylim(-3, 110)
        axes[0][j].set_ylabel("score (×100)")
        axes[1][j].set_ylabel("time to first token (ms)")
        axes[1][j].set_xlabel("prompt length before compression (tokens)")
        axes[1][j].set_xlim(0, 1.05 * max(limit or 0, sub["tokens"].max()))
        axes[1][j].set_ylim(bottom=0)
    _stack_legend(fig, styles)
    fig.suptitle(f"{title}\n(one line per stack; datasets of one task at several lengths)", fontsize=11)
    _save(fig, path)
    return tasks


DEPTH_BINS = 5


def needle_heatmap(
    per_sample: pl.DataFrame, model: str, path: Path, task: str = "passkey"
) -> dict[tuple[str, str, int], tuple[float, int]]:
    """One small heatmap per stack: mean passkey score by where the needle sits in the context (rows,
    depth bins: 0% = start) and by context length (columns); each cell prints its mean and sample count.
    Returns (mean ×100, n) per (stack, dataset, depth bin)."""
    title = f"{model}: {task} score by needle depth × context length"
    sel = per_sample.filter(
        (pl.col("model") == model)
        & (pl.col("task") == task)
        & (pl.col("status") == "ok")
        & pl.col("depth").is_not_null()
    )
    if sel.is_empty():
        _message(path, title, f"No {task} samples with a recorded needle depth in this run.")
        return {}
    sel = sel.with_columns(
        pl.min_horizontal((pl.col("depth") * DEPTH_BINS).floor().cast(pl.Int64), pl.lit(DEPTH_BINS - 1)).alias("bin")
    )
    lengths = sel.group_by("dataset").agg(pl.col("length").mean().alias("words")).sort("words")
    datasets = lengths["dataset"].to_list()
    col_labels = [f"{w:,.0f}" for w in lengths["words"].to_list()]
    cells = sel.group_by("stack", "dataset", "bin").agg(pl.col("score").mean().alias("mean"), pl.len().alias("n"))
    stacks = stack_order(sel["stack"].to_list())
    cols = min(5, len(stacks))
    fig, axes = _grid(len(stacks), cols=cols, width=0.9 + 0.85 * len(datasets), height=2.7)
    image = None
    for ax, stack in zip(axes, stacks, strict=True):
        grid = np.full((DEPTH_BINS, len(datasets)), np.nan)
        counts = np.zeros((DEPTH_BINS, len(datasets)), dtype=int)
        for r in cells.filter(pl.col("stack") == stack).iter_rows(named=True):
            j = datasets.index(r["dataset"])
            grid[r["bin"], j], counts[r["bin"], j] = 100 * r["mean"], r["n"]
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for i in range(DEPTH_BINS):
            for j in range(len(datasets)):
                if counts[i, j]:
                    colour = "black" if grid[i, j] > 60 else "white"
                    ax.text(
                        j, i, f"{grid[i, j]:.0f}\nn={counts[i, j]}", ha="center", va="center", fontsize=6, color=colour
                    )
        ax.set_title(stack, fontsize=9)
        ax.set_xticks(range(len(datasets)), col_labels, fontsize=7)
        ax.set_yticks(
            range(DEPTH_BINS),
            [f"{100 * i // DEPTH_BINS}–{100 * (i + 1) // DEPTH_BINS}%" for i in range(DEPTH_BINS)],
            fontsize=7,
        )
        ax.set_xlabel("context (words)", fontsize=7)
        ax.set_ylabel("needle depth", fontsize=7)
    bar = fig.colorbar(image, ax=axes, shrink=0.6, location="right")
    bar.set_label(f"{task} score (×100)")
    fig.suptitle(f"{title}\n(one panel per stack; depth 0% = start of the context)", fontsize=11)
    _save(fig, path)
    return {(r["stack"], r["dataset"], r["bin"]): (100 * r["mean"], r["n"]) for r in cells.iter_rows(named=True)}


def score_bars(long: pl.DataFrame, path: Path) -> None:
    """One panel per (model, dataset), one horizontal bar per stack with its 95% CI."""
    q = long.filter((pl.col("kind") == "quality") & (pl.col("metric") == "score"))
    if q.is_empty():
        _message(path, "Score per dataset", "No scores in this run.")
        return
    panels = sorted(set(q.select("model", "dataset").rows()))
    stacks = stack_order(q["stack"].to_list())
    styles = stack_styles(stacks)
    fig, axes = _grid(len(panels), width=4.2, height=0.9 + 0.2 * len(stacks))
    for ax, (model, ds) in zip(axes, panels, strict=True):
        rows = {
            r["stack"]: r
            for r in q.filter((pl.col("model") == model) & (pl.col("dataset") == ds)).iter_rows(named=True)
        }
        shown = [s for s in stacks if s in rows]
        bars = [_err_bars(rows[s]["value"], rows[s]["ci_low"], rows[s]["ci_high"]) for s in shown]
        ax.barh(
            range(len(shown)),
            [100 * rows[s]["value"] for s in shown],
            xerr=[[lo for lo, _ in bars], [hi for _, hi in bars]],
            capsize=2,
            color=[styles[s][0] for s in shown],
            error_kw={"elinewidth": 0.8},
        )
        ax.set_yticks(range(len(shown)), shown, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 105)
        ax.set_xlabel("score (×100), 95% CI")
        ax.set_title(ds if len({m for m, _ in panels}) == 1 else f"{model} / {ds}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("LongBench score per dataset and stack (bar colour: the stack's first technique)", fontsize=11)
    _save(fig, path)


def draw(figure: Figure, long: pl.DataFrame, compounding: pl.DataFrame, per_sample: pl.DataFrame, path: Path) -> None:
    """Draw one figure of the report plan (`lcopt.report.figures`)."""
    kind, model, family = figure.kind, figure.model, figure.family
    if kind == "quality_vs_memory":
        quality_vs(long, model, family, "peak_mem_bytes", path)
    elif kind == "quality_vs_latency":
        quality_vs(long, model, family, "tpot_s", path)
    elif kind == "precision_recall":
        precision_recall(long, model, family, path)
    elif kind == "interaction":
        interaction_heatmap(compounding, model, path)
    elif kind == "roofline":
        roofline(long, model, path)
    elif kind == "context_scaling":
        context_scaling(long, model, path)
    elif kind == "needle":
        needle_heatmap(per_sample, model, path)
    elif kind == "scores":
        score_bars(long, path)
    else:
        raise ValueError(f"unknown figure kind {kind!r}")


def write_plots(
    long_parquet: Path, compounding_csv: Path, per_sample_parquet: Path, plan: list[Figure], outputs: list[Path]
) -> None:
    """Draw each figure of the plan to its output path (the two lists in the same order)."""
    # quality not measured (random weights: a system run) is null, not a score of 0: drawn as absent
    long = pl.read_parquet(long_parquet).filter((pl.col("kind") != "quality") | pl.col("value").is_not_null())
    compounding = pl.read_csv(compounding_csv)
    per_sample = pl.read_parquet(per_sample_parquet).filter((pl.col("status") != "ok") | pl.col("score").is_not_null())
    for figure, path in zip(plan, outputs, strict=True):
        if not str(path).endswith(figure.path):
            raise ValueError(f"output {path} is not figure {figure.path}: plan and outputs out of order")
        draw(figure, long, compounding, per_sample, Path(path))
