rule prompts:
    """With the tokenizer of the model that reads them (`<model>`, or `<model>@<variant>` for a released
    checkpoint's own): task template, middle truncation to the budget its context allows, chat template."""
    input:
        rows=lambda w: (
            f"{R}/data/{w.dataset}.jsonl"
            if w.prompt_variant == "full"
            else f"{R}/compressed/{w.prompt_variant}/{w.dataset}.jsonl"
        ),
        source=lambda w: [s for s in [prompt_source(w.prompt_source)] if s.startswith(f"{R}/")],
        # a compressed context's size in this model's tokens needs the context before compression
        original=lambda w: [] if w.prompt_variant == "full" else [f"{R}/data/{w.dataset}.jsonl"],
    output:
        f"{R}/prompts/{{prompt_source}}/{{prompt_variant}}/{{dataset}}.jsonl",
    params:
        source=lambda w: prompt_source(w.prompt_source),
        task=lambda w: dataset_task(w.dataset),
        max_input_tokens=lambda w: config["models"][lcopt.jobs.split_prompt_source(w.prompt_source)[0]][
            "max_input_tokens"
        ],
        trust_remote_code=lambda w: lcopt.jobs.trusted(config, prompt_source(w.prompt_source)),
        code=code("scripts/prompts.py"),
    log:
        f"{R}/logs/prompts/{{prompt_source}}/{{prompt_variant}}/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/prompts/{{prompt_source}}/{{prompt_variant}}/{{dataset}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/prompts.py"
