"""The scoring stage: per-sample metrics and a per-(model, stack, dataset) summary with bootstrap CIs.

Samples that did not finish (`status` other than `ok`, e.g. out of memory) are kept in the
per-sample file with their status and no scores, counted in the summary (`n_failed`), and left out
of the means: a failed sample is not a wrong answer, and mixing the two would hide it. Comparing
stacks on the samples every one of them finished is the aggregate stage's job (`aggregate.paired`).

The support metrics read the content of the prompt the model received (the `content` of the prompts
file of the stack's prompt variant: the context and question after compression and truncation, without
the task and chat templates), never the gold answers. The gold answers get the same metrics against the
same content (`gold_unsupported_*`): the floor a model's rate is read against, since reference
summaries, too, name things their sources do not.

A predictions or prompts file that cannot be read, has fewer rows than its prompts, or was written by an
older lcopt is an error naming the file and the command that rebuilds it.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from lcopt.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from lcopt.metrics import (
    Source,
    longbench_total,
    other_key_value_rate,
    score_sample,
    unsupported_entity_rate,
    unsupported_token_rate,
)
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
    "prefill_peak_mem_bytes",
    "mem_after_prefill_bytes",
    "roofline_decode_s",
    "roofline_prefill_s",
)


def gold_metrics(task: Task) -> tuple[str, ...]:
    """The gold answers' own support metrics (there is no gold `other_key_value_rate`: a gold answer is
    never another key's value)."""
    entity = ("unsupported_entity_rate",) if task.strict_support == "unsupported_entity_rate" else ()
    return tuple(f"gold_{name}" for name in ("unsupported_token_rate", *entity))


def quality_metrics(task: Task) -> tuple[str, ...]:
    return QUALITY_METRICS + ((task.strict_support,) if task.strict_support else ()) + gold_metrics(task)


def _strict_support(task: Task, prediction: str, row: dict, source: Source) -> dict:
    if task.strict_support == "unsupported_entity_rate":
        return {"unsupported_entity_rate": unsupported_entity_rate(prediction, source)}
    if task.strict_support == "other_key_value_rate":
        if "key_values" not in row:
            raise ValueError(f"row has no 'key_values', which {task.name}'s other_key_value_rate needs")
        return {"other_key_value_rate": other_key_value_rate(prediction, row["answers"], row["key_values"])}
    return {}


def gold_support(task: Task, answers: list[str], source: Source) -> dict:
    """The support metrics of the reference answers against the content the model was given: per sample,
    the mean over its answers that have a value (None when none has)."""
    measures = {"gold_unsupported_token_rate": unsupported_token_rate}
    if task.strict_support == "unsupported_entity_rate":
        measures["gold_unsupported_entity_rate"] = unsupported_entity_rate
    out = {}
    for name, measure in measures.items():
        values = [v for answer in answers if (v := measure(answer, source)) is not None]
        out[name] = statistics.fmean(values) if values else None
    return out


def score_rows(task_name: str, predictions: list[dict], data: list[dict], prompts: list[dict]) -> list[dict]:
    """Every metric of every finished sample; `prompts` are the rows of the prompts file the predictions
    were made from (their `content` is the context and question the model was given)."""
    task = get_task(task_name)
    by_id = {row["_id"]: row for row in data}
    prompt_by_id = {p["_id"]: p for p in prompts}
    instructions = task.template.format(context="\n", input="\n")  # the template's own words: neutral
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
            if "content" not in prompt:
                raise ValueError(
                    f"prompts row {pred['_id']!r} has no 'content' (the context and question the model was "
                    "given, which the support metrics read): it was written before lcopt recorded it"
                )
            source = Source(prompt["content"], instructions)
            try:
                out |= score_sample(task.metric, pred["prediction"], row["answers"], source)
                out |= _strict_support(task, pred["prediction"], row, source)
                out |= gold_support(task, row["answers"], source)
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


def rebuild_command(path: Path) -> str:
    return f"`snakemake --cores 1 --force {path}` (with the run's --configfile)"


def read_input(path: Path, what: str) -> list[dict]:
    """A JSONL input of the score stage; one that cannot be read is named, with the command that rebuilds it."""
    try:
        return read_jsonl(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{exc} (the score stage's {what} file). Rebuild it: {rebuild_command(path)}") from exc


def check_inputs(predictions: list[dict], prompts: list[dict], predictions_jsonl: Path, prompts_jsonl: Path) -> None:
    """An inference job writes one row per prompt (a failed sample keeps its row, with its status): a file
    with fewer or other rows is cut short or made from other prompts, and scoring it would silently shrink
    every comparison to the samples it has. A prompt whose prediction is scored needs its `content`."""
    counts = Counter(p.get("_id") for p in predictions)
    wanted = {p["_id"] for p in prompts}
    missing = [p["_id"] for p in prompts if p["_id"] not in counts]
    extra = sorted(set(counts) - wanted, key=str)  # a row without an _id is None here
    repeated = sorted((i for i, n in counts.items() if n > 1), key=str)
    problems = [
        f"{len(missing)} of the {len(wanted)} prompts of {prompts_jsonl} have no row (first: {missing[0]!r})"
        if missing
        else "",
        f"{len(extra)} rows are for no prompt there (first: {extra[0]!r})" if extra else "",
        f"{len(repeated)} samples have several rows (first: {repeated[0]!r})" if repeated else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(
            f"{predictions_jsonl}: {len(predictions)} rows for {len(wanted)} prompts; "
            + "; ".join(problems)
            + f". An inference job writes one row per prompt. Rebuild it: {rebuild_command(predictions_jsonl)}"
        )
    measured = {p.get("_id") for p in predictions if p.get("status") == "ok" and p.get("init") != "random"}
    no_content = [p["_id"] for p in prompts if p["_id"] in measured and "content" not in p]
    if no_content:
        raise ValueError(
            f"{prompts_jsonl}: {len(no_content)} of its {len(prompts)} rows have no 'content' (the context and "
            f"question the model was given, which the support metrics read; first: {no_content[0]!r}): it was "
            f"written before lcopt recorded it. Rebuild it: {rebuild_command(prompts_jsonl)}, then rerun the "
            "workflow (its predictions are made again from the rebuilt prompts)"
        )


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
    bootstrap seeds. The summary also records the prompt budget the predictions ran with
    (`max_input_tokens`: a released checkpoint's context may be shorter than its model's)."""
    predictions = read_input(predictions_jsonl, "predictions")
    prompts = read_input(prompts_jsonl, "prompts")
    check_inputs(predictions, prompts, predictions_jsonl, prompts_jsonl)
    scored = score_rows(task_name, predictions, read_input(data_jsonl, "dataset"), prompts)
    task = get_task(task_name)
    key = tuple(labels.get(k) for k in ("model", "stack", "dataset"))
    devices = sorted({p["compression_device"] for p in predictions if p.get("compression_device")})
    budgets = [p["max_input_tokens"] for p in predictions if "max_input_tokens" in p]
    summary = {
        **labels,
        "max_input_tokens": max(budgets) if budgets else None,
        "task": task.name,
        "family": task.family,
        "metric": task.metric,
        "chat_template": any(p.get("chat_template") for p in predictions),
        "compression_device": ",".join(devices) or None,
        # most jobs that shared the GPU with a sample (LCOPT_JOBS_PER_GPU): above 1, its times are throughput
        "gpu_shared_by": max((p.get("gpu_shared_by", 1) for p in predictions), default=1),
        **summarize(scored, predictions, seed, resamples, key, quality_metrics(task)),
    }
    write_jsonl_atomic(samples_out, scored)
    write_json_atomic(summary_out, summary)
    return summary
