from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.io import atomic_file  # noqa: E402
from lcopt.report import per_sample_table  # noqa: E402

sm = snakemake  # noqa: F821
rows = dict(zip(sm.params.datasets, map(Path, sm.input.rows), strict=True))
table = per_sample_table([tuple(c) for c in sm.params.cells], [Path(p) for p in sm.input.samples], rows)
with atomic_file(sm.output[0], ".parquet") as tmp:
    table.write_parquet(tmp)
