"""The aggregate stage: every score summary into Polars tables (Parquet, CSV, Markdown).

`long` has one row per (model, stack, dataset, metric) with its 95% bootstrap CI; quality metrics
and system metrics share it, told apart by `kind`. The wide tables pivot LongBench's own number
(`score`) and the system figures for reading.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from lcopt.io import atomic_file, write_text_atomic

KEYS = ["model", "stack", "dataset", "task", "family"]


def long_table(summary_paths: list[Path]) -> pl.DataFrame:
    rows = []
    for path in summary_paths:
        s = json.loads(Path(path).read_text())
        base = {k: s[k] for k in KEYS} | {
            "longbench_metric": s["metric"],
            "n": s["n"],
            "n_failed": s["n_failed"],
            "failures": ",".join(s["failures"]),
            "n_empty_predictions": s["n_empty_predictions"],
            "n_truncated": s["n_truncated"],
            "max_input_tokens": s.get("max_input_tokens"),
            "chat_template": s.get("chat_template"),
        }
        for name, q in s["quality"].items():
            rows.append(
                base
                | {
                    "kind": "quality",
                    "metric": name,
                    "value": q["mean"],
                    "ci_low": q["ci_low"],
                    "ci_high": q["ci_high"],
                    "n_values": q["n"],
                }
            )
        for name, m in s["system"].items():
            rows.append(
                base
                | {
                    "kind": "system",
                    "metric": name,
                    "value": m["mean"],
                    "ci_low": None,
                    "ci_high": None,
                    "n_values": m["n"],
                }
            )
    schema = {
        "model": pl.Utf8,
        "stack": pl.Utf8,
        "dataset": pl.Utf8,
        "task": pl.Utf8,
        "family": pl.Utf8,
        "longbench_metric": pl.Utf8,
        "n": pl.Int64,
        "n_failed": pl.Int64,
        "failures": pl.Utf8,
        "n_empty_predictions": pl.Int64,
        "n_truncated": pl.Int64,
        "max_input_tokens": pl.Int64,
        "chat_template": pl.Boolean,
        "kind": pl.Utf8,
        "metric": pl.Utf8,
        "value": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "n_values": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row").sort(["model", "stack", "dataset", "kind", "metric"])


def wide(long: pl.DataFrame, metric: str, kind: str = "quality") -> pl.DataFrame:
    """(model, stack) rows by dataset columns for one metric."""
    sel = long.filter((pl.col("kind") == kind) & (pl.col("metric") == metric))
    if sel.is_empty():
        return pl.DataFrame()
    return sel.pivot(on="dataset", index=["model", "stack"], values="value", aggregate_function="first").sort(
        ["model", "stack"]
    )


def compounding(long: pl.DataFrame) -> pl.DataFrame:
    """For each stack of several techniques: its measured score drop from the baseline next to the sum
    of its techniques' drops alone. `excess_drop` > 0 means the stack loses more than its parts add up to
    (the study's "naive stacks compound errors"). Needs the baseline and every single-technique stack."""
    score = long.filter((pl.col("kind") == "quality") & (pl.col("metric") == "score")).select(
        "model", "dataset", "stack", "value"
    )
    base = score.filter(pl.col("stack") == "baseline").select("model", "dataset", pl.col("value").alias("baseline"))
    drops = score.join(base, on=["model", "dataset"]).with_columns(drop=pl.col("baseline") - pl.col("value"))
    single = {(r["model"], r["dataset"], r["stack"]): r["drop"] for r in drops.iter_rows(named=True)}
    rows = []
    for r in drops.iter_rows(named=True):
        parts = r["stack"].split("+")
        if len(parts) < 2:
            continue
        part_drops = [single.get((r["model"], r["dataset"], p)) for p in parts]
        if any(d is None for d in part_drops):
            continue
        rows.append(
            {
                "model": r["model"],
                "dataset": r["dataset"],
                "stack": r["stack"],
                "baseline": r["baseline"],
                "score": r["value"],
                "drop": r["drop"],
                "sum_of_part_drops": sum(part_drops),
                "excess_drop": r["drop"] - sum(part_drops),
            }
        )
    schema = {
        "model": pl.Utf8,
        "dataset": pl.Utf8,
        "stack": pl.Utf8,
        "baseline": pl.Float64,
        "score": pl.Float64,
        "drop": pl.Float64,
        "sum_of_part_drops": pl.Float64,
        "excess_drop": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row").sort(["model", "dataset", "stack"])


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
    return "—" if value is None else f"{value * scale:.{digits}f}"


def markdown(long: pl.DataFrame) -> str:
    """A summary a person reads first: LongBench score with CI, the P/R split, then the system side."""
    q = long.filter(pl.col("kind") == "quality")
    lines = [
        "# lcopt results",
        "",
        "Quality is LongBench's own number per task (QA: token F1; summarization: ROUGE-L from the "
        "`rouge` package, as LongBench computes it), ×100, with its 95% bootstrap CI. "
        "`rouge_l_google` (Google's rouge-score) is in the long table beside it.",
        "",
    ]
    lines += [
        "## Quality (LongBench score, 95% CI)",
        "",
        "| model | stack | dataset | metric | score | CI | n | failed | empty | truncated |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in q.filter(pl.col("metric") == "score").iter_rows(named=True):
        failed = f"{r['n_failed']} ({r['failures']})" if r["n_failed"] and r.get("failures") else r["n_failed"]
        lines.append(
            f"| {r['model']} | {r['stack']} | {r['dataset']} | {r['longbench_metric']} | {_fmt(r['value'], 100)} "
            f"| {_fmt(r['ci_low'], 100)}–{_fmt(r['ci_high'], 100)} | {r['n']} | {failed} "
            f"| {r.get('n_empty_predictions', '—')} | {r.get('n_truncated', '—')} |"
        )
    lines += [
        "",
        "Failed samples (e.g. `oom`: out of memory) are left out of the score; empty predictions score 0; "
        "truncated prompts lost the middle of their context to the model's `max_input_tokens`.",
    ]
    if "chat_template" in long.columns:
        plain = long.filter(pl.col("chat_template").not_()).select("model").unique().sort("model")["model"]
        if len(plain):
            lines.append(
                f"Prompts of {', '.join(plain)} are the plain task template: the tokenizer has no chat template."
            )
    prf = q.filter(pl.col("metric").is_in(["f1", "precision", "recall", "exact_match", "hallucination"]))
    if not prf.is_empty():
        table = prf.pivot(
            on="metric", index=["model", "stack", "dataset"], values="value", aggregate_function="first"
        ).sort(["model", "stack", "dataset"])
        cols = [c for c in ["f1", "precision", "recall", "exact_match", "hallucination"] if c in table.columns]
        lines += [
            "",
            "## F1 split into precision and recall (×100)",
            "",
            "| model | stack | dataset | " + " | ".join(cols) + " |",
            "|---|---|---|" + "---|" * len(cols),
        ]
        for r in table.iter_rows(named=True):
            lines.append(
                f"| {r['model']} | {r['stack']} | {r['dataset']} | " + " | ".join(_fmt(r[c], 100) for c in cols) + " |"
            )
    sysm = long.filter(pl.col("kind") == "system")
    if not sysm.is_empty():
        table = sysm.pivot(
            on="metric", index=["model", "stack", "dataset"], values="value", aggregate_function="first"
        ).sort(["model", "stack", "dataset"])
        spec = [
            ("n_input_tokens", "input tokens", 1, 0),
            ("ttft_s", "TTFT ms", 1e3, 1),
            ("tpot_s", "ms/token", 1e3, 2),
            ("e2e_s", "end-to-end s", 1, 3),
            ("kv_cache_bytes", "KV cache MiB", 2**-20, 2),
            ("peak_mem_bytes", "peak memory MiB", 2**-20, 0),
        ]
        spec = [s for s in spec if s[0] in table.columns]
        lines += [
            "",
            "## System (means over samples)",
            "",
            "| model | stack | dataset | " + " | ".join(s[1] for s in spec) + " |",
            "|---|---|---|" + "---|" * len(spec),
        ]
        for r in table.iter_rows(named=True):
            lines.append(
                f"| {r['model']} | {r['stack']} | {r['dataset']} | "
                + " | ".join(_fmt(r[k], sc, d) for k, _, sc, d in spec)
                + " |"
            )
        lines += [
            "",
            "Peak memory is torch's peak allocation on a GPU and the process's peak RSS on a CPU "
            "(`mem_source` in the predictions).",
        ]
    comp = compounding(long)
    if not comp.is_empty():
        lines += [
            "",
            "## Compounding: a stack's drop vs the sum of its parts' drops (score ×100)",
            "",
            "| model | dataset | stack | baseline | stack score | drop | sum of parts' drops | excess |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in comp.iter_rows(named=True):
            cells = [r["baseline"], r["score"], r["drop"], r["sum_of_part_drops"], r["excess_drop"]]
            lines.append(
                f"| {r['model']} | {r['dataset']} | {r['stack']} | " + " | ".join(_fmt(c, 100) for c in cells) + " |"
            )
    return "\n".join(lines) + "\n"


def write_tables(summary_paths: list[Path], out_dir: Path) -> pl.DataFrame:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    long = long_table(summary_paths)
    with atomic_file(out_dir / "long.parquet", ".parquet") as tmp:
        long.write_parquet(tmp)
    with atomic_file(out_dir / "long.csv", ".csv") as tmp:
        long.write_csv(tmp)
    for name, metric, kind in [("quality_wide", "score", "quality"), ("latency_wide", "e2e_s", "system")]:
        with atomic_file(out_dir / f"{name}.csv", ".csv") as tmp:
            wide(long, metric, kind).write_csv(tmp)
    with atomic_file(out_dir / "compounding.csv", ".csv") as tmp:
        compounding(long).write_csv(tmp)
    write_text_atomic(out_dir / "summary.md", markdown(long))
    return long
