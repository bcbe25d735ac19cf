rule inference:
    """Greedy generation for one (model variant, KV-cache method, prompt variant): over one dataset (GPU)
    or every dataset (CPU), the model loaded and warmed up once."""
    input:
        variant=lambda w: f"{R}/models/{w.model}/{parse_stack(w.stack).model_variant}/variant.json",
        prompts=lambda w: [f"{R}/prompts/{prompts_of(w.model, w.stack)}/{d}.jsonl" for d in inference_datasets(w)],
    output:
        INFERENCE_OUTPUTS,
    params:
        kv_method=lambda w: parse_stack(w.stack).kv_method,
        kv_options=lambda w: {t: options(t) for t in parse_stack(w.stack).cache},
        modules=config["technique_modules"],
        aliases=lambda w: technique_aliases(w.stack),
        device=config["device"],
        engine=config["engine"],
        dtype=lambda w: config["models"][w.model].get("dtype", config["dtype"]),
        code=lambda w: code("scripts/inference.py", *stack_techniques(w.stack)),
    threads: 1
    resources:
        gpu=lambda w: gpus(w.model),
    log:
        f"{R}/logs/inference/{INFERENCE_JOB}.log",
    benchmark:
        f"{R}/benchmarks/inference/{INFERENCE_JOB}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/inference.py"
