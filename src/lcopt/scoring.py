"""The scoring stage: per-sample metrics and a per-(model, stack, dataset) summary with bootstrap CIs.

Samples that did not finish (`status` other than `ok`, e.g. out of memory) are kept in the
per-sample file with their status and no scores, counted in the summary (`n_failed`), and left out
of the means: a failed sample is not a wrong answer, and mixing the two would hide it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from lcopt.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from lcopt.metrics import bootstrap_ci, longbench_total, score_sample
from lcopt.tasks import get_task

QUALITY_METRICS = ("score", "f1", "precision", "recall", "exact_match", "rouge_l", "rouge_l_google", "hallucination")
SYSTEM_METRICS = (
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "decode_tokens_per_s",
    "n_input_tokens",
    "n_output_tokens",
    "kv_cache_bytes",
    "peak_mem_bytes",
    "nvml_used_bytes",
    "compression_ratio",
    "compression_seconds",
)


def score_rows(task_name: str, predictions: list[dict], data: list[dict]) -> list[dict]:
    task = get_task(task_name)
    by_id = {row["_id"]: row for row in data}
    scored = []
    for pred in predictions:
        row = by_id.get(pred["_id"])
        if row is None:
            raise KeyError(f"prediction {pred['_id']!r} has no row in the dataset file")
        out = {
            "_id": pred["_id"],
            "status": pred["status"],
            "prediction": pred["prediction"],
            "answers": row["answers"],
        }
        if pred["status"] == "ok":
            try:
                out |= score_sample(task.metric, pred["prediction"], row["answers"], row["context"], row["input"])
            except ValueError as exc:
                raise ValueError(f"sample {pred['_id']!r} of task {task_name}: {exc}") from exc
        scored.append(out)
    return scored


def summarize(scored: list[dict], predictions: list[dict], seed: int, resamples: int) -> dict:
    ok = [s for s in scored if s["status"] == "ok"]
    quality = {}
    for name in QUALITY_METRICS:
        values = [s[name] for s in ok if s.get(name) is not None]
        lo, hi = bootstrap_ci(values, resamples, seed)
        quality[name] = {
            "mean": statistics.fmean(values) if values else None,
            "ci_low": lo,
            "ci_high": hi,
            "n": len(values),
        }
    system = {}
    ok_preds = [p for p in predictions if p["status"] == "ok"]
    for name in SYSTEM_METRICS:
        values = [p[name] for p in ok_preds if p.get(name) is not None]
        if values:
            system[name] = {
                "mean": statistics.fmean(values),
                "median": statistics.median(values),
                "max": max(values),
                "n": len(values),
            }
    return {
        "n": len(scored),
        "n_ok": len(ok),
        "n_failed": len(scored) - len(ok),
        "failures": sorted({s["status"] for s in scored} - {"ok"}),
        "n_empty_predictions": sum(bool(s.get("empty_prediction")) for s in ok),
        "n_truncated": sum(bool(p.get("truncated")) for p in predictions),
        "longbench_score": longbench_total([s["score"] for s in ok]) if ok else None,
        "quality": quality,
        "system": system,
    }


def score_file(
    task_name: str,
    predictions_jsonl: Path,
    data_jsonl: Path,
    samples_out: Path,
    summary_out: Path,
    labels: dict,
    seed: int = 0,
    resamples: int = 1000,
) -> dict:
    predictions = read_jsonl(predictions_jsonl)
    scored = score_rows(task_name, predictions, read_jsonl(data_jsonl))
    task = get_task(task_name)
    summary = {
        **labels,
        "task": task.name,
        "family": task.family,
        "metric": task.metric,
        "chat_template": any(p.get("chat_template") for p in predictions),
        **summarize(scored, predictions, seed, resamples),
    }
    write_jsonl_atomic(samples_out, scored)
    write_json_atomic(summary_out, summary)
    return summary
