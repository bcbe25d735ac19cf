"""Which process ran on which GPU, and when: NVML sampled every 0.5 s while a command runs.

    python benchmarks/gpu_timeline.py --out timeline.csv -- snakemake --cores 8 --resources gpu=2 ...

One CSV line per GPU per sample: time, GPU index and UUID, utilization, memory used, and the PIDs of
the compute processes on it. `--check` then reads the timeline and the predictions' own `gpus` field
and prints whether jobs overlapped in time on distinct GPUs and whether any GPU ever held two jobs.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path


def sample(out: Path, stop: threading.Event, every_s: float = 0.5) -> None:
    import pynvml

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    start = time.time()
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "gpu", "uuid", "util_percent", "mem_used_mib", "pids"])
        while not stop.is_set():
            t = time.time() - start
            for i, h in enumerate(handles):
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                writer.writerow([
                    f"{t:.2f}", i, pynvml.nvmlDeviceGetUUID(h), pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
                    pynvml.nvmlDeviceGetMemoryInfo(h).used // 2**20, " ".join(str(p.pid) for p in procs),
                ])  # fmt: skip
            f.flush()
            stop.wait(every_s)


def check(timeline: Path, predictions: list[Path]) -> dict:
    """Overlap and exclusivity from the samples; each prediction file's GPUs from its rows."""
    with open(timeline) as f:
        rows = list(csv.DictReader(f))
    by_time: dict[str, dict[int, set[str]]] = {}
    for r in rows:
        by_time.setdefault(r["t_s"], {})[int(r["gpu"])] = set(r["pids"].split())
    busy_together = sum(1 for gpus in by_time.values() if sum(bool(p) for p in gpus.values()) >= 2)
    shared = sum(1 for gpus in by_time.values() for p in gpus.values() if len(p) > 1)
    pid_gpus: dict[str, set[int]] = {}
    for gpus in by_time.values():
        for g, pids in gpus.items():
            for pid in pids:
                pid_gpus.setdefault(pid, set()).add(g)
    jobs = {}
    for path in predictions:
        lines = Path(path).read_text().splitlines()
        uuids = {tuple(sorted(g["uuid"] for g in json.loads(line).get("gpus", []))) for line in lines}
        jobs[str(path)] = sorted(uuids)
    return {
        "samples": len(by_time),
        "samples_with_two_or_more_busy_gpus": busy_together,
        "gpu_samples_with_two_or_more_processes": shared,
        "processes_seen": len(pid_gpus),
        "processes_on_more_than_their_gpus": {p: sorted(g) for p, g in pid_gpus.items() if len(g) > 1},
        "prediction_files_gpus": jobs,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--check", nargs="*", type=Path, help="prediction files to check against the timeline")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rc = 0
    if args.command:
        stop = threading.Event()
        thread = threading.Thread(target=sample, args=(args.out, stop), daemon=True)
        thread.start()
        rc = subprocess.call(args.command[1:] if args.command[0] == "--" else args.command)
        stop.set()
        thread.join()
    if args.check is not None:
        print(json.dumps(check(args.out, args.check), indent=1))
    sys.exit(rc)


if __name__ == "__main__":
    main()
