"""The report stage: what `snakemake --report` shows, beside the figures of `lcopt.plots`.

- `figures`: the list of figures a run draws (path, report category and labels), the one place that
  both the workflow (outputs marked with `report()`) and the plotting script read, so they agree;
- `per_sample_table`: per-sample scores with the needle's depth, for the needle heatmap;
- `results_table_html`: every (model, stack, dataset) with its CI as a sortable, searchable HTML table
  (ITables: DataTables bundled into the file, so it works offline inside the report);
- `run_rst`: the run's matrix, device and versions (from `provenance.json`), included by
  `report/workflow.rst`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # polars is imported where tables are built: the rules that only list figures run without it
    import polars as pl

from lcopt.io import read_jsonl

# The report's task families (the QA / multi-hop QA / summarization / retrieval), from each
# task's own `family` (lcopt.tasks); a family not listed here is shown under its own name.
REPORT_FAMILY = {
    "single-doc QA": "QA",
    "multi-doc QA": "multi-hop QA",
    "synthetic multi-hop": "multi-hop QA",
    "summarization": "summarization",
    "synthetic summarization": "summarization",
    "synthetic retrieval": "retrieval",
}
FAMILY_ORDER = ("QA", "multi-hop QA", "summarization", "retrieval")

# Report categories of the figures that are not per task family.
CATEGORY = {
    "scores": "Overview",
    "table": "Overview",
    "interaction": "Stacking",
    "roofline": "System",
    "context_scaling": "Context length",
    "needle": "Context length",
}
FAMILY_FIGURES = ("quality_vs_memory", "quality_vs_latency", "precision_recall")
MODEL_FIGURES = ("interaction", "roofline", "context_scaling", "needle")
# what each figure shows, as its report label (the `metric` column beside the `stacks` one)
METRIC_LABEL = {
    "quality_vs_memory": "score vs peak memory",
    "quality_vs_latency": "score vs decode latency",
    "precision_recall": "token precision vs recall",
    "interaction": "score: measured vs independent parts",
    "roofline": "measured vs roofline time",
    "context_scaling": "score and TTFT vs prompt length",
    "needle": "passkey score by needle depth and length",
    "scores": "score per dataset",
}


# the figure's name in the report's list (its `figure` label)
FIGURE_TITLE = {
    "quality_vs_memory": "quality vs peak memory",
    "quality_vs_latency": "quality vs decode latency",
    "precision_recall": "precision vs recall",
    "interaction": "stack interactions",
    "roofline": "measured vs roofline",
    "context_scaling": "context-length scaling",
    "needle": "needle depth × length",
    "scores": "score bars",
}


def report_family(task_family: str) -> str:
    return REPORT_FAMILY.get(task_family, task_family)


def slug(name: str) -> str:
    """A path-safe name: `multi-hop QA` -> `multi-hop-qa`."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def family_sort_key(family: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER), family)


@dataclass(frozen=True)
class Figure:
    """One PNG of the report: `kind` names the drawing (a function of `lcopt.plots`), `model` and
    `family` (a report family) select the data; both are None for figures over the whole run."""

    kind: str
    model: str | None = None
    family: str | None = None
    labels: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def path(self) -> str:
        """Relative to the plots directory."""
        parts = [p for p in (self.model, self.family and slug(self.family)) if p]
        return "/".join([*parts, f"{self.kind}.png"])

    @property
    def category(self) -> str:
        name = self.family or CATEGORY[self.kind]
        return name[:1].upper() + name[1:]

    @property
    def subcategory(self) -> str:
        return self.model or "all models"

    @property
    def caption(self) -> str:
        """The caption's file name in report/ (one per kind of figure)."""
        return f"{self.kind}.rst"


def _labels(kind: str, stacks: str) -> dict[str, str]:
    return {"figure": FIGURE_TITLE[kind], "stacks": stacks, "metric": METRIC_LABEL[kind]}


def figures(models: list[str], dataset_families: dict[str, str]) -> list[Figure]:
    """Every figure of a run of `models` on datasets with these task families (dataset -> `Task.family`)."""
    families = sorted({report_family(f) for f in dataset_families.values()}, key=family_sort_key)
    out = [Figure("scores", labels=_labels("scores", "all"))]
    for model in models:
        for family in families:
            for kind in FAMILY_FIGURES:
                out.append(Figure(kind, model, family, _labels(kind, "all")))
        for kind in MODEL_FIGURES:
            stacks = "Level 2" if kind == "interaction" else "all"
            out.append(Figure(kind, model, None, _labels(kind, stacks)))
    return out


# ---------------------------------------------------------------------------------------------------
# per-sample table


def per_sample_table(
    cells: list[tuple[str, str, str, str]], samples: list[Path], rows: dict[str, Path]
) -> pl.DataFrame:
    """One row per scored sample: (model, stack, dataset, task) from `cells` (in the order of `samples`),
    its status and score, and from the dataset row its context `length` (words) and needle `depth`
    (0 = start of the context, 1 = end; null where the dataset has none, e.g. LongBench)."""
    import polars as pl

    schema = {
        "model": pl.Utf8,
        "stack": pl.Utf8,
        "dataset": pl.Utf8,
        "task": pl.Utf8,
        "_id": pl.Utf8,
        "status": pl.Utf8,
        "score": pl.Float64,
        "length": pl.Int64,
        "depth": pl.Float64,
    }
    by_dataset: dict[str, dict[str, dict]] = {}
    out = []
    for (model, stack, dataset, task), path in zip(cells, samples, strict=True):
        if dataset not in by_dataset:
            by_dataset[dataset] = {r["_id"]: r for r in read_jsonl(rows[dataset])}
        data = by_dataset[dataset]
        for s in read_jsonl(path):
            row = data.get(s["_id"])
            if row is None:
                raise KeyError(f"{path}: sample {s['_id']!r} has no row in {rows[dataset]}")
            out.append(
                {
                    "model": model,
                    "stack": stack,
                    "dataset": dataset,
                    "task": task,
                    "_id": s["_id"],
                    "status": s["status"],
                    "score": s.get("score"),
                    "length": row.get("length", len(row["context"].split())),
                    "depth": row.get("depth"),
                }
            )
    return pl.DataFrame(out, schema=schema, orient="row")


# ---------------------------------------------------------------------------------------------------
# the browsable table

# (metric in the long table, column title, scale); quality ×100, times in ms, bytes in MiB
_QUALITY_COLUMNS = [("precision", "precision", 100), ("recall", "recall", 100), ("f1", "F1", 100)]
_SYSTEM_COLUMNS = [
    ("n_input_tokens", "input tokens", 1),
    ("ttft_s", "TTFT (ms)", 1e3),
    ("tpot_s", "decode (ms/token)", 1e3),
    ("peak_mem_bytes", "peak memory (MiB)", 2**-20),
    ("kv_cache_bytes", "KV cache (MiB)", 2**-20),
]


def level(stack: str) -> int:
    """0 for the baseline, else the number of techniques in the stack."""
    return 0 if stack == "baseline" else len(stack.split("+"))


def results_table(long: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, stack, dataset): LongBench's score with its 95% CI, the precision/recall split
    and the system figures, in reading units."""
    import polars as pl

    keys = ["model", "stack", "dataset"]
    score = long.filter((pl.col("kind") == "quality") & (pl.col("metric") == "score")).select(
        *keys,
        pl.col("family").map_elements(report_family, return_dtype=pl.Utf8).alias("family"),
        pl.col("longbench_metric").alias("score metric"),
        (100 * pl.col("value")).round(1).alias("score"),
        (100 * pl.col("ci_low")).round(1).alias("CI low"),
        (100 * pl.col("ci_high")).round(1).alias("CI high"),
        pl.col("n_values").alias("n"),
        pl.col("n_failed").alias("failed"),
        pl.col("n_truncated").alias("truncated"),
    )
    table = score.with_columns(pl.col("stack").map_elements(level, return_dtype=pl.Int64).alias("level"))
    for kind, columns in (("quality", _QUALITY_COLUMNS), ("system", _SYSTEM_COLUMNS)):
        for metric, title, scale in columns:
            value = scale * pl.col("value")
            sel = long.filter((pl.col("kind") == kind) & (pl.col("metric") == metric)).select(
                *keys, (value.round(1) if scale != 1 else value.round(0).cast(pl.Int64)).alias(title)
            )
            if not sel.is_empty():
                table = table.join(sel, on=keys, how="left")
    first = ["model", "family", "dataset", "level", "stack", "score metric", "score", "CI low", "CI high", "n"]
    # failure counts only where something failed or was cut: a column of zeros is noise
    rest = [
        c
        for c in table.columns
        if c not in first and not (c in ("failed", "truncated") and not table[c].fill_null(0).sum())
    ]
    return table.select(*first, *rest).sort(["model", "family", "dataset", "level", "stack"])


def results_table_html(long: pl.DataFrame) -> str:
    """A standalone HTML page: the results table as an ITables DataTable (sort by any column, search,
    page), with DataTables itself embedded so that it needs no network."""
    from itables import to_html_datatable
    from itables.javascript import generate_init_offline_itables_html
    from itables.options import dt_bundle

    table = results_table(long)
    body = to_html_datatable(
        table,
        caption=None,
        connected=False,
        display_logo_when_loading=False,
        showIndex=False,
        show_dtypes=False,
        text_in_header_can_be_selected=False,  # a click on a column title sorts (not only on its arrow)
        scrollX=True,
        pageLength=25,
        lengthMenu=[10, 25, 50, 100, 500],
        maxBytes=0,  # never downsample: every row is in the file
        order=[],
        classes="display compact cell-border",
    )
    intro = (
        "<h2>Every (model, stack, dataset)</h2><p>Score: LongBench's number for the task ×100 "
        "(token F1 for QA, ROUGE-L for summarization) with its 95% bootstrap CI over the samples; "
        "precision, recall and F1 are token-level ×100. Level: 0 = baseline, 1 = one technique, "
        "2 = a stack of two. Click a column title to sort (shift-click for a second key); type in the "
        f"search box to filter. {table.height} rows.</p>"
    )
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>lcopt results</title>"
        "<style>body{font-family:sans-serif;margin:1em;font-size:14px} td,th{white-space:nowrap} "
        "table.dataTable{font-size:13px}</style>"
        "</head><body>\n" + generate_init_offline_itables_html(dt_bundle) + intro + body + "\n</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------------
# the run's description (included by report/workflow.rst)


def _device(provenance: dict) -> str:
    gpus = provenance.get("gpus")
    if isinstance(gpus, list) and gpus:
        names = sorted({g["name"] for g in gpus})
        memory = gpus[0].get("memory_bytes")
        mem = f", {memory / 2**30:.0f} GiB each" if memory else ""
        driver = f"driver {gpus[0].get('driver')}, CUDA {provenance.get('torch_cuda')}"
        return f"{len(gpus)} × {', '.join(names)}{mem} ({driver})"
    return f"CPU only ({provenance.get('platform')}); no NVIDIA GPU was seen"


def has_gpu_data(long: pl.DataFrame) -> bool:
    """Whether the run recorded roofline (theoretical) times, which only GPU runs do."""
    import polars as pl

    return not long.filter(
        (pl.col("kind") == "system") & pl.col("metric").str.starts_with("roofline_") & pl.col("value").is_not_null()
    ).is_empty()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run_rst(provenance: dict, long: pl.DataFrame) -> str:
    """reStructuredText: the matrix that ran, where, with which versions."""
    import polars as pl

    config = provenance.get("config", {})
    models = sorted(long["model"].unique().to_list())
    stacks = sorted(long["stack"].unique().to_list(), key=lambda s: (level(s), s))
    datasets = long.select("dataset", "task", "family").unique().sort("dataset")
    n = long.filter(pl.col("metric") == "score").select(pl.col("n").max()).item() if not long.is_empty() else 0
    by_level: dict[int, list[str]] = {}
    for s in stacks:
        by_level.setdefault(level(s), []).append(s)
    lines = [
        "This run",
        "--------",
        "",
        f"**Matrix.** {_count(len(models), 'model')} × {_count(len(stacks), 'stack')} × "
        f"{_count(datasets.height, 'dataset')} = {len(models) * len(stacks) * datasets.height} cells, "
        f"up to {_count(n, 'sample')} each.",
        "",
        f"- Models: {', '.join(f'``{m}``' for m in models)}",
    ]
    for lvl, names in sorted(by_level.items()):
        title = {0: "Baseline", 1: "Level 1 (one technique)"}.get(lvl, f"Level {lvl} (stacks of {lvl})")
        lines.append(f"- {title}: {', '.join(f'``{s}``' for s in names)}")
    lines.append(
        "- Datasets: "
        + ", ".join(
            f"``{r['dataset']}`` ({report_family(r['family'])}, task {r['task']})"
            for r in datasets.iter_rows(named=True)
        )
    )
    packages = provenance.get("packages", {})
    versions = ", ".join(f"{k} {v}" for k, v in packages.items() if v)
    commit = provenance.get("git_commit") or "unknown"
    dirty = " (with uncommitted changes)" if provenance.get("git_dirty") else ""
    gpu_note = (
        "GPU data: measured times beside their roofline in the System category."
        if has_gpu_data(long)
        else "**No GPU data in this run**: there are no roofline (theoretical) times, so the System "
        "category's roofline figure says so instead of comparing."
    )
    lines += [
        "",
        f"**Device.** {_device(provenance)}. {gpu_note}",
        "",
        f"**Versions.** Python {provenance.get('python')}; {versions}.",
        "",
        f"**Provenance.** git commit ``{commit[:12]}``{dirty}; "
        f"config sha256 ``{provenance.get('config_sha256', '')[:12]}``; "
        f"seed {provenance.get('seed')}; bootstrap resamples {config.get('bootstrap_resamples', '—')}. "
        "Everything is in ``results/tables/provenance.json``.",
        "",
    ]
    return "\n".join(lines)
