from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.plots import write_plots  # noqa: E402
from lcopt.report import figures  # noqa: E402

sm = snakemake  # noqa: F821
# the outputs are the plan's figures, in the plan's order (rules/report.smk)
write_plots(
    Path(sm.input.long),
    Path(sm.input.compounding),
    Path(sm.input.per_sample),
    figures(list(sm.params.models), dict(sm.params.dataset_families)),
    list(map(Path, sm.output)),
)
