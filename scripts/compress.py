from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

import torch  # noqa: E402

from lcopt.io import read_jsonl, write_jsonl_atomic  # noqa: E402
from lcopt.lingua2 import compress_rows, load_compressor  # noqa: E402

sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
options = dict(sm.params.lingua2)
compressor = load_compressor(sm.params.model, options["device"])  # lingua2.model, resolved by the workflow
rows = compress_rows(read_jsonl(Path(sm.input.data)), compressor, rate=options["rate"])
write_jsonl_atomic(Path(sm.output[0]), rows)
