from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

import torch  # noqa: E402

from lcopt.gpus import claim  # noqa: E402
from lcopt.inference import run_datasets  # noqa: E402
from lcopt.techniques import load_modules, register_aliases  # noqa: E402

sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
load_modules(sm.params.modules)
register_aliases(dict(sm.params.aliases))
# one prompt file per dataset (snakemake gives a lone one as a string)
prompts = [sm.input.prompts] if isinstance(sm.input.prompts, str) else list(sm.input.prompts)
with claim(sm.resources.gpu):  # this job's own GPU(s), before CUDA starts
    run_datasets(
        Path(sm.input.variant),
        [(Path(p), Path(o)) for p, o in zip(prompts, sm.output, strict=True)],
        kv_method=sm.params.kv_method,
        device=sm.params.device,
        dtype=sm.params.dtype,
        kv_options={name: dict(block) for name, block in dict(sm.params.kv_options).items()},
        engine=sm.params.engine,
    )
