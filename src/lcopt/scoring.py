"""The scoring stage: per-sample metrics and a per-(model, stack, dataset) summary with bootstrap CIs.

Samples that did not finish (`status` other than `ok`, e.g. out of memory) are kept in the
per-sample file with their status and no scores, counted in the summary (`n_failed`), and left out
of the means: a failed sample is not a wrong answer, and mixing the two would hide it. Comparing
stacks on the samples every one of them finished is the aggregate stage's job (`aggregate.paired`).

The support metrics read the prompt the model received (the prompts file of the stack's prompt
variant: after compression, truncation and the chat template), never the gold answers.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from lcopt.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from lcopt.metrics import longbench_total, other_key_value_rate, score_sample, unsupported_entity_rate
from lcopt.stats import cell_seed, mean_ci
from lcopt.tasks import Task, get_task

# Per-sample quality metrics of every task; a task may add its stricter support metric (`quality_metrics`).
QUALITY_METRICS = (
    "score",
    "f1",
    "precision",
    "recall",
    "exact_match",
    "rouge_l",
    "rouge_l_google",
    "unsupported_token_rate",
)
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
    "model_compression_ratio",
    "compression_seconds",
    "e2e_with_compression_s",
    "tpot_median_s",
    "decode_energy_j_per_token",
    "peak_mem_above_start_bytes",
    "roofline_decode_s",
    "roofline_prefill_s",
)


def quality_metrics(task: Task) -> tuple[str, ...]:
    return QUALITY_METRICS + ((task.strict_support,) if task.strict_support else ())


def _strict_support(task: Task, prediction: str, row: dict, prompt: str) -> dict:
    if task.strict_support == "unsupported_entity_rate":
        return {"unsupported_entity_rate": unsupported_entity_rate(prediction, prompt)}
    if task.strict_support == "other_key_value_rate":
        if "key_values" not in row:
            raise ValueError(f"row has no 'key_values', which {task.name}'s other_key_value_rate needs")
        return {"other_key_value_rate": other_key_value_rate(prediction, row["answers"], row["key_values"])}
    return {}


def score_rows(task_name: str, predictions: list[dict], data: list[dict], prompts: list[dict]) -> list[dict]:
    """Every metric of every finished sample; `prompts` are the rows of the prompts file the predictions
    were made from (their `prompt` is the text the model received)."""
    task = get_task(task_name)
    by_id = {row["_id"]: row for row in data}
    prompt_by_id = {p["_id"]: p["prompt"] for p in prompts}
    scored = []
    for pred in predictions:
        row = by_id.get(pred["_id"])
        if row is None:
            raise KeyError(f"prediction {pred['_id']!r} has no row in the dataset file")
        if pred["_id"] not in prompt_by_id:
            raise KeyError(f"prediction {pred['_id']!r} has no row in the prompts file")
        out = {
            "_id": pred["_id"],
            "status": pred["status"],
            "prediction": pred["prediction"],
            "answers": row["answers"],
        }
        if pred["status"] == "ok" and pred.get("init") == "random":
            out["not_measured"] = "random weights (init: random): a system run, no quality"
        elif pred["status"] == "ok":
            prompt = prompt_by_id[pred["_id"]]
            try:
                out |= score_sample(task.metric, pred["prediction"], row["answers"], prompt)
                out |= _strict_support(task, pred["prediction"], row, prompt)
            except ValueError as exc:
                raise ValueError(f"sample {pred['_id']!r} of task {task_name}: {exc}") from exc
        scored.append(out)
    return scored


def summarize(
    scored: list[dict],
    predictions: list[dict],
    seed: int,
    resamples: int,
    key: tuple = (),
    metrics: tuple[str, ...] = QUALITY_METRICS,
) -> dict:
    """Means with 95% bootstrap CIs over the finished samples; each metric's CI has its own seed, derived
    from the config `seed` and `key` (model, stack, dataset) plus the metric's name."""
    ok = [s for s in scored if s["status"] == "ok"]
    quality = {}
    for name in metrics:
        values = [s[name] for s in ok if s.get(name) is not None]
        metric_seed = cell_seed(seed, *key, name)
        lo, hi = mean_ci(values, metric_seed, resamples)
        quality[name] = {
            "mean": statistics.fmean(values) if values else None,
            "ci_low": lo,
            "ci_high": hi,
            "n": len(values),
            "seed": metric_seed,
        }
    system = {}
    # the study charges prompt compression to the technique: its time joins the end-to-end latency
    ok_preds = [
        p | ({"e2e_with_compression_s": p["e2e_s"] + p.get("compression_seconds", 0.0)} if "e2e_s" in p else {})
        for p in predictions
        if p["status"] == "ok"
    ]
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
        "longbench_score": longbench_total(scores) if (scores := [s["score"] for s in ok if "score" in s]) else None,
        "quality_measured": not ok or not all(s.get("not_measured") for s in ok),
        "quality": quality,
        "system": system,
    }


def score_file(
    task_name: str,
    predictions_jsonl: Path,
    data_jsonl: Path,
    prompts_jsonl: Path,
    samples_out: Path,
    summary_out: Path,
    labels: dict,
    seed: int = 0,
    resamples: int = 1000,
) -> dict:
    """Score one predictions file; `labels` (model, stack, dataset, ...) go into the summary and key the
    bootstrap seeds."""
    predictions = read_jsonl(predictions_jsonl)
    scored = score_rows(task_name, predictions, read_jsonl(data_jsonl), read_jsonl(prompts_jsonl))
    task = get_task(task_name)
    key = tuple(labels.get(k) for k in ("model", "stack", "dataset"))
    devices = sorted({p["compression_device"] for p in predictions if p.get("compression_device")})
    summary = {
        **labels,
        "task": task.name,
        "family": task.family,
        "metric": task.metric,
        "chat_template": any(p.get("chat_template") for p in predictions),
        "compression_device": ",".join(devices) or None,
        **summarize(scored, predictions, seed, resamples, key, quality_metrics(task)),
    }
    write_jsonl_atomic(samples_out, scored)
    write_json_atomic(summary_out, summary)
    return summary
