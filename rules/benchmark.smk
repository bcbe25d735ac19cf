rule decode_benchmark:
    """Decode and prefill speed of the engines against the GPU's rooflines (lcopt.decode_benchmark, as
    benchmarks/decode.py runs it), on random weights of each `benchmark.models` architecture; not part of `all`:
    `snakemake results/benchmarks/decode.json --resources gpu=1`."""
    output:
        f"{R}/benchmarks/decode.json",
    params:
        benchmark=config["benchmark"],
        code=code("scripts/decode_benchmark.py"),
    resources:
        gpu=1,
    log:
        f"{R}/logs/decode_benchmark.log",
    benchmark:
        f"{R}/benchmarks/decode_benchmark.tsv"
    conda:
        "../envs/lcopt.yaml"
    script:
        "../scripts/decode_benchmark.py"
