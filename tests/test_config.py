"""Config validation: bad input stops the run with the file, the key and the allowed values."""

import copy
import sys
from pathlib import Path

import pytest
import yaml

from lcopt.config import ConfigError, load, validate

REPO = Path(__file__).resolve().parents[1]
GOOD = {
    "models": {"demo": {"path": "lcopt-demo", "max_input_tokens": 4000}},
    "datasets": {"kv-1k": {"synthetic": "kv_retrieval", "words": 1024}},
}


def bad(**patch):
    cfg = copy.deepcopy(GOOD)
    for dotted, value in patch.items():
        *parents, last = dotted.split("__")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return cfg


@pytest.mark.parametrize("name", ["config.yaml", "smollm2.yaml", "paper.yaml", "longbench-local.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load([REPO / "config" / name])
    assert cfg["models"] and cfg["datasets"]


def test_defaults_are_filled():
    cfg = validate(copy.deepcopy(GOOD))
    assert cfg["stacks"] == ["baseline"]
    assert cfg["device"] == "auto"
    assert cfg["models"]["demo"]["gpus"] == 1
    assert cfg["longbench"]["source"] == "hub"
    assert (cfg["gptq"]["group_size"], cfg["gptq"]["desc_act"]) == (128, False)


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (bad(samplez=3), ["key 'samplez'", "unknown key", "allowed keys:", "samples"]),
        (bad(device="tpu"), ["key 'device'", "allowed: auto, cpu, cuda"]),
        (bad(samples="many"), ["key 'samples'", "expected integer"]),
        (bad(samples=0), ["key 'samples'", "minimum 1"]),
        (bad(samples=4.0), ["key 'samples'", "4.0 is not of type 'integer'", "expected integer"]),
        (bad(gptq={"group_size": 64.0}), ["key 'gptq.group_size'", "64.0 is not of type 'integer'"]),
        (
            bad(datasets__kv_1k={"synthetic": "kv", "words": 10}),
            ["key 'datasets.kv_1k.synthetic'", "allowed:", "kv_retrieval"],
        ),
        (bad(datasets__lb={"longbench": "musique"}), ["key 'datasets.lb.longbench'", "qasper", "multi_news"]),
        (bad(models__demo={"path": "x", "max_input_tokens": 4000, "flash": True}), ["key 'models.demo.flash'"]),
        (bad(models__demo={"path": "x"}), ["key 'models.demo'", "'max_input_tokens' is a required property"]),
        (
            bad(models__demo={"path": "x", "gguf": {"package": "p", "file": "f"}, "max_input_tokens": 4000}),
            ["models.demo", "exactly one of 'path' or 'gguf'"],
        ),
        (bad(datasets__kv_1k={"synthetic": "kv_retrieval"}), ["datasets.kv_1k.words", "required"]),
        (bad(datasets__x={"longbench": "qasper", "synthetic": "passkey", "words": 100}), ["exactly one of"]),
        (bad(stacks=["baseline", "turbo"]), ["key 'stacks.1'", "unknown technique", "allowed: baseline"]),
        (bad(longbench={"source": "local"}, datasets__lb={"longbench": "qasper"}), ["key 'longbench.local_dir'"]),
        (
            bad(longbench={"source": "local", "local_dir": "lb", "local_variants": ["musique"]}),
            ["key 'longbench.local_variants.0'", "allowed:", "multi_news"],
        ),
        (bad(longbench={"local_variants": ["qasper"]}), ["key 'longbench.local_variants'", "source local only"]),
        (bad(kivi={"group_size": 32, "residual_length": 48}), ["key 'kivi.residual_length'", "multiple of"]),
        (bad(kivi={"bits": 3}), ["key 'kivi.bits'", "unknown key", "group_size, residual_length"]),
        (bad(gptq={"calibration_dataset": "nope"}), ["key 'gptq.calibration_dataset'", "allowed: kv-1k"]),
        (
            bad(calibration_datasets={"kv-1k": {"synthetic": "kv_retrieval", "words": 64}}),
            ["key 'calibration_datasets.kv-1k'", "never scored"],
        ),
        (bad(calibration_datasets={"c": {"synthetic": "passkey"}}), ["key 'calibration_datasets.c.words'"]),
        (bad(calibration_datasets={"c": {"longbench": "Bad Name"}}), ["key 'calibration_datasets.c.longbench'"]),
        (
            bad(longbench={"source": "local"}, calibration_datasets={"c": {"longbench": "musique"}}),
            ["key 'longbench.local_dir'"],
        ),
        (bad(trust_remote_code=["nvidia/x"]), ["key 'trust_remote_code.0'", "not a model path or checkpoint"]),
        (bad(prune={"checkpoints": {"llama": "nvidia/x"}}), ["key 'prune.checkpoints.llama'", "allowed: demo"]),
        (bad(gptq={"bits": 3}), ["key 'gptq.bits'", "unknown key", "desc_act, group_size"]),
        (bad(stacks=["gptq4+prune"]), ["key 'stacks.0'", "last model-side technique"]),
        (
            bad(models={"bad/name": {"path": "x", "max_input_tokens": 4000}}),
            ["key 'models'", "'bad/name' does not match"],
        ),
    ],
)
def test_bad_configs_name_key_and_allowed_values(cfg, expected):
    if "lb" in cfg["datasets"] or "x" in cfg["datasets"]:
        cfg["datasets"].pop("kv-1k")
    with pytest.raises(ConfigError) as err:
        validate(cfg, "my.yaml")
    message = str(err.value)
    assert message.startswith("my.yaml: "), message
    for part in expected:
        assert part in message, (part, message)


def test_load_names_the_file_and_reports_yaml_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: cannot read config"):
        load([broken])
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(bad(stackz=["baseline"])))
    with pytest.raises(ConfigError, match=r"typo\.yaml: key 'stackz': unknown key"):
        load([typo])


def test_a_file_that_is_not_a_yaml_config_is_named(tmp_path):
    """Snakemake's own reading of a --configfile names no file (a binary one gives a traceback); lcopt's
    reader (the Snakefile's default config, `python -m lcopt.config`) names it and says what is wrong."""
    import subprocess
    import sys

    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match=r"weights\.yaml: not a config file: not UTF-8 text \(byte 0"):
        load([binary])
    listing = tmp_path / "list.yaml"
    listing.write_text("- seed\n- 3\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: the config must be a mapping of keys, got a list"):
        load([listing])
    broken = tmp_path / "tabs.yaml"
    broken.write_text("models:\n\tdemo: {path: lcopt-demo}\n")
    proc = subprocess.run([sys.executable, "-m", "lcopt.config", str(broken)], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith(f"{broken}: cannot read config: not YAML"), proc.stderr
    assert f'in "{broken}", line 2' in proc.stderr  # where the parser stopped, in that file
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(bad()))
    proc = subprocess.run([sys.executable, "-m", "lcopt.config", str(good)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: 1 models"), proc.stdout + proc.stderr


def test_snakemake_stops_before_any_job(tmp_path):
    import subprocess

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(bad(device="tpu")))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-s",
            str(REPO / "Snakefile"),
            "--configfile",
            str(cfg),
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "key 'device'" in out and "allowed: auto, cpu, cuda" in out, out[-2000:]
    assert "Job stats" not in out


def test_default_configs_run_every_technique_offline():
    """The embedded default runs the study's techniques (lingua2 with lcopt's own classifier, no hub), and
    config/more-techniques.yaml every registered one, each alone and in every compatible pair."""
    from lcopt.stacks import expand_levels
    from lcopt.techniques import registry
    from lcopt.techniques.lingua2 import DEMO_MODEL

    cfg = load([REPO / "config" / "config.yaml"])
    used = {t for stack in cfg["stacks"] for t in stack.split("+")} - {"baseline"}
    assert used == {"prune", "gptq4", "rtn4", "lingua2", "kivi4", "kivi2"} and len(cfg["stacks"]) == 20
    assert cfg["lingua2"]["model"] == DEMO_MODEL
    more = load([REPO / "config" / "config.yaml", REPO / "config" / "more-techniques.yaml"])
    # but prune_native, which is prune where a model has no released checkpoint (every model here)
    assert set(more["techniques"]) == set(registry()) - {"prune_native"}
    assert more["stacks"] == ["baseline", *expand_levels(more["techniques"], [1, 2])] and len(more["stacks"]) == 67


def test_a_dataset_outside_the_run_can_calibrate():
    cfg = bad(calibration_datasets={"mf": {"longbench": "multifieldqa_en"}}, gptq={"calibration_dataset": "mf"})
    assert validate(cfg)["gptq"]["calibration_dataset"] == "mf"


def nemotron_nas_dir(path: Path) -> Path:
    """A model directory whose config.json, like Llama-3_1-Nemotron-51B-Instruct's, names the repository's
    own code (its model_type `nemotron-nas` is not a transformers architecture)."""
    import json
    import shutil

    from lcopt.models import DEMO_CHECKPOINT

    path.mkdir()
    config = {
        "architectures": ["DeciLMForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_decilm.DeciLMConfig",
            "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM",
        },
        "model_type": "nemotron-nas",
    }
    (path / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        shutil.copy(DEMO_CHECKPOINT / name, path / name)
    return path


def test_custom_model_code_stops_the_run_unless_trusted(tmp_path):
    from lcopt.config import check_sources

    nas = str(nemotron_nas_dir(tmp_path / "nemotron-51b"))
    cfg = validate(bad(prune={"checkpoints": {"demo": nas}}))
    with pytest.raises(ConfigError) as err:
        check_sources(cfg, "my.yaml")
    message = str(err.value)
    for part in ["my.yaml: key 'prune.checkpoints.demo'", nas, "auto_map", "add", "to trust_remote_code"]:
        assert part in message, (part, message)
    check_sources(validate(bad(prune={"checkpoints": {"demo": nas}}, trust_remote_code=[nas])))
    # a model of the config, not only a checkpoint
    cfg = validate(bad(models={"nas": {"path": nas, "max_input_tokens": 4000}}))
    with pytest.raises(ConfigError, match=r"key 'models\.nas\.path'.*add .* to trust_remote_code"):
        check_sources(cfg)
    # and the job that would load it says the same, should the config check have been skipped
    from lcopt.models import ModelError, write_variant

    with pytest.raises(ModelError, match="trust_remote_code"):
        write_variant("nas", "baseline", nas, tmp_path / "variant.json")
    write_variant("nas", "baseline", nas, tmp_path / "variant.json", trust_remote_code=True)
    assert json_of(tmp_path / "variant.json")["trust_remote_code"] is True


def json_of(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def test_the_paper_config_trusts_nemotron_51b_s_code_and_nothing_else():
    cfg = load([REPO / "config" / "paper.yaml"])
    assert cfg["trust_remote_code"] == [cfg["prune"]["checkpoints"]["llama-3.1-70b-instruct"]]
    assert cfg["trust_remote_code"] == ["nvidia/Llama-3_1-Nemotron-51B-Instruct"]


def test_config_readme_lists_every_key_with_its_default_and_an_example():
    """config/README.md's table (between its markers) is lcopt.config.reference of the shipped configs;
    `python -m lcopt.config --readme config` rewrites it when the schema or a technique's options change."""
    from lcopt.config import README_MARKERS, reference, schema

    readme = (REPO / "config" / "README.md").read_text()
    table = readme.split(README_MARKERS[0])[1].split(README_MARKERS[1])[0]
    assert table.strip() == reference(REPO / "config").strip()
    keys = {line.split(" | ")[0].strip("| `") for line in table.strip().splitlines()[2:]}
    assert set(schema()["properties"]) <= keys and {"models.<name>.path", "kivi.group_size"} <= keys
    assert "| `samples` | integer, ≥ 1 | `200` | `32` (config.yaml) |" in table
