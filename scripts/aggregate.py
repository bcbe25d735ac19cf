from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.aggregate import write_tables  # noqa: E402

sm = snakemake  # noqa: F821
write_tables([Path(p) for p in sm.input], Path(sm.output[0]).parent)
