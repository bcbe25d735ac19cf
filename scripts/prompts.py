from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.prompts import write_prompts  # noqa: E402

sm = snakemake  # noqa: F821
original = [sm.input.original] if isinstance(sm.input.original, str) else list(sm.input.original)
write_prompts(
    sm.params.source,
    sm.params.task,
    Path(sm.input.rows),
    sm.params.max_input_tokens,
    Path(sm.output[0]),
    sm.params.trust_remote_code,
    original_rows_jsonl=Path(original[0]) if original else None,
)
