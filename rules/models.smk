rule train_demo_model:
    """Train lcopt-demo from scratch (only when demo_model.retrain is set)."""
    output:
        directory(f"{R}/demo-model"),
    params:
        overrides=config["demo_model"].get("train", {}),
        seed=config["seed"],
        code=code("scripts/train_demo_model.py"),
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
        code=code("scripts/import_gguf.py"),
    log:
        f"{R}/logs/import_gguf/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/import_gguf/{{model}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/import_gguf.py"


rule model_variant:
    """The baseline variant: a pointer to the source weights."""
    input:
        model_source_input,
    output:
        f"{R}/models/{{model}}/baseline/variant.json",
    params:
        source=lambda w: model_source(w.model),
        init=lambda w: config["models"][w.model]["init"],
        trust_remote_code=lambda w: lcopt.jobs.trusted(config, model_source(w.model)),
        code=code("scripts/model_variant.py"),
    log:
        f"{R}/logs/model_variant/{{model}}/baseline.log",
    benchmark:
        f"{R}/benchmarks/model_variant/{{model}}/baseline.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/model_variant.py"


rule model_technique:
    """The last model-side technique of a variant, applied to the variant before it (prune+gptq4 is
    GPTQ of the pruned model), calibrated on held-out text that no job scores, or the model's released
    checkpoint for it. Params: only what this job uses (lcopt.jobs.model_technique)."""
    input:
        parent=lambda w: f"{R}/models/{w.model}/{parent_variant(w.variant)}/variant.json",
    output:
        variant=f"{R}/models/{{model}}/{{variant}}/variant.json",
        weights=directory(f"{R}/models/{{model}}/{{variant}}/weights"),
    wildcard_constraints:
        variant=r"(?!baseline$)[A-Za-z0-9_.+-]+",
    params:
        job=lambda w: lcopt.jobs.model_technique(config, w.model, w.variant),
        modules=config["technique_modules"],
        aliases=lambda w: technique_aliases(w.variant),
        code=lambda w: code("scripts/model_technique.py", w.variant.split("+")[-1]),
    # one on every machine: GPTQ's and pruning's results depend on how many threads split their sums
    threads: 1
    resources:
        gpu=lambda w: gpus(w.model),
    log:
        f"{R}/logs/model_technique/{{model}}/{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/model_technique/{{model}}/{{variant}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/model_technique.py"
