rule aggregate:
    """Every summary into Polars tables: long (with CIs), wide, Markdown."""
    input:
        expand(
            f"{R}/scores/{{model}}/{{stack}}/{{dataset}}.summary.json",
            model=MODELS,
            stack=STACKS,
            dataset=DATASETS,
        ),
    output:
        TABLES,
    params:
        config=config,
        code=code("scripts/aggregate.py"),
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
    params:
        code=code("scripts/plots.py"),
    log:
        f"{R}/logs/plots.log",
    benchmark:
        f"{R}/benchmarks/plots.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/plots.py"
