from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.io import read_jsonl  # noqa: E402
from lcopt.provenance import git_state  # noqa: E402
from lcopt.scoring import score_file  # noqa: E402

sm = snakemake  # noqa: F821
# the prompt budget the variant ran with (a released checkpoint's context may be shorter than its model's)
budgets = {p["max_input_tokens"] for p in read_jsonl(Path(sm.input.predictions))}
labels = {
    "model": sm.wildcards.model,
    "stack": sm.wildcards.stack,
    "dataset": sm.wildcards.dataset,
    "max_input_tokens": max(budgets),
    **git_state(),
}
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
