rule technique_asset:
    """Something a technique needs the workflow to build first (e.g. a demo classifier), seeded."""
    output:
        directory(f"{R}/assets/{{technique}}/{{asset}}"),
    params:
        seed=config["seed"],
        modules=config["technique_modules"],
        aliases=lambda w: technique_aliases(w.technique),
        code=lambda w: code("scripts/technique_asset.py", w.technique),
    # one on every machine: the classifier's weights depend on how many threads split its sums
    threads: 1
    log:
        f"{R}/logs/technique_asset/{{technique}}/{{asset}}.log",
    benchmark:
        f"{R}/benchmarks/technique_asset/{{technique}}/{{asset}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/technique_asset.py"


rule compress_contexts:
    """A prompt-side technique over each context, once per dataset: model-independent, shared by every
    model (`a+b` is b applied to a's rows)."""
    input:
        rows=lambda w: (
            f"{R}/data/{w.dataset}.jsonl"
            if parent_prompt_variant(w.prompt_variant) == "full"
            else f"{R}/compressed/{parent_prompt_variant(w.prompt_variant)}/{w.dataset}.jsonl"
        ),
        assets=lambda w: list(asset_dirs(w.prompt_variant.split("+")[-1]).values()),
    output:
        f"{R}/compressed/{{prompt_variant}}/{{dataset}}.jsonl",
    params:
        technique=lambda w: w.prompt_variant.split("+")[-1],
        options=lambda w: options(w.prompt_variant.split("+")[-1]),
        assets=lambda w: asset_dirs(w.prompt_variant.split("+")[-1]),
        modules=config["technique_modules"],
        aliases=lambda w: technique_aliases(w.prompt_variant),
        code=lambda w: code("scripts/compress.py", w.prompt_variant.split("+")[-1]),
    threads: 1
    log:
        f"{R}/logs/compress_contexts/{{prompt_variant}}/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/compress_contexts/{{prompt_variant}}/{{dataset}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/compress.py"
