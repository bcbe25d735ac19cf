"""Bad inputs through snakemake, where a user meets them: a config or a local path that is wrong stops
the run before any job with the file, the key and what is wrong; a corrupt dataset file fails its job
with the file and line in snakemake's own output; a tokenizer without a chat template falls back to the
plain prompt, recorded; a killed run resumes. (The library-level checks are in test_config_fuzz.py,
test_data.py, test_io.py, test_pipeline.py and test_aggregate.py.)"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake

from lcopt.models import DEMO_CHECKPOINT

DEMO = {"demo": {"path": "lcopt-demo", "max_input_tokens": 600}}
PASSKEY = {"pk": {"synthetic": "passkey", "words": 200}}


def _model_dir(root: Path, drop: tuple[str, ...]) -> Path:
    """A copy of the demo model without some of its files."""
    path = root / "model"
    shutil.copytree(DEMO_CHECKPOINT, path, ignore=shutil.ignore_patterns(*drop))
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "unknown key",
            "key 'modles': unknown key 'modles'; allowed keys: awq, benchmark, bootstrap_resamples, "
            "calibration_datasets, datasets",
        ),
        ("bad value", "key 'datasets.pk.words': 3 is less than the minimum of 16; expected integer (minimum 16)"),
        ("missing LongBench file", "key 'datasets.mn': {tmp}/lb/multi_news.jsonl not found"),
        ("model without weights", "key 'models.demo.path': {tmp}/model: config.json but no weights"),
        ("not a model", "key 'models.demo.path': {tmp}: no config.json; not a Hugging Face model directory"),
    ],
)
def test_a_wrong_config_stops_before_any_job(tmp_path, case, message):
    config = {"samples": 2, "models": DEMO, "datasets": PASSKEY}
    if case == "unknown key":
        config["modles"] = {}
    elif case == "bad value":
        config["datasets"] = {"pk": {"synthetic": "passkey", "words": 3}}
    elif case == "missing LongBench file":
        (tmp_path / "lb").mkdir()
        config |= {"datasets": {"mn": {"longbench": "multi_news"}}, "longbench": {"source": "local"}}
        config["longbench"]["local_dir"] = str(tmp_path / "lb")
    elif case == "model without weights":
        config["models"] = {"demo": {"path": str(_model_dir(tmp_path, ("*.safetensors",))), "max_input_tokens": 600}}
    else:
        config["models"] = {"demo": {"path": str(tmp_path), "max_input_tokens": 600}}
    returncode, out = run_snakemake(tmp_path, config)
    assert returncode != 0
    assert f"{tmp_path / 'config.yaml'}: {message.format(tmp=tmp_path)}" in out, out[-3000:]
    assert not (tmp_path / "results").exists()  # no job ran


def test_a_corrupt_dataset_file_fails_its_job_naming_file_and_line(tmp_path):
    lb = tmp_path / "lb"
    lb.mkdir()
    good = {"_id": "a", "input": "q", "context": "c", "answers": ["x"]}
    (lb / "multi_news.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(good | {"_id": "b"})[:25] + "\n")
    config = {
        "samples": 2,
        "models": DEMO,
        "datasets": {"mn": {"longbench": "multi_news"}},
        "longbench": {"source": "local", "local_dir": str(lb)},
    }
    returncode, out = run_snakemake(tmp_path, config)
    assert returncode != 0
    assert f"lcopt.data.DataError: {lb / 'multi_news.jsonl'}: line 2 is not valid JSON" in out, out[-3000:]
    assert "(full traceback: results/logs/dataset/mn.log)" in out
    assert not (tmp_path / "results/data/mn.jsonl").exists()


def test_a_tokenizer_without_a_chat_template_gets_the_plain_prompt_recorded(tmp_path):
    model = _model_dir(tmp_path, ("chat_template.jinja",))
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    work = tmp_path / "run"
    work.mkdir()
    cfg = {"samples": 2, "models": {"plain": {"path": str(model), "max_input_tokens": 600}}, "datasets": PASSKEY}
    returncode, out = run_snakemake(work, cfg)
    assert returncode == 0, out[-3000:]
    r = work / "results"
    prompts = [json.loads(x) for x in (r / "prompts/plain/full/pk.jsonl").read_text().splitlines()]
    assert all(not p["chat_template"] and p["add_special_tokens"] for p in prompts)
    assert (
        "has no chat template: prompts are the plain task template"
        in (r / "logs/prompts/plain/full/pk.log").read_text()
    )
    preds = [json.loads(x) for x in (r / "predictions/plain/baseline/pk.jsonl").read_text().splitlines()]
    assert [p["chat_template"] for p in preds] == [False, False]
    assert json.loads((r / "scores/plain/baseline/pk.summary.json").read_text())["chat_template"] is False
    assert "Prompts of plain are the plain task template" in (r / "tables/summary.md").read_text()


def test_a_killed_run_resumes_after_unlock(tmp_path):
    """SIGKILL snakemake and its job mid-inference; `--unlock` then `--rerun-incomplete` finishes the run,
    continuing from the samples the killed job had finished."""
    config = {"samples": 8, "models": {"demo": {"path": "lcopt-demo", "max_input_tokens": 1200}}}
    config["datasets"] = {"pk": {"synthetic": "passkey", "words": 800}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    command += ["--configfile", str(tmp_path / "config.yaml"), "--cores", "2"]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    out = tmp_path / "results/predictions/demo/baseline/pk.jsonl"
    partial = Path(f"{out}.partial")
    deadline = time.time() + 300
    while time.time() < deadline and (not partial.exists() or partial.read_text().count("\n") < 2):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    finished = partial.read_text().count("\n")
    assert 2 <= finished < 8
    returncode, text = run_snakemake(tmp_path, config)
    assert returncode != 0 and "--unlock" in text  # the killed run's lock
    assert run_snakemake(tmp_path, config, "--unlock")[0] == 0
    returncode, text = run_snakemake(tmp_path, config, "--rerun-incomplete")
    assert returncode == 0, text[-3000:]
    log = (tmp_path / "results/logs/inference/demo/baseline.log").read_text()
    assert f"resuming {out.relative_to(tmp_path)}: {finished} of 8 samples already done" in log
    assert len(out.read_text().splitlines()) == 8 and not partial.exists()
    assert not list((tmp_path / "results").rglob(".*.tmp"))
