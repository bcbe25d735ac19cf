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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lcopt.io import atomic_file, read_jsonl, write_text_atomic
from lcopt.stacks import BASELINE
from lcopt.stats import (
    LEVEL,
    as_percent,
    bh_qvalues,
    cell_seed,
    difference_test,
    expected_under_independence,
    interaction_test,
    resample,
)

KEYS = ["model", "stack", "dataset", "task", "family"]


class ScoreFileError(ValueError):
    """A score summary or per-sample file that cannot be read: the message names the file, what is wrong
    and how to rebuild it."""


def _unreadable(path: Path, problem: str) -> ScoreFileError:
    return ScoreFileError(
        f"{path}: {problem}. It is written by the workflow's score rule: rebuild it with "
        f"`snakemake --cores 1 --force {path}` (and the --configfile you ran with), or delete it and rerun "
        "the workflow."
    )


# What the aggregate stage reads of a summary (lcopt.scoring.score_file writes them).
SUMMARY_KEYS = (*KEYS, "metric", "n", "n_failed", "failures", "n_empty_predictions", "n_truncated", "quality", "system")


@dataclass(frozen=True)
class ScoreFile:
    """One score summary and, where its quality was measured, its per-sample records by id (None for a
    system run on random weights: no scores to pair)."""

    path: Path
    summary: dict
    samples: dict[str, dict] | None


def read_score_file(summary_path: Path) -> ScoreFile:
    """A summary and its per-sample file (`samples_path`), checked for everything the tables read, so that
    a damaged file stops the stage, named, before any table is computed or written."""
    path = Path(summary_path)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise _unreadable(path, "missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _unreadable(path, f"not a JSON summary ({exc})") from exc
    if not isinstance(summary, dict):
        raise _unreadable(path, f"a JSON {type(summary).__name__}, expected an object")
    if missing := [k for k in SUMMARY_KEYS if k not in summary]:
        raise _unreadable(path, f"missing key(s) {', '.join(missing)}")
    for kind, needed in (("quality", ("mean", "ci_low", "ci_high", "n")), ("system", ("mean", "n"))):
        entries = summary[kind]
        if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and set(needed) <= set(e) for e in entries.values()
        ):
            raise _unreadable(path, f"'{kind}' must map each metric to an object with {', '.join(needed)}")
    if not summary.get("quality_measured", True):
        return ScoreFile(path, summary, None)
    sample_file = samples_path(path)
    try:
        records = read_jsonl(sample_file)
    except FileNotFoundError as exc:
        raise _unreadable(sample_file, "missing") from exc
    except ValueError as exc:
        raise _unreadable(sample_file, str(exc).removeprefix(f"{sample_file}: ")) from exc
    by_id: dict[str, dict] = {}
    for number, record in enumerate(records, 1):
        if "_id" not in record or "status" not in record:
            raise _unreadable(sample_file, f"record {number} has no '_id' or no 'status'")
        if record["_id"] in by_id:
            raise _unreadable(sample_file, f"record {number} repeats the id {record['_id']!r}")
        if record["status"] == "ok":
            bad = [m for m in PAIRED_METRICS if not isinstance(record.get(m), int | float)]
            if bad:
                raise _unreadable(
                    sample_file, f"finished record {number} ({record['_id']!r}) has no number for {', '.join(bad)}"
                )
        by_id[record["_id"]] = record
    return ScoreFile(path, summary, by_id)


def long_table(scores: list[ScoreFile]) -> pl.DataFrame:
    rows = []
    for score in scores:
        s = score.summary
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
            "gpu_shared_by": s.get("gpu_shared_by", 1),
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
        "gpu_shared_by": pl.Int64,
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


def load_samples(scores: list[ScoreFile]) -> Samples:
    """Every stack's per-sample quality records, grouped by (model, dataset). Cells whose quality was
    not measured (random weights: a system run) have no scores to pair and are left out."""
    out: Samples = {}
    for score in scores:
        if score.samples is not None:
            s = score.summary
            out.setdefault((s["model"], s["dataset"]), {})[s["stack"]] = score.samples
    return out


def finished_ids(records: dict[str, dict]) -> set[str]:
    """The ids of one stack's samples that finished (`status` ok)."""
    return {i for i, r in records.items() if r["status"] == "ok"}


def _values(records: dict[str, dict], ids: list[str], metric: str) -> np.ndarray:
    return np.array([records[i][metric] for i in ids], dtype=float)


def _count(k: int) -> str:
    return "1 sample" if k == 1 else f"{k} samples"


# Benjamini–Hochberg at this false discovery rate marks a cell `distinguishable`.
FDR = 0.05


def _adjust(rows: list[dict], family: tuple[str, ...]) -> None:
    """q-values (Benjamini–Hochberg) of the rows' p-values within each family (rows sharing the values of
    the `family` columns), and `distinguishable` = q < FDR; rows without a p-value stay None."""
    families: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["p_value"] is not None:
            families.setdefault(tuple(row[c] for c in family), []).append(row)
    for members in families.values():
        for row, q in zip(members, bh_qvalues([r["p_value"] for r in members]), strict=True):
            row["q_value"] = float(q)
            row["distinguishable"] = bool(q < FDR)


def paired(samples: Samples, seed: int = 0, resamples: int = 1000) -> pl.DataFrame:
    """Every stack against the baseline of its model and dataset on the samples *both* finished (a stack
    that ran out of memory on the longest samples is not averaged over easier ones, and no other stack's
    failures move this comparison), one row per (model, dataset, stack, metric of PAIRED_METRICS).

    Columns: `n_ids` samples of the stack or the baseline (finished or not); `n_ok` samples this stack
    finished; `n_common` samples both finished; `n_dropped` = n_ids - n_common, left out of the
    comparison; `value_all` this stack's mean over all it finished (the long table's value); `value` its
    mean over the common samples; `baseline` the baseline's mean over the same samples; `diff` = value -
    baseline; `diff_ci_low`, `diff_ci_high` its 95% paired bootstrap CI (expanded BCa, `stats.difference_test`);
    `p_value` of diff = 0 (inverting the same interval); `q_value` Benjamini–Hochberg within the family of
    one model and metric (every dataset and stack it was tested on); `distinguishable` q < 0.05; `seed`
    the cell's bootstrap seed (config seed and the cell's key); `reason` why a row has no test. Values are
    shares (0..1), as in the long table."""
    rows = []
    for (model, dataset), by_stack in sorted(samples.items()):
        base = by_stack.get(BASELINE)
        base_ok = finished_ids(base) if base is not None else set()
        for stack, records in sorted(by_stack.items()):
            ok = finished_ids(records)
            if stack == BASELINE:
                ids, reason = sorted(ok), "the baseline itself"
            elif base is None:
                ids, reason = sorted(ok), "no baseline run"
            else:
                ids = sorted(ok & base_ok)
                reason = None if len(ids) >= 2 else f"{_count(len(ids))} finished by both the stack and the baseline"
            n_ids = len(set(records) | (set(base) if base is not None else set()))
            for metric in PAIRED_METRICS:
                all_values = [records[i][metric] for i in sorted(ok)]
                value = _values(records, ids, metric)
                row = {
                    "model": model,
                    "dataset": dataset,
                    "stack": stack,
                    "metric": metric,
                    "n_ids": n_ids,
                    "n_ok": len(ok),
                    "n_common": len(ids),
                    "n_dropped": n_ids - len(ids),
                    "value_all": float(np.mean(all_values)) if all_values else None,
                    "value": float(value.mean()) if ids else None,
                    "baseline": None,
                    "diff": None,
                    "diff_ci_low": None,
                    "diff_ci_high": None,
                    "p_value": None,
                    "q_value": None,
                    "distinguishable": None,
                    "seed": None,
                    "reason": reason,
                }
                if base is not None and stack != BASELINE and ids:
                    reference = _values(base, ids, metric)
                    row |= {"baseline": float(reference.mean()), "diff": float(value.mean() - reference.mean())}
                if reason is None:
                    cell = cell_seed(seed, model, dataset, stack, metric, "diff")
                    test = difference_test(value, reference, cell, resamples)
                    row |= {
                        "diff_ci_low": test.low,
                        "diff_ci_high": test.high,
                        "p_value": test.p_value,
                        "seed": cell,
                    }
                rows.append(row)
    _adjust(rows, ("model", "metric"))
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
        "p_value": pl.Float64,
        "q_value": pl.Float64,
        "distinguishable": pl.Boolean,
        "seed": pl.UInt64,
        "reason": pl.Utf8,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def compounding(samples: Samples, seed: int = 0, resamples: int = 1000) -> pl.DataFrame:
    """Does a stack lose more than its techniques would if they acted independently? One row per stack
    of several techniques whose baseline and single-technique stacks were run, on LongBench's `score`,
    on the samples the stack, every part and the baseline all finished (no other stack's failures move it).

    Scale: log ratio (`stats.log_interaction`). Independent techniques (Bliss) keep the product of
    their retentions (part / baseline), so the stack is `expected` = baseline × Π (part / baseline);
    `interaction` = log(stack / baseline) - Σ log(part / baseline) = log(stack / expected), on totals
    guarded by ½ (`stats.GUARD`): < 0 the techniques compound (the stack scores below what independent
    parts give), > 0 they overlap. A ratio rests on its denominators: where the baseline's or a part's
    total is 0 in at least 2.5% of the resamples (its own 95% percentile CI reaches 0), the cell is not
    measurable (`measurable` false, `reason` says whose) and has no interaction.

    Columns: `n_ids` samples any of these stacks has; `n_common`, `n_dropped` (= n_ids - n_common) as in
    `paired`; `baseline`, `score` (the stack's) and `part_scores` ("technique=value;..." in the stack's
    order) are means over the common samples; `drop` = baseline - score; `expected` (unclipped: above 1
    where the parts' gains cannot all be kept); `interaction` and its 95% paired bootstrap CI
    `interaction_ci_low`, `interaction_ci_high` (expanded percentile; each replicate resamples the same
    sample ids for the baseline, every part and the stack, `stats.interaction_test`); `p_value` of
    interaction = 0; `q_value` Benjamini–Hochberg within the model's table (every dataset and stack);
    `distinguishable` q < 0.05; `seed` the cell's bootstrap seed; `measurable`; `reason` why a row has no
    test."""
    rows = []
    level_tail = (1 - LEVEL) / 2
    for (model, dataset), by_stack in sorted(samples.items()):
        if BASELINE not in by_stack:
            continue
        for stack in sorted(by_stack):
            parts = stack.split("+")
            if len(parts) < 2 or any(p not in by_stack for p in parts):
                continue
            arms = [BASELINE, *parts, stack]
            ids = sorted(set.intersection(*(finished_ids(by_stack[s]) for s in arms)))
            n_ids = len(set().union(*(set(by_stack[s]) for s in arms)))
            arrays = [_values(by_stack[s], ids, "score") for s in arms]
            base, *part_values, measured = (float(a.mean()) if ids else None for a in arrays)
            part_scores = ";".join(f"{p}={v:.4f}" for p, v in zip(parts, part_values, strict=True)) if ids else None
            row = {
                "model": model,
                "dataset": dataset,
                "stack": stack,
                "n_ids": n_ids,
                "n_common": len(ids),
                "n_dropped": n_ids - len(ids),
                "baseline": base,
                "part_scores": part_scores,
                "score": measured,
                "drop": base - measured if ids else None,
                "expected": None,
                "interaction": None,
                "interaction_ci_low": None,
                "interaction_ci_high": None,
                "p_value": None,
                "q_value": None,
                "distinguishable": None,
                "seed": None,
                "measurable": None,
                "reason": None,
            }
            if len(ids) < 2:
                row["reason"] = f"{_count(len(ids))} finished by the stack, its parts and the baseline"
                rows.append(row)
                continue
            cell = cell_seed(seed, model, dataset, stack, "score", "interaction")
            resampled = resample(arrays, cell, resamples)
            zero = resampled.zero_share()
            unmeasurable = [name for name, share in zip(arms[:-1], zero[:-1], strict=True) if share >= level_tail]
            row["seed"] = cell
            if unmeasurable:
                row |= {"measurable": False, "reason": f"not measurable: {', '.join(unmeasurable)} 95% CI reaches 0"}
                rows.append(row)
                continue
            test = interaction_test(resampled)
            row |= {
                "expected": expected_under_independence(base, part_values),
                "interaction": test.estimate,
                "interaction_ci_low": test.low,
                "interaction_ci_high": test.high,
                "p_value": test.p_value,
                "measurable": True,
            }
            rows.append(row)
    _adjust(rows, ("model",))
    schema = {
        "model": pl.Utf8,
        "dataset": pl.Utf8,
        "stack": pl.Utf8,
        "n_ids": pl.Int64,
        "n_common": pl.Int64,
        "n_dropped": pl.Int64,
        "baseline": pl.Float64,
        "part_scores": pl.Utf8,
        "score": pl.Float64,
        "drop": pl.Float64,
        "expected": pl.Float64,
        "interaction": pl.Float64,
        "interaction_ci_low": pl.Float64,
        "interaction_ci_high": pl.Float64,
        "p_value": pl.Float64,
        "q_value": pl.Float64,
        "distinguishable": pl.Boolean,
        "seed": pl.UInt64,
        "measurable": pl.Boolean,
        "reason": pl.Utf8,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
    return "—" if value is None or value != value else f"{value * scale:.{digits}f}"  # None or NaN


def _fmt_ci(low, high, scale: float = 100.0) -> str:
    return "—" if low is None or high is None else f"{_fmt(low, scale)} to {_fmt(high, scale)}"


def _signed(value, scale: float = 100.0) -> str:
    return "—" if value is None else f"{value * scale:+.1f}"


def _fmt_q(value) -> str:
    return "—" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def chance_lines(table: pl.DataFrame, what: str) -> list[str]:
    """Per model: how many cells were tested, how many raw p < 0.05 chance alone would give if no cell
    differed (0.05 × tested), how many had p < 0.05, and how many survive Benjamini–Hochberg at 5%."""
    lines = []
    tested = table.filter(pl.col("p_value").is_not_null())
    for (model,), cells in sorted(tested.group_by("model"), key=lambda g: g[0]):
        m = cells.height
        raw = cells.filter(pl.col("p_value") < 0.05).height
        kept = cells.filter(pl.col("distinguishable")).height
        lines.append(
            f"- {model}, {what}: {m} {'cell' if m == 1 else 'cells'} tested; if none differed, chance alone "
            "would give about "
            f"0.05 × {m} ≈ {0.05 * m:.1f} with p < 0.05; {raw} have p < 0.05, {kept} survive Benjamini–Hochberg "
            "at 5% (`≠ 0`)."
        )
    return lines


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
        "`rouge` package, as LongBench computes it), ×100. Each stack is compared with the baseline on the "
        "samples both finished (`common`); `dropped` samples were left out of that comparison because one "
        "of the two failed them. `Δ` is the stack minus the baseline on those samples with its 95% *paired* "
        "bootstrap CI (expanded BCa; the same resampled samples for both); `q` is its Benjamini–Hochberg "
        "q-value within the model's table (docs/metrics.md), and `≠ 0` marks q < 0.05. `all finished` is the "
        "stack's score over every sample it finished, with its own 95% bootstrap CI. "
        "`rouge_l_google` (Google's rouge-score) and the paired differences of the other metrics are in "
        "`long.csv` and `paired.csv`.",
        "",
    ]
    lines += [
        "## Quality (LongBench score)",
        "",
        "| model | stack | dataset | metric | common | Δ vs baseline | Δ 95% CI | q | ≠ 0 | all finished | CI "
        "| n | failed | dropped | empty | truncated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
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
            f"| {_signed(p.get('diff'))} | {_fmt_ci(p.get('diff_ci_low'), p.get('diff_ci_high'))} "
            f"| {_fmt_q(p.get('q_value'))} | {marked} "
            f"| {score} | {ci} | {r['n']} | {failed} "
            f"| {p.get('n_dropped', '—')} | {r.get('n_empty_predictions', '—')} | {r.get('n_truncated', '—')} |"
        )
    lines += [
        "",
        "Failed samples (e.g. `oom`: out of memory) are left out of the score; empty predictions (no word "
        "after Unicode normalization) score 0; truncated prompts lost the middle of their context to the "
        "model's `max_input_tokens`.",
    ]
    if pairs is not None:
        lines += ["", *chance_lines(pairs.filter(pl.col("metric") == "score"), "stack-vs-baseline differences")]
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
        shared = long.filter(pl.col("gpu_shared_by") > 1).select("model", "stack", "gpu_shared_by").unique()
        if not shared.is_empty():
            k = shared["gpu_shared_by"].max()
            lines.append(
                f"Times of {shared.height} (model, stack) cells were measured with up to {k} jobs sharing one GPU "
                "(`LCOPT_JOBS_PER_GPU`): they are throughput, not latency; compare latency only from runs with "
                "`gpu_shared_by` 1 (long.csv)."
            )
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
            "| model | dataset | stack | common | baseline | parts | expected | stack score | stack vs expected "
            "| 95% CI | q | ≠ 0 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in comp.iter_rows(named=True):
            parts = "—"
            if r["part_scores"]:
                parts = ", ".join(
                    f"{name} {float(value) * 100:.1f}"
                    for name, value in (item.split("=") for item in r["part_scores"].split(";"))
                )
            marked = {True: "yes", False: "no"}.get(r["distinguishable"], "—")
            versus, ci = as_percent(r["interaction"]), "—"
            if r["interaction_ci_low"] is not None:
                ci = f"{as_percent(r['interaction_ci_low'])} to {as_percent(r['interaction_ci_high'])}"
            if r["measurable"] is False:
                versus = "not measurable"
            elif r["reason"]:
                versus = r["reason"]
            lines.append(
                f"| {r['model']} | {r['dataset']} | {r['stack']} | {r['n_common']} | {_fmt(r['baseline'], 100)} "
                f"| {parts} | {_fmt(r['expected'], 100)} | {_fmt(r['score'], 100)} | {versus} "
                f"| {ci} | {_fmt_q(r['q_value'])} | {marked} |"
            )
        lines += [
            "",
            "Expected = baseline × Π (part / baseline): each technique keeps its own share of the baseline's "
            "score whatever the others do (independence). `stack vs expected` is the interaction "
            "log(stack / expected) shown as the percent change it stands for (-20%: the stack scores a fifth "
            "below what independent parts give: they compound; above 0 they overlap), with its 95% paired "
            "bootstrap CI (expanded percentile; the same resampled samples for the baseline, the parts and the "
            "stack). Every total is guarded by ½ so that a stack at 0 stays finite, which pulls small totals "
            "toward no interaction: at 20 samples, 10.0 against 25.0 reads -54%, not -60%. All on the samples "
            "the stack, its parts and the baseline finished. *Not measurable*: the baseline's or a part's own "
            "95% CI reaches 0 (its total is 0 in at least 2.5% of the resamples), so the ratio rests on nothing "
            "(`reason` in "
            "compounding.csv). Where the parts improve on the baseline, expected can exceed 100 and a stack "
            "cannot reach it: read a negative value there as gains that do not add up.",
            "",
            *chance_lines(comp, "interactions"),
        ]
        unmeasurable = comp.filter(pl.col("measurable").not_()).height
        if unmeasurable:
            noun = "cell" if unmeasurable == 1 else "cells"
            lines.append(f"- {unmeasurable} {noun} not measurable: a baseline or part whose own 95% CI reaches 0.")
    return "\n".join(lines) + "\n"


def write_tables(summary_paths: list[Path], out_dir: Path, seed: int = 0, resamples: int = 1000) -> pl.DataFrame:
    """Every table from the score summaries and, beside each, its per-sample file (`samples_path`); `seed`
    and `resamples` are the config's, from which each paired cell derives its own seed. Every input is
    read and checked first (`read_score_file`), so a damaged one stops the stage before any table is
    written; the aggregate rule marks the tables `update()`, so that Snakemake keeps the old ones (it
    restores them) when this job fails, instead of deleting them before it runs."""
    scores = [read_score_file(path) for path in summary_paths]  # every input checked before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    long = long_table(scores)
    samples = load_samples(scores)
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
