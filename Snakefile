# lcopt: what long-context inference optimizations really cost and buy.
# data -> prompts -> model variants -> inference -> scores -> tables -> plots
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/models.smk"
include: "rules/compress.smk"
include: "rules/prompts.smk"
include: "rules/inference.smk"
include: "rules/scoring.smk"
include: "rules/report.smk"


rule all:
    input:
        TABLES,
        PLOTS,
    default_target: True
