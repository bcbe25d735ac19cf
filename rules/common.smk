import shutil
from pathlib import Path

import lcopt.config
import lcopt.jobs
import lcopt.workflow
from lcopt.provenance import code_sha256
from lcopt.stacks import parse_stack
from lcopt.techniques import get as technique

# The config's own technique modules are loaded first, then the schema (which the technique registry
# completes) is checked with clear messages (file, key, allowed values) and its defaults filled in.
CONFIG_SOURCE = ", ".join(map(str, workflow.configfiles)) or "config"
lcopt.config.validate(config, CONFIG_SOURCE)
lcopt.config.check_sources(config, CONFIG_SOURCE)

# Every job computes with the same CPU kernels on any x86-64 machine (its threads are fixed by its rule).
lcopt.workflow.pin_cpu_kernels()

R = "results"
MODELS = list(config["models"])  # in the config's order: the order of the tables
DATASETS = list(config["datasets"])
STACKS = list(config["stacks"])
# From here on the config's keys are sorted at every level: a param made of any part of it is the same
# whatever the order of the file's keys (snakemake compares params by repr and reruns on a change).
lcopt.jobs.sort_config(config)
ON_GPU = config["device"] == "cuda" or (
    config["device"] == "auto" and shutil.which("nvidia-smi") is not None
)
TABLES = expand(
    f"{R}/tables/{{name}}",
    name=[
        "long.parquet",
        "long.csv",
        "quality_wide.csv",
        "latency_wide.csv",
        "paired.csv",
        "compounding.csv",
        "summary.md",
        "provenance.json",
    ],
)


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    stack=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    variant=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    prompt_variant=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    prompt_source=r"[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9][A-Za-z0-9_.+-]*)?",
    technique=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    asset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def model_source(model):
    """Where `from_pretrained` finds a model's weights and tokenizer."""
    spec = config["models"][model]
    if "gguf" in spec:
        return f"{R}/models/{model}/source"
    if spec["path"] == "lcopt-demo" and config["demo_model"]["retrain"]:
        return f"{R}/demo-model"
    return spec["path"]


def model_source_input(wildcards):
    """The source directory as an input when the workflow itself makes it."""
    source = model_source(wildcards.model)
    return [source] if source.startswith(f"{R}/") else []


def prompt_source(key):
    """What builds the prompts of `results/prompts/<key>/`: the model's source, or for `<model>@<variant>`
    the released checkpoint that variant stands on (its own tokenizer, template, stop tokens, context)."""
    model, variant = lcopt.jobs.split_prompt_source(key)
    return lcopt.jobs.checkpoint(config, model, variant) if variant else model_source(model)


def prompts_of(model, stack):
    """The prompt file an inference job reads: its model variant's prompt source, its prompt variant."""
    stack = parse_stack(stack)
    return f"{lcopt.jobs.prompt_source(config, model, stack.model_variant)}/{stack.prompt_variant}"


def options(name):
    """The config block of a technique (gptq4 and rtn4 share `gptq`); {} for none or one without options."""
    return lcopt.config.technique_options(config, name) if name not in ("none", "baseline", "full") else {}


def code(script, *techniques):
    """A hash of the code a job runs: its script, every lcopt module that imports (transitively), and the
    modules of the techniques it applies. A param, so that fixing that code reruns the job."""
    script = str(Path(workflow.main_snakefile).parent / script)
    return code_sha256(script, *sorted({technique(t).__module__ for t in techniques}))


def stack_techniques(stack):
    return [t for t in stack.split("+") if t != "baseline"]


def technique_aliases(stack):
    """The config's `technique_aliases` a job's stack (or variant) uses: the job registers them as the
    config did."""
    return {t: config["technique_aliases"][t] for t in stack_techniques(stack) if t in config["technique_aliases"]}


def parent_variant(variant):
    """`prune+gptq4` is made from `prune`; a single technique from the baseline."""
    return "+".join(variant.split("+")[:-1]) or "baseline"


def parent_prompt_variant(prompt_variant):
    """A prompt variant is its last technique applied to the rows of the one before it (`full`: the dataset)."""
    return "+".join(prompt_variant.split("+")[:-1]) or "full"


def asset_dirs(name):
    """Asset name -> directory, for the workflow-built assets a technique needs under this config."""
    return {a: f"{R}/assets/{name}/{a}" for a in technique(name).assets(options(name))}


def longbench_options(dataset):
    """The longbench block only for a LongBench dataset, so editing it never reruns synthetic ones."""
    return config["longbench"] if "longbench" in config["datasets"][dataset] else {}


def gpus(model):
    return config["models"][model]["gpus"] if ON_GPU else 0


def dataset_task(dataset):
    spec = config["datasets"][dataset]
    return spec.get("longbench") or spec["synthetic"]


# One inference job per dataset on a GPU, where a job's samples take minutes to hours and a rerun (a new
# dataset, a timeout) should redo only its own; one per stack, over every dataset, on a CPU, where a job's
# start-up (imports, model load, warm-up: about 5 s) is as long as half its samples (the default run's 32
# take about 12 s): 20 jobs there instead of 100. There, adding a dataset reruns every stack's inference.
INFERENCE_JOB = "{model}/{stack}/{dataset}" if ON_GPU else "{model}/{stack}"
INFERENCE_OUTPUTS = [
    f"{R}/predictions/{{model}}/{{stack}}/{d}.jsonl" for d in (["{dataset}"] if ON_GPU else sorted(DATASETS))
]


def inference_datasets(wildcards):
    """The datasets one inference job runs (INFERENCE_JOB)."""
    return [wildcards.dataset] if ON_GPU else sorted(DATASETS)
