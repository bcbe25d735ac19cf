from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.aggregate import write_tables  # noqa: E402
from lcopt.io import write_json_atomic  # noqa: E402
from lcopt.provenance import collect  # noqa: E402

sm = snakemake  # noqa: F821
out_dir = Path(sm.output[0]).parent
write_tables([Path(p) for p in sm.input.summaries], out_dir, sm.params.seed, sm.params.resamples)
write_json_atomic(out_dir / "provenance.json", collect(dict(sm.params.config)))
