from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.prompts import write_prompts  # noqa: E402

sm = snakemake  # noqa: F821
write_prompts(
    sm.params.source,
    sm.params.task,
    Path(sm.input.rows),
    sm.params.max_input_tokens,
    Path(sm.output[0]),
    sm.params.trust_remote_code,
)
