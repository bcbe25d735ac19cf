import shutil

from snakemake.utils import validate

import lcopt.config
from lcopt.lingua2_demo import DEMO_DIRNAME as LINGUA2_DEMO_DIRNAME, DEMO_MODEL as LINGUA2_DEMO
from lcopt.stacks import options_key, parse_stack

# Clear messages first (file, key, allowed values), then snakemake's own schema check and defaults.
CONFIG_SOURCE = ", ".join(map(str, workflow.configfiles)) or "config"
lcopt.config.validate(config, CONFIG_SOURCE)
lcopt.config.check_sources(config, CONFIG_SOURCE)


validate(config, str(lcopt.config.SCHEMA_PATH))

R = "results"
MODELS = list(config["models"])
DATASETS = list(config["datasets"])
STACKS = list(config["stacks"])
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


LINGUA2_DEMO_DIR = f"{R}/models/lingua2/{LINGUA2_DEMO_DIRNAME}"


def lingua2_model():
    """The LLMLingua-2 classifier: lcopt's demo one (trained by the workflow) or the configured hub id / directory."""
    model = config["lingua2"]["model"]
    return LINGUA2_DEMO_DIR if model == LINGUA2_DEMO else model


def lingua2_model_input(wildcards):
    """The demo classifier's directory as an input when the workflow trains it."""
    model = lingua2_model()
    return [model] if model == LINGUA2_DEMO_DIR else []


def parent_variant(variant):
    """`prune+gptq4` is made from `prune`; a single technique from the baseline."""
    return "+".join(variant.split("+")[:-1]) or "baseline"


def longbench_options(dataset):
    """The longbench block only for a LongBench dataset, so editing it never reruns synthetic ones."""
    return config["longbench"] if "longbench" in config["datasets"][dataset] else {}


def technique_options(variant):
    """The config block of a variant's last model-side technique (gptq4 and rtn4 share `gptq`)."""
    return config[options_key(variant.split("+")[-1])]


def calibration_dataset(variant):
    return technique_options(variant).get("calibration_dataset") or DATASETS[0]


def gpus(model):
    return config["models"][model]["gpus"] if ON_GPU else 0


def dataset_task(dataset):
    spec = config["datasets"][dataset]
    return spec.get("longbench") or spec["synthetic"]
