from lcopt.report import figures as report_figures
from lcopt.tasks import get_task

# Every figure of the report (lcopt.report.figures): the plots rule's outputs, each marked for
# `snakemake --report` with its category (task family or topic), subcategory (model) and labels.
# Sorted, as every param is (lcopt.jobs.sort_config): a config re-saved in another key order reruns nothing.
DATASET_FAMILIES = {d: get_task(dataset_task(d)).family for d in sorted(DATASETS)}
FIGURES = report_figures(sorted(MODELS), DATASET_FAMILIES)
PLOTS = [f"{R}/plots/{f.path}" for f in FIGURES]
REPORT_FILES = [f"{R}/report/table.html", f"{R}/report/run.rst"]
CELLS = [(m, s, d) for m in sorted(MODELS) for s in sorted(STACKS) for d in sorted(DATASETS)]


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
        # update(): Snakemake keeps the previous tables while this job runs and restores them if it fails
        # (a damaged score file stops it, named, before anything is written), instead of deleting them first
        [update(t) for t in TABLES],
    params:
        config=config,
        seed=config["seed"],
        resamples=config["bootstrap_resamples"],
        code=code("scripts/aggregate.py"),
    log:
        f"{R}/logs/aggregate.log",
    benchmark:
        f"{R}/benchmarks/aggregate.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/aggregate.py"


rule sample_table:
    """Per-sample scores with each row's context length and needle depth (for the needle heatmap)."""
    input:
        samples=[f"{R}/scores/{m}/{s}/{d}.samples.jsonl" for m, s, d in CELLS],
        rows=[f"{R}/data/{d}.jsonl" for d in sorted(DATASETS)],
    output:
        f"{R}/tables/per_sample.parquet",
    params:
        cells=[(m, s, d, dataset_task(d)) for m, s, d in CELLS],
        datasets=sorted(DATASETS),
        code=code("scripts/sample_table.py"),
    log:
        f"{R}/logs/sample_table.log",
    benchmark:
        f"{R}/benchmarks/sample_table.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/sample_table.py"


rule plots:
    """Every figure of the report, read from the tables only (lcopt.plots)."""
    input:
        long=f"{R}/tables/long.parquet",
        compounding=f"{R}/tables/compounding.csv",
        per_sample=f"{R}/tables/per_sample.parquet",
    output:
        [
            report(
                f"{R}/plots/{f.path}",
                caption=f"../report/{f.caption}",
                category=f.category,
                subcategory=f.subcategory,
                labels=f.labels,
            )
            for f in FIGURES
        ],
    params:
        # the plan (lcopt.report.figures) is remade from these in the script: outputs in the same order
        models=sorted(MODELS),
        dataset_families=DATASET_FAMILIES,
        code=code("scripts/plots.py"),
    log:
        f"{R}/logs/plots.log",
    benchmark:
        f"{R}/benchmarks/plots.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/plots.py"


rule report_files:
    """The report's browsable results table and the run's description (matrix, device, versions)."""
    input:
        long=f"{R}/tables/long.parquet",
        provenance=f"{R}/tables/provenance.json",
    output:
        table=report(
            f"{R}/report/table.html",
            caption="../report/table.rst",
            category="Overview",
            subcategory="all models",
            labels={"figure": "results table", "stacks": "all", "metric": "every metric, with CIs"},
        ),
        run=f"{R}/report/run.rst",
    params:
        code=code("scripts/report_files.py"),
    log:
        f"{R}/logs/report_files.log",
    benchmark:
        f"{R}/benchmarks/report_files.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/report_files.py"
