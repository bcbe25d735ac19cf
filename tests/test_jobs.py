"""What each job is given (`lcopt.jobs`): only what it uses, the same whatever the order of the config's
keys; a released checkpoint's own prompts; the held-out text a variant calibrates on."""

import copy

import yaml

from lcopt import jobs
from lcopt.config import validate


def paper_like() -> dict:
    return validate(
        {
            "samples": 50,
            "models": {
                "llama": {"path": "meta-llama/Llama-3.1-8B-Instruct", "max_input_tokens": 127500},
                "nemo": {"path": "mistralai/Mistral-Nemo-Instruct-2407", "max_input_tokens": 127500},
            },
            "datasets": {"qasper": {"longbench": "qasper"}, "qasper-all": {"longbench": "qasper", "samples": 200}},
            "calibration_datasets": {"multifieldqa_en": {"longbench": "multifieldqa_en"}},
            "longbench": {"source": "hub"},
            "prune": {
                "checkpoints": {
                    "llama": "nvidia/Llama-3.1-Minitron-4B-Width-Base",
                    "nemo": "nvidia/Mistral-NeMo-Minitron-8B-Base",
                },
                "calibration_samples": 8,
            },
            "gptq": {"group_size": 128, "desc_act": False, "calibration_dataset": "qasper"},
            "stacks": ["baseline", "prune", "gptq4", "prune+gptq4", "prune+kivi4"],
        }
    )


def reordered(value):
    """The same mapping with its keys in reverse order, at every level."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    return value


def every_model_technique_job(config: dict) -> dict:
    return {
        (m, v): jobs.model_technique(config, m, v) for m in config["models"] for v in ("prune", "gptq4", "prune+gptq4")
    }


def test_canonical_sorts_keys_at_every_level_and_keeps_list_order():
    value = {"b": {"y": 1, "x": [3, {"q": 1, "p": 2}]}, "a": 0}
    assert repr(jobs.canonical(value)) == "{'a': 0, 'b': {'x': [3, {'p': 2, 'q': 1}], 'y': 1}}"


def test_the_config_file_s_key_order_changes_no_job_s_params():
    """Snakemake compares params by repr: a re-saved config with its keys in another order must give the
    same repr for every job (the issue: 'before: {'group_size': 64, 'desc_act': False, ...}')."""
    config = paper_like()
    other = validate(reordered(yaml.safe_load(yaml.safe_dump(paper_like(), sort_keys=False))))
    assert list(other["gptq"]) != list(config["gptq"])  # really another order before sorting
    jobs.sort_config(config)
    jobs.sort_config(other)
    assert repr(config) == repr(other)
    assert repr(every_model_technique_job(config)) == repr(every_model_technique_job(other))
    assert repr(jobs.dataset_spec(config, "qasper")) == repr(jobs.dataset_spec(other, "qasper"))


def test_editing_one_model_s_checkpoint_changes_only_that_model_s_variant():
    config = paper_like()
    edited = copy.deepcopy(config)
    edited["prune"]["checkpoints"]["nemo"] = "nvidia/Mistral-NeMo-Minitron-8B-Instruct"
    before, after = every_model_technique_job(config), every_model_technique_job(edited)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {("nemo", "prune")}
    assert after["nemo", "prune"]["checkpoint"] == "nvidia/Mistral-NeMo-Minitron-8B-Instruct"


def test_a_checkpoint_variant_gets_no_options_and_no_calibration():
    config = paper_like()
    job = jobs.model_technique(config, "llama", "prune")
    assert job == {
        "calibration": {},
        "checkpoint": "nvidia/Llama-3.1-Minitron-4B-Width-Base",
        "options": {},
        "technique": "prune",
        "trust_remote_code": False,
    }
    # GPTQ of the checkpoint variant is GPTQ proper: its options (none that point elsewhere) and calibration
    job = jobs.model_technique(config, "llama", "prune+gptq4")
    assert job["checkpoint"] is None and "checkpoints" not in job["options"]
    assert "calibration_dataset" not in job["options"] and job["options"]["group_size"] == 128
    assert job["calibration"]["name"] == "qasper" and job["calibration"]["key"] == "gptq.calibration_dataset"


def test_calibration_names_every_scored_dataset_of_its_source():
    config = paper_like()
    calibration = jobs.model_technique(config, "llama", "gptq4")["calibration"]
    # both datasets read qasper's file: neither one's scored rows may calibrate
    assert calibration["scored"] == {
        "qasper": {"longbench": "qasper", "samples": 50},
        "qasper-all": {"longbench": "qasper", "samples": 200},
    }
    assert calibration["longbench"] == {"source": "hub", "local_variants": []}
    config["gptq"]["calibration_dataset"] = "multifieldqa_en"  # outside the run: nothing of it is scored
    calibration = jobs.model_technique(config, "llama", "gptq4")["calibration"]
    assert calibration["spec"] == {"longbench": "multifieldqa_en"} and calibration["scored"] == {}


def test_the_default_calibration_dataset_does_not_depend_on_the_order_of_datasets():
    config = paper_like()
    del config["gptq"]["calibration_dataset"]
    assert jobs.calibration_dataset(config, "gptq4") == "qasper"
    config["datasets"] = dict(reversed(list(config["datasets"].items())))
    assert jobs.calibration_dataset(config, "gptq4") == "qasper"


def test_prompts_come_from_the_checkpoint_for_every_variant_made_from_it():
    config = paper_like()
    assert jobs.prompt_source(config, "llama", "baseline") == "llama"
    assert jobs.prompt_source(config, "llama", "gptq4") == "llama"
    assert jobs.prompt_source(config, "llama", "prune") == "llama@prune"
    assert jobs.prompt_source(config, "llama", "prune+gptq4") == "llama@prune"  # GPTQ of the Minitron model
    assert jobs.split_prompt_source("llama@prune") == ("llama", "prune")
    assert jobs.split_prompt_source("llama") == ("llama", None)
    del config["prune"]["checkpoints"]["nemo"]  # pruned natively: the model's own tokenizer
    assert jobs.prompt_source(config, "nemo", "prune") == "nemo"


def test_random_models_get_options_but_never_calibrate():
    config = paper_like()
    config["models"]["llama"]["init"] = "random"
    job = jobs.model_technique(config, "llama", "gptq4")
    assert job["options"]["group_size"] == 128 and job["calibration"] == {}
    assert jobs.model_technique(config, "llama", "prune")["checkpoint"] == "nvidia/Llama-3.1-Minitron-4B-Width-Base"
