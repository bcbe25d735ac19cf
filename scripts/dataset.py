from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (snakemake is injected by the script directive)

import logging  # noqa: E402

from lcopt.data import build_dataset  # noqa: E402
from lcopt.io import write_json_atomic, write_jsonl_atomic  # noqa: E402

sm = snakemake  # noqa: F821
out = Path(sm.output.rows)
rows, provenance = build_dataset(dict(sm.params.spec), dict(sm.params.longbench), cache_dir=out.parent / ".cache")
logging.info("%s: %d rows (%s)", sm.wildcards.dataset, len(rows), provenance)
write_jsonl_atomic(out, rows)
write_json_atomic(sm.output.provenance, provenance | {"rows": len(rows)})
