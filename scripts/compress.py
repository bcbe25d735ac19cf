from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

import torch  # noqa: E402

from lcopt.io import read_jsonl, write_jsonl_atomic  # noqa: E402
from lcopt.techniques import get, load_modules, register_aliases  # noqa: E402

sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
load_modules(sm.params.modules)
register_aliases(dict(sm.params.aliases))
assets = {name: Path(path) for name, path in dict(sm.params.assets).items()}
rows = get(sm.params.technique).compress_rows(read_jsonl(Path(sm.input.rows)), dict(sm.params.options), assets)
write_jsonl_atomic(Path(sm.output[0]), rows)
