"""The per-sample figures docs/results/smollm2-multinews-eviction-h100/README.md quotes beside its tables, from
the committed predictions: per stack, which device run made its rows (the commit they record, the jobs that
shared the GPU), its output length, how many answers loop, and the memory it keeps; and how many of the
baseline's and KIVI's answers equal the H200 run's (docs/results/smollm2-multinews-h200/) word for word.

  python tools/smollm2_eviction_stats.py > docs/results/smollm2-multinews-eviction-h100/stats.txt
"""

from __future__ import annotations

import collections
import gzip
import json
import statistics
from pathlib import Path

RUNS = Path(__file__).resolve().parents[1] / "docs" / "results"
RUN = "smollm2-multinews-eviction-h100"
MIB = 2**20
# an answer "loops" when fewer than this share of its word 4-grams are distinct
LOOP_DISTINCT_4GRAMS = 0.2


def predictions(run: str, stack: str) -> list[dict]:
    with gzip.open(RUNS / run / "predictions" / f"{stack}.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def distinct_4grams(text: str) -> float:
    words = text.split()
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    return len(set(grams)) / len(grams) if grams else 1.0


def main() -> None:
    stacks = sorted(p.name.removesuffix(".jsonl.gz") for p in (RUNS / RUN / "predictions").glob("*.jsonl.gz"))
    print(
        "stack | n | rows per (commit, gpu_shared_by) | mean output tokens | at 512 tokens | loops "
        f"(< {LOOP_DISTINCT_4GRAMS:.0%} distinct 4-grams) | KV cache MiB at the end | "
        "memory after prefill MiB | prefill peak MiB"
    )
    for stack in stacks:
        rows = [r for r in predictions(RUN, stack) if r["status"] == "ok"]
        runs = collections.Counter((r["git_commit"][:7], r["gpu_shared_by"]) for r in rows)
        print(
            f"{stack} | {len(rows)} | {', '.join(f'{c} K={k}: {n}' for (c, k), n in sorted(runs.items()))} | "
            f"{statistics.fmean(r['n_output_tokens'] for r in rows):.0f} | "
            f"{sum(r['n_output_tokens'] >= 512 for r in rows)} | "
            f"{sum(distinct_4grams(r['prediction']) < LOOP_DISTINCT_4GRAMS for r in rows)} | "
            f"{statistics.fmean(r['kv_cache_bytes'] for r in rows) / MIB:.2f} | "
            f"{statistics.fmean(r['mem_after_prefill_bytes'] for r in rows) / MIB:.0f} | "
            f"{statistics.fmean(r['prefill_peak_mem_bytes'] for r in rows) / MIB:.0f}"
        )
    print("\nanswers equal to the H200 run's (docs/results/smollm2-multinews-h200/), word for word")
    for stack in ["baseline", "kivi4", "kivi2"]:
        h100 = {r["_id"]: r["prediction"] for r in predictions(RUN, stack)}
        h200 = predictions("smollm2-multinews-h200", stack)
        print(f"{stack}: {sum(r['prediction'] == h100[r['_id']] for r in h200)} of {len(h200)}")


if __name__ == "__main__":
    main()
