rule compress_contexts:
    """LLMLingua-2 over each context, once per dataset: model-independent, shared by every model."""
    input:
        f"{R}/data/{{dataset}}.jsonl",
    output:
        f"{R}/compressed/lingua2/{{dataset}}.jsonl",
    params:
        lingua2=config["lingua2"],
    threads: 2
    log:
        f"{R}/logs/compress_contexts/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/compress_contexts/{{dataset}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/compress.py"
