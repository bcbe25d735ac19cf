from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.models import write_variant  # noqa: E402

sm = snakemake  # noqa: F821
write_variant(
    sm.wildcards.model, "baseline", sm.params.source, Path(sm.output[0]), sm.params.init, sm.params.trust_remote_code
)
