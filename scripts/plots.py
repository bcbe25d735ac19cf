from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.plots import write_plots  # noqa: E402

sm = snakemake  # noqa: F821
write_plots(Path(sm.input[0]), Path(sm.output[0]).parent)
