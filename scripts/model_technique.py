from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.data import calibration_texts  # noqa: E402
from lcopt.gpus import claim  # noqa: E402
from lcopt.models import write_technique_variant  # noqa: E402

sm = snakemake  # noqa: F821
spec = dict(sm.params.calibration_spec)
out = Path(sm.output.variant)
texts = calibration_texts(
    spec, dict(sm.params.longbench), out.parent / ".cache", sm.params.options["calibration_samples"]
)
with claim(sm.resources.gpu):  # this job's own GPU(s), before CUDA starts
    write_technique_variant(
        sm.wildcards.model,
        sm.wildcards.variant,
        sm.params.technique,
        Path(sm.input.parent),
        Path(sm.output.weights),
        out,
        dict(sm.params.options),
        texts,
    )
