rule dataset:
    """LongBench rows (hub or local JSONL) or synthetic rows, cut to the sample count."""
    output:
        rows=f"{R}/data/{{dataset}}.jsonl",
        provenance=f"{R}/data/{{dataset}}.provenance.json",
    params:
        spec=lambda w: config["datasets"][w.dataset]
        | {"samples": config["datasets"][w.dataset].get("samples", config["samples"])},
        longbench=lambda w: longbench_options(w.dataset),
    log:
        f"{R}/logs/dataset/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/dataset/{{dataset}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/dataset.py"
