rule score:
    """LongBench's metric per dataset plus F1/precision/recall/EM and support metrics, bootstrap CIs."""
    input:
        predictions=f"{R}/predictions/{{model}}/{{stack}}/{{dataset}}.jsonl",
        rows=f"{R}/data/{{dataset}}.jsonl",
        # the support metrics read the content of the prompt the model received (its `content`)
        prompts=lambda w: f"{R}/prompts/{w.model}/{parse_stack(w.stack).prompt_variant}/{w.dataset}.jsonl",
    output:
        samples=f"{R}/scores/{{model}}/{{stack}}/{{dataset}}.samples.jsonl",
        summary=f"{R}/scores/{{model}}/{{stack}}/{{dataset}}.summary.json",
    params:
        task=lambda w: dataset_task(w.dataset),
        seed=config["seed"],
        resamples=config["bootstrap_resamples"],
        code=code("scripts/score.py"),
    log:
        f"{R}/logs/score/{{model}}/{{stack}}/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/score/{{model}}/{{stack}}/{{dataset}}.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/score.py"
