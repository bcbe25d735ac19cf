rule aggregate:
    """Every summary and per-sample score file into Polars tables: long (with CIs), wide, paired
    differences and compounding (paired bootstrap CIs), Markdown."""
    input:
        summaries=expand(
            f"{R}/scores/{{model}}/{{stack}}/{{dataset}}.summary.json",
            model=MODELS,
            stack=STACKS,
            dataset=DATASETS,
        ),
        samples=expand(
            f"{R}/scores/{{model}}/{{stack}}/{{dataset}}.samples.jsonl",
            model=MODELS,
            stack=STACKS,
            dataset=DATASETS,
        ),
    output:
        TABLES,
    params:
        config=config,
        seed=config["seed"],
        resamples=config["bootstrap_resamples"],
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/aggregate.py"


rule plots:
    """Quality vs memory and latency, precision vs recall, per-dataset bars."""
    input:
        f"{R}/tables/long.parquet",
    output:
        PLOTS,
    log:
        f"{R}/logs/plots.log",
    benchmark:
        f"{R}/benchmarks/plots.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/plots.py"
