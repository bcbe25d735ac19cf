"""What an inference job costs before its samples: one sample of each of the default run's datasets,
run as one process per dataset (`separate`, a CPU job per dataset as before issue 21) or as one process
for all of them (`grouped`, `lcopt.inference.run_datasets`, a CPU job per stack). Uses a finished run's
variant and prompts; prints wall and CPU seconds.

    python tools/job_startup.py results baseline grouped
    python tools/job_startup.py results gptq4 separate
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE = (
    "import sys, torch; torch.set_num_threads(1); from pathlib import Path; from lcopt.inference import run; "
    "run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))"
)
MANY = (
    "import sys, torch; torch.set_num_threads(1); from pathlib import Path; "
    "from lcopt.inference import run_datasets; a = sys.argv[2:]; "
    "run_datasets(Path(sys.argv[1]), [(Path(a[i]), Path(a[i + 1])) for i in range(0, len(a), 2)])"
)


def main(results: Path, variant: str, mode: str) -> None:
    model = next((results / "models").iterdir()).name
    prompts = sorted((results / "prompts" / model / "full").glob("*.jsonl"))
    variant_json = results / "models" / model / variant / "variant.json"
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for p in prompts:
            one = Path(tmp) / p.name
            one.write_text(p.read_text().splitlines()[0] + "\n")
            files.append((one, Path(tmp) / f"out-{p.name}"))
        options = {"env": os.environ | {"OMP_NUM_THREADS": "1"}, "check": True, "capture_output": True}
        start, before = time.perf_counter(), os.times()
        if mode == "separate":
            for one, out in files:
                subprocess.run([sys.executable, "-c", ONE, variant_json, one, out], **options)
        else:
            args = [str(x) for pair in files for x in pair]
            subprocess.run([sys.executable, "-c", MANY, variant_json, *args], **options)
        after = os.times()
    cpu = after.children_user - before.children_user + after.children_system - before.children_system
    wall = time.perf_counter() - start
    print(f"{mode} {variant}: {wall:.2f} s wall, {cpu:.2f} s CPU, {len(files)} datasets x 1 sample")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
