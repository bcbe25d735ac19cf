"""Glue for the workflow's scripts: each rule's log file gets the job's logging, warnings and
progress bars, so a job can be followed with `tail -f` and read after it failed; the error that ends a
job is also printed where snakemake shows it."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path


def setup_logging(log_path: str | Path) -> None:
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the job
    sys.stdout = sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=stream, force=True
    )
    logging.captureWarnings(True)

    def report(exc_type, exc, tb):
        """The traceback goes to the log; the error itself also to snakemake's output."""
        traceback.print_exception(exc_type, exc, tb)
        print(f"{exc_type.__module__}.{exc_type.__name__}: {exc}\n(full traceback: {log_path})", file=sys.__stderr__)

    sys.excepthook = report
