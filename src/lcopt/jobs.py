"""What each workflow job is given, decided from the validated config (the rules call these).

Snakemake reruns a job whose params changed, comparing their `repr`, so a job gets only what it uses,
in canonical form (keys sorted at every level): editing one model's released checkpoint reruns that
model's variant alone, and re-saving the config with its keys in another order reruns nothing.

Here too: which released checkpoint a variant stands on, whose tokenizer builds a variant's prompts
(the checkpoint's own, where one is used), and which held-out text a variant calibrates on.
"""

from __future__ import annotations

from typing import Any

from lcopt.config import technique_options
from lcopt.stacks import options_key
from lcopt.techniques import BASELINE, get

# Option keys that name other parts of the config rather than how a technique acts; a job gets what
# they point to instead (its own checkpoint, its calibration rows).
REFERENCE_OPTIONS = ("checkpoints", "calibration_dataset")
PROMPT_SOURCE_SEPARATOR = "@"  # results/prompts/<model>@<variant>/...: a checkpoint's own prompts


def canonical(value: Any) -> Any:
    """`value` with every mapping's keys sorted (lists keep their order: it means something)."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def sort_config(config: dict) -> None:
    """Put the config itself in canonical order, in place, so that every param built from it is."""
    ordered = canonical(dict(config))
    config.clear()
    config.update(ordered)


def dataset_spec(config: dict, dataset: str) -> dict:
    """A dataset's entry with its sample count (its own or the run's `samples`): what builds its rows."""
    spec = config["datasets"][dataset]
    return canonical(spec | {"samples": spec.get("samples", config["samples"])})


def _source(spec: dict) -> tuple:
    """Where a dataset's text comes from: one LongBench task file, or one synthetic generator and length."""
    return ("longbench", spec["longbench"]) if "longbench" in spec else ("synthetic", spec["synthetic"], spec["words"])


def trusted(config: dict, source: str) -> bool:
    """Whether the config lets `source` (a model path or checkpoint as written) run its own code."""
    return source in config.get("trust_remote_code", [])


def checkpoint(config: dict, model: str, variant: str) -> str | None:
    """The released checkpoint that stands for `variant` of `model`: a variant of one model-side technique
    whose block maps the model to one (`<block>.checkpoints.<model>`); a checkpoint is that technique
    applied to the base model, so never to a variant of a variant, nor to a technique that makes its own
    (`uses_checkpoints`: prune_native)."""
    if variant == BASELINE or "+" in variant or not get(variant).uses_checkpoints:
        return None
    return technique_options(config, variant).get("checkpoints", {}).get(model)


def prompt_source(config: dict, model: str, model_variant: str) -> str:
    """The prompts folder of a model variant: `<model>` (the model's own tokenizer, shared by every variant
    made from its weights) or `<model>@<variant>` for the variants made from a released checkpoint, whose
    tokenizer, chat template, stop tokens and context may differ from the base's."""
    first = model_variant.split("+")[0]
    return f"{model}{PROMPT_SOURCE_SEPARATOR}{first}" if checkpoint(config, model, first) else model


def split_prompt_source(key: str) -> tuple[str, str | None]:
    """`<model>` or `<model>@<variant>` -> (model, variant or None)."""
    model, _, variant = key.partition(PROMPT_SOURCE_SEPARATOR)
    return model, variant or None


def calibration_dataset(config: dict, technique: str) -> str:
    """The dataset a technique calibrates on: its `calibration_dataset`, else the first of `datasets` by
    name (not by position, which re-saving a config may change)."""
    return technique_options(config, technique).get("calibration_dataset") or min(config["datasets"])


def calibration(config: dict, technique: str) -> dict:
    """What `lcopt.data.held_out_calibration` needs: the calibration dataset's entry, and every dataset of
    the run that draws from the same source (with its sample count), whose rows must not calibrate."""
    name = calibration_dataset(config, technique)
    spec = {**config["datasets"], **config.get("calibration_datasets", {})}[name]
    scored = {d: dataset_spec(config, d) for d, s in config["datasets"].items() if _source(s) == _source(spec)}
    return canonical(
        {
            "name": name,
            "spec": spec,
            "scored": scored,
            "longbench": config["longbench"] if "longbench" in spec else {},
            "key": f"{options_key(technique)}.calibration_dataset",
        }
    )


def model_technique(config: dict, model: str, variant: str) -> dict:
    """The params of the job that makes `variant` of `model` with its last technique: that technique's
    options (without the parts that point elsewhere in the config), the model's own released checkpoint
    if one stands for the variant, the held-out text when the technique calibrates, and whether the
    checkpoint may run its own code. A checkpoint of a pretrained model takes no options: it is the
    technique already applied."""
    technique = variant.split("+")[-1]
    options = {k: v for k, v in technique_options(config, technique).items() if k not in REFERENCE_OPTIONS}
    released = checkpoint(config, model, variant)
    random = config["models"][model]["init"] == "random"  # a system run: no weights, nothing calibrates
    if released and not random:
        options = {}
    calibrates = bool(options.get("calibration_samples")) and not released and not random
    return canonical(
        {
            "technique": technique,
            "options": options,
            "checkpoint": released,
            "trust_remote_code": bool(released) and trusted(config, released),
            "calibration": calibration(config, technique) if calibrates else {},
        }
    )
