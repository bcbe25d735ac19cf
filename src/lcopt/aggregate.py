"""The aggregate stage: every score summary and per-sample score file into Polars tables (Parquet,
CSV, Markdown).

- `long` (long.parquet, long.csv): one row per (model, stack, dataset, metric), the mean over the
  samples that stack finished with its 95% bootstrap CI; quality and system metrics share it, told
  apart by `kind`.
- `quality_wide`, `latency_wide`: LongBench's own number (`score`) and end-to-end time pivoted for reading.
- `paired` (paired.csv): every stack against its baseline on the samples every stack of that model and
  dataset finished, with the paired bootstrap CI of the difference (columns in `paired`).
- `compounding` (compounding.csv): each stack of several techniques against what independent
  techniques would score, with a paired bootstrap CI of the interaction (columns in `compounding`).
- summary.md: the tables a person reads first (`markdown`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from lcopt.io import atomic_file, read_jsonl, write_text_atomic
from lcopt.stacks import BASELINE
from lcopt.stats import cell_seed, excludes_zero, expected_under_independence, interaction, mean_difference, paired_ci

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
            "quality_measured": s.get("quality_measured", True),
            "compression_device": s.get("compression_device"),
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
        "quality_measured": pl.Boolean,
        "compression_device": pl.Utf8,
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


# --- comparisons on per-sample scores -------------------------------------------------------------
# (model, dataset) -> stack -> sample id -> that sample's scored record (`status` and its metrics)
Samples = dict[tuple[str, str], dict[str, dict[str, dict]]]

# Metrics with a value on every finished sample, so that stacks can be paired sample by sample.
PAIRED_METRICS = ("score", "f1", "precision", "recall", "exact_match", "rouge_l", "rouge_l_google")


def samples_path(summary_path: Path) -> Path:
    """The per-sample file the score stage writes beside a summary."""
    path = Path(summary_path)
    if not path.name.endswith(".summary.json"):
        raise ValueError(f"{path}: not a score summary (<dataset>.summary.json)")
    return path.with_name(path.name.removesuffix(".summary.json") + ".samples.jsonl")


def load_samples(summary_paths: list[Path]) -> Samples:
    """Every stack's per-sample quality records, grouped by (model, dataset). Cells whose quality was
    not measured (random weights: a system run) have no scores to pair and are left out."""
    out: Samples = {}
    for path in summary_paths:
        s = json.loads(Path(path).read_text())
        if not s.get("quality_measured", True):
            continue
        records = read_jsonl(samples_path(path))
        out.setdefault((s["model"], s["dataset"]), {})[s["stack"]] = {r["_id"]: r for r in records}
    return out


def common_ids(by_stack: dict[str, dict[str, dict]]) -> tuple[list[str], int]:
    """The ids every stack finished (`status` ok), sorted, and how many ids there are in all."""
    all_ids = set().union(*(set(records) for records in by_stack.values())) if by_stack else set()
    finished = [{i for i, r in records.items() if r["status"] == "ok"} for records in by_stack.values()]
    common = set.intersection(*finished) if finished else set()
    return sorted(common), len(all_ids)


def _values(records: dict[str, dict], ids: list[str], metric: str) -> np.ndarray:
    return np.array([records[i][metric] for i in ids], dtype=float)


def paired(samples: Samples, seed: int = 0, resamples: int = 1000) -> pl.DataFrame:
    """Every stack against the baseline of its model and dataset, on the samples *every* stack of that
    model and dataset finished (a stack that ran out of memory on the longest samples is not averaged
    over easier ones), one row per (model, dataset, stack, metric of PAIRED_METRICS).

    Columns: `n_ids` samples in the dataset; `n_ok` samples this stack finished; `n_common` samples
    every compared stack finished; `n_dropped` = n_ids - n_common, left out of the comparison;
    `value_all` this stack's mean over all it finished (the long table's value); `value` its mean over
    the common samples; `baseline` the baseline's mean over the same samples; `diff` = value - baseline;
    `diff_ci_low`, `diff_ci_high` the 95% paired bootstrap CI of `diff` (the same resampled ids for both;
    `stats.paired_ci`); `distinguishable` whether that CI excludes 0; `seed` the cell's bootstrap seed
    (config seed and the cell's key). Values are shares (0..1), as in the long table; the baseline's own
    rows and models without a baseline have no diff."""
    rows = []
    for (model, dataset), by_stack in sorted(samples.items()):
        ids, n_ids = common_ids(by_stack)
        base = by_stack.get(BASELINE)
        for stack, records in sorted(by_stack.items()):
            finished = [r for r in records.values() if r["status"] == "ok"]
            for metric in PAIRED_METRICS:
                all_values = [r[metric] for r in finished]
                value = _values(records, ids, metric)
                row = {
                    "model": model,
                    "dataset": dataset,
                    "stack": stack,
                    "metric": metric,
                    "n_ids": n_ids,
                    "n_ok": len(finished),
                    "n_common": len(ids),
                    "n_dropped": n_ids - len(ids),
                    "value_all": float(np.mean(all_values)) if all_values else None,
                    "value": float(value.mean()) if ids else None,
                    "baseline": None,
                    "diff": None,
                    "diff_ci_low": None,
                    "diff_ci_high": None,
                    "distinguishable": None,
                    "seed": None,
                }
                if base is not None and stack != BASELINE and ids:
                    reference = _values(base, ids, metric)
                    cell = cell_seed(seed, model, dataset, stack, metric, "diff")
                    low, high = paired_ci([value, reference], mean_difference, cell, resamples)
                    row |= {
                        "baseline": float(reference.mean()),
                        "diff": float(value.mean() - reference.mean()),
                        "diff_ci_low": _finite(low),
                        "diff_ci_high": _finite(high),
                        "distinguishable": excludes_zero(low, high),
                        "seed": cell,
                    }
                rows.append(row)
    schema = {
        "model": pl.Utf8,
        "dataset": pl.Utf8,
        "stack": pl.Utf8,
        "metric": pl.Utf8,
        "n_ids": pl.Int64,
        "n_ok": pl.Int64,
        "n_common": pl.Int64,
        "n_dropped": pl.Int64,
        "value_all": pl.Float64,
        "value": pl.Float64,
        "baseline": pl.Float64,
        "diff": pl.Float64,
        "diff_ci_low": pl.Float64,
        "diff_ci_high": pl.Float64,
        "distinguishable": pl.Boolean,
        "seed": pl.UInt64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def compounding(samples: Samples, seed: int = 0, resamples: int = 1000) -> pl.DataFrame:
    """Does a stack lose more than its techniques would if they acted independently? One row per stack
    of several techniques whose baseline and single-technique stacks were run, on LongBench's `score`,
    on the samples every stack of that model and dataset finished (as in `paired`).

    Scale: retention (`stats.expected_under_independence`). A part's retention is part / baseline; if the
    techniques act independently, the stack keeps the product of their retentions, so it is expected to
    score `expected` = baseline × Π retention, which stays within [0, 1]. The difference of drops, used
    before, is not bounded (two 60-point drops "predict" -20) and calls compounding parts "less than
    additive". `interaction` = score - expected: < 0, the techniques compound (the stack loses more than
    independent techniques would); > 0, they overlap (they lose the same samples).

    Columns: `n_common`, `n_dropped` as in `paired`; `baseline`, `score` (the stack's) and `part_scores`
    ("technique=value;..." in the stack's order) are means over the common samples; `drop` = baseline -
    score; `retention_product` = Π part / baseline; `expected`; `interaction` and its 95% paired bootstrap
    CI `interaction_ci_low`, `interaction_ci_high` (each replicate resamples the same sample ids for the
    baseline, every part and the stack, and recomputes expected and interaction from them);
    `distinguishable` whether that CI excludes 0; `seed` the cell's bootstrap seed. Where the baseline
    scores 0 on the common samples there is nothing to retain, and retention, expected and interaction
    are empty."""
    rows = []
    for (model, dataset), by_stack in sorted(samples.items()):
        if BASELINE not in by_stack:
            continue
        ids, n_ids = common_ids(by_stack)
        for stack in sorted(by_stack):
            parts = stack.split("+")
            if len(parts) < 2 or any(p not in by_stack for p in parts) or not ids:
                continue
            arrays = [_values(by_stack[s], ids, "score") for s in [BASELINE, *parts, stack]]
            base, *part_values, measured = (float(a.mean()) for a in arrays)
            row = {
                "model": model,
                "dataset": dataset,
                "stack": stack,
                "n_common": len(ids),
                "n_dropped": n_ids - len(ids),
                "baseline": base,
                "part_scores": ";".join(f"{p}={v:.4f}" for p, v in zip(parts, part_values, strict=True)),
                "score": measured,
                "drop": base - measured,
                "retention_product": None,
                "expected": None,
                "interaction": None,
                "interaction_ci_low": None,
                "interaction_ci_high": None,
                "distinguishable": None,
                "seed": None,
            }
            if base > 0:
                expected = float(expected_under_independence(base, part_values))
                cell = cell_seed(seed, model, dataset, stack, "score", "interaction")
                low, high = paired_ci(arrays, interaction, cell, resamples)
                row |= {
                    "retention_product": float(np.prod([v / base for v in part_values])),
                    "expected": expected,
                    "interaction": measured - expected,
                    "interaction_ci_low": _finite(low),
                    "interaction_ci_high": _finite(high),
                    "distinguishable": excludes_zero(low, high),
                    "seed": cell,
                }
            rows.append(row)
    schema = {
        "model": pl.Utf8,
        "dataset": pl.Utf8,
        "stack": pl.Utf8,
        "n_common": pl.Int64,
        "n_dropped": pl.Int64,
        "baseline": pl.Float64,
        "part_scores": pl.Utf8,
        "score": pl.Float64,
        "drop": pl.Float64,
        "retention_product": pl.Float64,
        "expected": pl.Float64,
        "interaction": pl.Float64,
        "interaction_ci_low": pl.Float64,
        "interaction_ci_high": pl.Float64,
        "distinguishable": pl.Boolean,
        "seed": pl.UInt64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
    return "—" if value is None or value != value else f"{value * scale:.{digits}f}"  # None or NaN


def _fmt_ci(low, high, scale: float = 100.0) -> str:
    return "—" if low is None or high is None else f"{_fmt(low, scale)} to {_fmt(high, scale)}"


def _signed(value, scale: float = 100.0) -> str:
    return "—" if value is None else f"{value * scale:+.1f}"


# each support rate beside its gold floor: the reference answers' own rate against the same content
SUPPORT_METRICS = (
    "unsupported_token_rate",
    "gold_unsupported_token_rate",
    "unsupported_entity_rate",
    "gold_unsupported_entity_rate",
    "other_key_value_rate",
)


def markdown(long: pl.DataFrame, pairs: pl.DataFrame | None = None, comp: pl.DataFrame | None = None) -> str:
    """A summary a person reads first: LongBench score on the samples every stack finished with the
    paired difference from the baseline, beside the all-samples score; P/R and support metrics; the
    system side; prompt compression; compounding."""
    q = long.filter(pl.col("kind") == "quality")
    by_cell = {}
    if pairs is not None:
        by_cell = {
            (r["model"], r["stack"], r["dataset"]): r
            for r in pairs.filter(pl.col("metric") == "score").iter_rows(named=True)
        }
    lines = [
        "# lcopt results",
        "",
        "Quality is LongBench's own number per task (QA: token F1; summarization: ROUGE-L from the "
        "`rouge` package, as LongBench computes it), ×100. Stacks are compared on the samples every stack "
        "of the model and dataset finished (`common`); `dropped` samples were left out because some stack "
        "failed them. `Δ` is the stack minus the baseline on those samples with its 95% *paired* bootstrap "
        "CI (the same resampled samples for both); `≠ 0` marks a CI that excludes 0. `all finished` is the "
        "stack's score over every sample it finished, with its own 95% bootstrap CI. "
        "`rouge_l_google` (Google's rouge-score) and the paired differences of the other metrics are in "
        "`long.csv` and `paired.csv`.",
        "",
    ]
    lines += [
        "## Quality (LongBench score)",
        "",
        "| model | stack | dataset | metric | common | Δ vs baseline | Δ 95% CI | ≠ 0 | all finished | CI "
        "| n | failed | dropped | empty | truncated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in q.filter(pl.col("metric") == "score").iter_rows(named=True):
        failed = f"{r['n_failed']} ({r['failures']})" if r["n_failed"] and r.get("failures") else r["n_failed"]
        p = by_cell.get((r["model"], r["stack"], r["dataset"]), {})
        marked = {True: "yes", False: "no"}.get(p.get("distinguishable"), "—")
        score, ci = _fmt(r["value"], 100), f"{_fmt(r['ci_low'], 100)}–{_fmt(r['ci_high'], 100)}"
        if not r.get("quality_measured", True):
            score, ci = "not measured", "—"
        lines.append(
            f"| {r['model']} | {r['stack']} | {r['dataset']} | {r['longbench_metric']} | {_fmt(p.get('value'), 100)} "
            f"| {_signed(p.get('diff'))} | {_fmt_ci(p.get('diff_ci_low'), p.get('diff_ci_high'))} | {marked} "
            f"| {score} | {ci} | {r['n']} | {failed} "
            f"| {p.get('n_dropped', '—')} | {r.get('n_empty_predictions', '—')} | {r.get('n_truncated', '—')} |"
        )
    lines += [
        "",
        "Failed samples (e.g. `oom`: out of memory) are left out of the score; empty predictions (no word "
        "after Unicode normalization) score 0; truncated prompts lost the middle of their context to the "
        "model's `max_input_tokens`.",
    ]
    if "chat_template" in long.columns:
        plain = long.filter(pl.col("chat_template").not_()).select("model").unique().sort("model")["model"]
        if len(plain):
            lines.append(
                f"Prompts of {', '.join(plain)} are the plain task template: the tokenizer has no chat template."
            )
    if "quality_measured" in long.columns:
        random = long.filter(pl.col("quality_measured").not_()).select("model").unique().sort("model")["model"]
        if len(random):
            lines.append(
                f"Quality of {', '.join(random)} is not measured: random weights (`init: random`), a system run; "
                "its scores are empty, its system figures real."
            )
    shown = ["f1", "precision", "recall", "exact_match", *SUPPORT_METRICS]
    prf = q.filter(pl.col("metric").is_in(shown))
    if not prf.is_empty():
        table = prf.pivot(
            on="metric", index=["model", "stack", "dataset"], values="value", aggregate_function="first"
        ).sort(["model", "stack", "dataset"])
        cols = [c for c in shown if c in table.columns]
        lines += [
            "",
            "## F1 split into precision and recall; support of what was said (×100, all finished samples)",
            "",
            "| model | stack | dataset | " + " | ".join(cols) + " |",
            "|---|---|---|" + "---|" * len(cols),
        ]
        for r in table.iter_rows(named=True):
            lines.append(
                f"| {r['model']} | {r['stack']} | {r['dataset']} | " + " | ".join(_fmt(r[c], 100) for c in cols) + " |"
            )
        lines += [
            "",
            "`unsupported_token_rate`: share of the prediction's words found nowhere in the content the model "
            "received (its context and question after compression and truncation, not the templates); "
            "`unsupported_entity_rate` (LongBench tasks): share of its numbers and names not found there as a "
            "run of words; `gold_…`: the same rate of the reference answers against the same content, the floor "
            "a model's rate is read against (reference summaries name sources and facts their news does not); "
            "`other_key_value_rate` (synthetic lookups): share of answers that name another key's value. Empty "
            "predictions have none (docs/metrics.md).",
        ]
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
    compression = long.filter(
        (pl.col("kind") == "system")
        & pl.col("metric").is_in(["compression_ratio", "model_compression_ratio", "compression_seconds"])
    )
    if not compression.is_empty():
        table = compression.pivot(
            on="metric", index=["model", "stack", "dataset"], values="value", aggregate_function="first"
        ).sort(["model", "stack", "dataset"])
        devices = long.select("model", "stack", "dataset", "compression_device").unique()
        table = table.join(devices, on=["model", "stack", "dataset"], how="left")
        lines += [
            "",
            "## Prompt compression (means over samples)",
            "",
            "| model | stack | dataset | ratio, model tokens | ratio, GPT-3.5 tokens (LLMLingua's count) "
            "| seconds per sample | device |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in table.iter_rows(named=True):
            lines.append(
                f"| {r['model']} | {r['stack']} | {r['dataset']} | {_fmt(r.get('model_compression_ratio'), 1, 2)} "
                f"| {_fmt(r.get('compression_ratio'), 1, 2)} | {_fmt(r.get('compression_seconds'), 1, 2)} "
                f"| {r.get('compression_device') or '—'} |"
            )
        lines += [
            "",
            "Ratio = context tokens before / after compression: in the target model's own tokens (what the "
            "model sees) and in the GPT-3.5 (cl100k) tokens LLMLingua counts.",
        ]
    if comp is not None and not comp.is_empty():
        lines += [
            "",
            "## Compounding: a stack's score vs what independent techniques would give (score ×100)",
            "",
            "| model | dataset | stack | common | baseline | parts | expected | stack score | interaction "
            "| 95% CI | ≠ 0 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in comp.iter_rows(named=True):
            parts = ", ".join(
                f"{name} {float(value) * 100:.1f}"
                for name, value in (item.split("=") for item in r["part_scores"].split(";"))
            )
            marked = {True: "yes", False: "no"}.get(r["distinguishable"], "—")
            lines.append(
                f"| {r['model']} | {r['dataset']} | {r['stack']} | {r['n_common']} | {_fmt(r['baseline'], 100)} "
                f"| {parts} | {_fmt(r['expected'], 100)} | {_fmt(r['score'], 100)} | {_signed(r['interaction'])} "
                f"| {_fmt_ci(r['interaction_ci_low'], r['interaction_ci_high'])} | {marked} |"
            )
        lines += [
            "",
            "Expected = baseline × Π (part / baseline): each technique keeps its own share of the baseline's "
            "score whatever the others do (independence), which cannot leave 0–100. Interaction = stack score − "
            "expected, with its 95% paired bootstrap CI (the same resampled samples for the baseline, the parts "
            "and the stack): below 0 the techniques compound, above 0 they overlap. All on the common samples.",
        ]
    return "\n".join(lines) + "\n"


def write_tables(summary_paths: list[Path], out_dir: Path, seed: int = 0, resamples: int = 1000) -> pl.DataFrame:
    """Every table from the score summaries and, beside each, its per-sample file (`samples_path`); `seed`
    and `resamples` are the config's, from which each paired cell derives its own seed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    long = long_table(summary_paths)
    samples = load_samples(summary_paths)
    pairs = paired(samples, seed, resamples)
    comp = compounding(samples, seed, resamples)
    with atomic_file(out_dir / "long.parquet", ".parquet") as tmp:
        long.write_parquet(tmp)
    with atomic_file(out_dir / "long.csv", ".csv") as tmp:
        long.write_csv(tmp)
    for name, metric, kind in [("quality_wide", "score", "quality"), ("latency_wide", "e2e_s", "system")]:
        with atomic_file(out_dir / f"{name}.csv", ".csv") as tmp:
            wide(long, metric, kind).write_csv(tmp)
    with atomic_file(out_dir / "paired.csv", ".csv") as tmp:
        pairs.write_csv(tmp)
    with atomic_file(out_dir / "compounding.csv", ".csv") as tmp:
        comp.write_csv(tmp)
    write_text_atomic(out_dir / "summary.md", markdown(long, pairs, comp))
    return long
