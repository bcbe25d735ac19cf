from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.provenance import git_state  # noqa: E402
from lcopt.scoring import score_file  # noqa: E402

sm = snakemake  # noqa: F821
labels = {"model": sm.wildcards.model, "stack": sm.wildcards.stack, "dataset": sm.wildcards.dataset, **git_state()}
score_file(
    sm.params.task,
    Path(sm.input.predictions),
    Path(sm.input.rows),
    Path(sm.input.prompts),
    Path(sm.output.samples),
    Path(sm.output.summary),
    labels,
    seed=sm.params.seed,
    resamples=sm.params.resamples,
)
