rule train_lingua2_demo:
    """lcopt's demo LLMLingua-2 classifier (facts vs filler on synthetic contexts), when lingua2.model names it."""
    output:
        directory(LINGUA2_DEMO_DIR),
    params:
        seed=config["seed"],
    threads: 2
    log:
        f"{R}/logs/train_lingua2_demo.log",
    benchmark:
        f"{R}/benchmarks/train_lingua2_demo.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/train_lingua2_demo.py"


rule compress_contexts:
    """LLMLingua-2 over each context, once per dataset: model-independent, shared by every model."""
    input:
        data=f"{R}/data/{{dataset}}.jsonl",
        classifier=lingua2_model_input,
    output:
        f"{R}/compressed/lingua2/{{dataset}}.jsonl",
    params:
        lingua2=config["lingua2"],
        model=lingua2_model(),
    threads: 2
    log:
        f"{R}/logs/compress_contexts/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/compress_contexts/{{dataset}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/compress.py"
