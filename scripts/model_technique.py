from pathlib import Path

from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.data import calibration_texts  # noqa: E402
from lcopt.gpus import claim  # noqa: E402
from lcopt.models import write_technique_variant  # noqa: E402
from lcopt.techniques import load_modules  # noqa: E402

sm = snakemake  # noqa: F821
load_modules(sm.params.modules)
spec = dict(sm.params.calibration_spec)
out = Path(sm.output.variant)
# held-out text for a technique that calibrates (its options say how much); none for one that does not
n_texts = sm.params.options.get("calibration_samples", 0)
texts = calibration_texts(spec, dict(sm.params.longbench), out.parent / ".cache", n_texts) if n_texts else []
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
