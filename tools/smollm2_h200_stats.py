"""The per-sample figures docs/results/smollm2-multinews-h200/README.md quotes beside its tables, from the
committed predictions: per stack, the mean number of output tokens and the medians of ms per output token
and of time to first token; and LongBench's multi_news score over the file's first 16 rows for the H200
baseline and gptq4 and the CPU subset's baseline and rtn4 (the same rows), with the official file's
answers (`$LCOPT_SHARED_ASSETS/longbench/multi_news.jsonl`).

  python tools/smollm2_h200_stats.py > docs/results/smollm2-multinews-h200/stats.txt
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from lcopt.metrics import score_sample  # noqa: E402
from lcopt.tasks import get_task  # noqa: E402

RUNS = REPO / "docs" / "results"


def predictions(run: str, stack: str) -> list[dict]:
    with gzip.open(RUNS / run / "predictions" / f"{stack}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def main() -> None:
    files = (RUNS / "smollm2-multinews-h200" / "predictions").glob("*.jsonl.gz")
    h200 = sorted(p.name.removesuffix(".jsonl.gz") for p in files)
    print("stack | n | mean output tokens | median ms/token | median TTFT ms")
    for stack in h200:
        rows = [r for r in predictions("smollm2-multinews-h200", stack) if r["status"] == "ok"]
        print(
            f"{stack} | {len(rows)} | {statistics.fmean(r['n_output_tokens'] for r in rows):.0f} | "
            f"{statistics.median(r['tpot_median_s'] for r in rows) * 1e3:.2f} | "
            f"{statistics.median(r['ttft_s'] for r in rows) * 1e3:.1f}"
        )
    shared = Path(os.environ.get("LCOPT_SHARED_ASSETS", REPO.parent / "shared" / "assets"))
    with open(shared / "longbench" / "multi_news.jsonl") as f:
        rows = [json.loads(line) for line in f][:16]
    metric = get_task("multi_news").metric
    print(f"\nLongBench score x100 over the first 16 rows of {shared / 'longbench' / 'multi_news.jsonl'}")
    for run, stack in [
        ("smollm2-multinews-h200", "baseline"),
        ("smollm2-multinews-h200", "gptq4"),
        ("smollm2-multinews-cpu16", "baseline"),
        ("smollm2-multinews-cpu16", "rtn4"),
    ]:
        by_id = {p["_id"]: p for p in predictions(run, stack)}
        scores = [score_sample(metric, by_id[r["_id"]]["prediction"], r["answers"], "")["score"] for r in rows]
        print(f"{run} {stack}: {100 * statistics.fmean(scores):.1f}")


if __name__ == "__main__":
    main()
