import json
from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

import polars as pl  # noqa: E402

from lcopt.io import write_text_atomic  # noqa: E402
from lcopt.report import results_table_html, run_rst  # noqa: E402

sm = snakemake  # noqa: F821
long = pl.read_parquet(sm.input.long)
write_text_atomic(sm.output.table, results_table_html(long))
write_text_atomic(sm.output.run, run_rst(json.loads(Path(sm.input.provenance).read_text()), long))
