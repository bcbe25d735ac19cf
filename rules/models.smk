rule train_demo_model:
    """Train lcopt-demo from scratch (only when demo_model.retrain is set)."""
    output:
        directory(f"{R}/demo-model"),
    params:
        overrides=config["demo_model"].get("train", {}),
        seed=config["seed"],
    resources:
        gpu=1 if ON_GPU else 0,
    log:
        f"{R}/logs/train_demo_model.log",
    benchmark:
        f"{R}/benchmarks/train_demo_model.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/train_demo_model.py"


rule import_gguf:
    """Turn a GGUF file shipped in a Python package into a normal HF model directory, once."""
    output:
        directory(f"{R}/models/{{model}}/source"),
    params:
        gguf=lambda w: config["models"][w.model]["gguf"],
    log:
        f"{R}/logs/import_gguf/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/import_gguf/{{model}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/import_gguf.py"


rule model_variant:
    """A model after the model-side techniques of a stack (the baseline points at the source)."""
    input:
        model_source_input,
    output:
        f"{R}/models/{{model}}/{{variant}}/variant.json",
    params:
        source=lambda w: model_source(w.model),
    log:
        f"{R}/logs/model_variant/{{model}}/{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/model_variant/{{model}}/{{variant}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/model_variant.py"
