rule dataset:
    """LongBench rows (hub or local JSONL) or synthetic rows, cut to the sample count."""
    output:
        rows=f"{R}/data/{{dataset}}.jsonl",
        provenance=f"{R}/data/{{dataset}}.provenance.json",
    params:
        spec=lambda w: lcopt.jobs.dataset_spec(config, w.dataset),
        longbench=lambda w: longbench_options(w.dataset),
        code=code("scripts/dataset.py"),
    log:
        f"{R}/logs/dataset/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/dataset/{{dataset}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/dataset.py"
