rule prompts:
    """Per model tokenizer: task template, middle truncation to the model's budget, chat template."""
    input:
        rows=lambda w: (
            f"{R}/data/{w.dataset}.jsonl"
            if w.prompt_variant == "full"
            else f"{R}/compressed/{w.prompt_variant}/{w.dataset}.jsonl"
        ),
        source=model_source_input,
        # a compressed context's size in this model's tokens needs the context before compression
        original=lambda w: [] if w.prompt_variant == "full" else [f"{R}/data/{w.dataset}.jsonl"],
    output:
        f"{R}/prompts/{{model}}/{{prompt_variant}}/{{dataset}}.jsonl",
    params:
        source=lambda w: model_source(w.model),
        task=lambda w: dataset_task(w.dataset),
        max_input_tokens=lambda w: config["models"][w.model]["max_input_tokens"],
    log:
        f"{R}/logs/prompts/{{model}}/{{prompt_variant}}/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/prompts/{{model}}/{{prompt_variant}}/{{dataset}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/prompts.py"
