from lcopt.workflow import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821

from lcopt.decode_benchmark import main  # noqa: E402
from lcopt.gpus import claim  # noqa: E402

sm = snakemake  # noqa: F821
b = sm.params.benchmark
args = [arg for name, path in b["models"].items() for arg in ("--model", f"{name}={path}")]
args += ["--contexts", *map(str, b["contexts"]), "--paths", *b["paths"], "--new-tokens", str(b["new_tokens"])]
with claim(sm.resources.gpu):  # this job's own GPU, before CUDA starts
    main([*args, "--out", sm.output[0]])
