from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

import torch  # noqa: E402

from lcopt.data import held_out_calibration  # noqa: E402
from lcopt.gpus import claim  # noqa: E402
from lcopt.models import write_technique_variant  # noqa: E402
from lcopt.techniques import load_modules, register_aliases  # noqa: E402

sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)
load_modules(sm.params.modules)
register_aliases(dict(sm.params.aliases))
job = dict(sm.params.job)  # lcopt.jobs.model_technique
out = Path(sm.output.variant)
calibration = None
if job["calibration"]:  # held-out text, checked against every scored row of its source before anything is made
    c = job["calibration"]
    n = job["options"]["calibration_samples"]
    calibration = held_out_calibration(
        c["spec"], n, out.parent / ".cache", c["scored"], c["longbench"], name=c["name"], key=c["key"]
    )
with claim(sm.resources.gpu):  # this job's own GPU(s), before CUDA starts
    write_technique_variant(
        sm.wildcards.model,
        sm.wildcards.variant,
        job["technique"],
        Path(sm.input.parent),
        Path(sm.output.weights),
        out,
        job["options"],
        calibration,
        checkpoint=job["checkpoint"],
        trust_remote_code=job["trust_remote_code"],
    )
