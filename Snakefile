# lcopt: what long-context inference optimizations really cost and buy.
# data -> prompts -> model variants -> inference -> scores -> tables -> plots -> report
# (`snakemake --report results/report.html` after a run: every figure and table, captioned)
from pathlib import Path

from snakemake.utils import min_version

import lcopt.config

min_version("9.0")


# The embedded default unless a config is given (`--configfile x.yaml` alone then defines the run: merged
# with the default, its models and datasets would add to the demo's). Read by lcopt first, whose errors
# name the file (snakemake's name none; a --configfile it reads before this file runs: `python -m
# lcopt.config x.yaml` checks one).
if not workflow.overwrite_configfiles:
    if Path("config/config.yaml").is_file():
        lcopt.config.read_file("config/config.yaml")

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/models.smk"
include: "rules/compress.smk"
include: "rules/prompts.smk"
include: "rules/inference.smk"
include: "rules/scoring.smk"
include: "rules/report.smk"
include: "rules/benchmark.smk"


rule all:
    input:
        TABLES,
        PLOTS,
        REPORT_FILES,
    default_target: True
