"""Compare two result folders of the same config (e.g. the default run before and after a refactor).

Compares every per-job score summary present in both (`results/scores/**/*.summary.json`) and, where
both runs finished, `results/tables/*.csv` and `summary.md`, leaving out what measures time or memory
(wall-clock times, tokens per second, peak memory), which no two runs share: in `summary.md`, its
sections of system readings and of prompt compression (its times; its keep rates are in the tables).
Prints what differs and a count; exits 1 on any difference.

    python tools/compare_runs.py /tmp/before-run/results /tmp/after-run/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

from lcopt.inference import READINGS

# This run's clock, memory and energy readings (lcopt.inference.READINGS), and the times made of them;
# what code made each file (two runs compared are often of two commits).
TIMING = READINGS | {"compression_seconds", "e2e_with_compression_s"}
PROVENANCE = {"git_commit", "git_dirty"}


def summary_without_timing(path: Path) -> dict:
    s = {k: v for k, v in json.loads(path.read_text()).items() if k not in PROVENANCE}
    s["system"] = {k: v for k, v in s.get("system", {}).items() if k not in TIMING}
    return s


def table_without_timing(path: Path) -> pl.DataFrame:
    df = pl.read_csv(path, infer_schema_length=None)
    if "metric" in df.columns:
        df = df.filter(~pl.col("metric").is_in(sorted(TIMING)))
    keep = [c for c in df.columns if c not in TIMING | PROVENANCE and not c.endswith(("_s", "seconds", "_bytes"))]
    return df.select(keep)


def markdown_without_timing(path: Path) -> list[str]:
    """summary.md's lines but its sections that hold readings (`## System`, `## Prompt compression`)."""
    kept, skipping = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            skipping = line.startswith(("## System", "## Prompt compression"))
        if not skipping:
            kept.append(line)
    return kept


def main(a: Path, b: Path) -> int:
    differences, compared = [], 0
    for path in sorted(a.glob("scores/**/*.summary.json")):
        other = b / path.relative_to(a)
        if other.is_file():
            compared += 1
            if summary_without_timing(path) != summary_without_timing(other):
                differences.append(str(path.relative_to(a)))
    tables = [t for t in sorted(a.glob("tables/*.csv")) if not t.name.startswith("latency")]  # all timings
    for path in tables:
        other = b / path.relative_to(a)
        if other.is_file():
            compared += 1
            left, right = table_without_timing(path), table_without_timing(other)
            if left.columns != right.columns or not left.equals(right):
                differences.append(str(path.relative_to(a)))
    summary, other = a / "tables" / "summary.md", b / "tables" / "summary.md"
    if summary.is_file() and other.is_file():
        compared += 1
        if markdown_without_timing(summary) != markdown_without_timing(other):
            differences.append(str(summary.relative_to(a)))
    print(json.dumps({"compared": compared, "differences": differences}))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
