"""What reruns, on a copy of the repository (its code is edited here, never the checkout's): a finished
run reruns nothing when its config is re-saved with its keys in another order; editing a scoring
function reruns scoring and not inference; editing a technique reruns its variants and their
inference only, and editing KIVI's files (its kernels included) its own inference jobs only; editing
one model's released checkpoint reruns that model's variant only. The run itself records the code's
commit in every prediction and score, and prompts a released checkpoint (the real Minitron-4B-Width-Base
tokenizer and generation config, a tiny body) as itself."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import job_counts, shared_assets_dir, tiny_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MINITRON_4B = "nvidia--Llama-3.1-Minitron-4B-Width-Base"


def config(checkpoint: Path) -> dict:
    return {
        "samples": 2,
        "bootstrap_resamples": 100,
        "models": {
            "demo-a": {"path": "lcopt-demo", "max_input_tokens": 600},  # pruned natively
            "demo-b": {"path": "lcopt-demo", "max_input_tokens": 600},  # its prune variant: a released checkpoint
        },
        "datasets": {"passkey-200": {"synthetic": "passkey", "words": 200}},
        "stacks": ["baseline", "prune", "kivi4"],
        "prune": {
            "hidden": 0.75,
            "intermediate": 0.5,
            "calibration_dataset": "passkey-200",
            "calibration_samples": 2,
            "calibration_tokens": 128,
            "checkpoints": {"demo-b": str(checkpoint)},
        },
    }


def reordered(value):
    """The same mapping with its keys in reverse order, at every level."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    return value


class Copy:
    """A committed copy of the repository, and snakemake run with its code (PYTHONPATH=<copy>/src)."""

    def __init__(self, root: Path, work: Path):
        self.root, self.work = root, work
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        for name in files:
            if (REPO / name).is_file():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, root / name)
        git = ["git", "-c", "user.name=lcopt-test", "-c", "user.email=test@lcopt"]
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run([*git, "add", "-A"], cwd=root, check=True)
        subprocess.run([*git, "commit", "-qm", "copy"], cwd=root, check=True)
        self.commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout
        work.mkdir()

    def snakemake(self, cfg: dict, *args: str) -> str:
        path = self.work / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        env = os.environ | {"PYTHONPATH": str(self.root / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        command = [sys.executable, "-m", "snakemake", "-s", str(self.root / "Snakefile"), "--directory", str(self.work)]
        command += ["--configfile", str(path), "--cores", "2", *args]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        return out

    @contextlib.contextmanager
    def edited(self, name: str, old: str, new: str):
        """The copy's file `name` with `old` replaced by `new`, restored afterwards."""
        path = self.root / name
        original = path.read_text()
        assert original.count(old) == 1, (name, old)
        path.write_text(original.replace(old, new))
        try:
            yield
        finally:
            path.write_text(original)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    assets = shared_assets_dir()
    if not (assets / "models" / MINITRON_4B / "tokenizer.json").is_file():
        pytest.skip(f"{MINITRON_4B} not found in {assets}")
    base = tmp_path_factory.mktemp("reruns")
    copy = Copy(base / "repo", base / "work")
    checkpoint = tiny_checkpoint(assets, MINITRON_4B, base / "minitron")
    copy.snakemake(config(checkpoint))
    return copy, checkpoint


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_prediction_and_score_names_the_code_s_commit(run):
    copy, _ = run
    r = copy.work / "results"
    for model in ("demo-a", "demo-b"):
        for stack in ("baseline", "prune"):
            for p in rows(r / f"predictions/{model}/{stack}/passkey-200.jsonl"):
                assert (p["git_commit"], p["git_dirty"]) == (copy.commit.strip(), False)
            summary = json.loads((r / f"scores/{model}/{stack}/passkey-200.summary.json").read_text())
            assert (summary["git_commit"], summary["git_dirty"]) == (copy.commit.strip(), False)


def test_the_released_checkpoint_is_prompted_as_itself(run):
    copy, checkpoint = run
    r = copy.work / "results"
    own = rows(r / "prompts/demo-b@prune/full/passkey-200.jsonl")
    base = rows(r / "prompts/demo-b/full/passkey-200.jsonl")
    assert {p["tokenizer_source"] for p in own} == {str(checkpoint)}
    assert not any(p["chat_template"] for p in own) and all(p["chat_template"] for p in base)
    predictions = rows(r / "predictions/demo-b/prune/passkey-200.jsonl")
    assert all(p["eos_token_ids"] == [128001] and p["status"] == "ok" for p in predictions)  # <|end_of_text|>
    demo_eos = rows(r / "predictions/demo-b/baseline/passkey-200.jsonl")[0]["eos_token_ids"]
    assert demo_eos != [128001]
    # the natively pruned model keeps the model's prompts, and calibrated on rows no job scores
    assert not (r / "prompts/demo-a@prune").exists()
    variant = json.loads((r / "models/demo-a/prune/variant.json").read_text())
    calibration = variant["prune"]["calibration"]
    scored = {row["_id"] for row in rows(r / "data/passkey-200.jsonl")}
    assert len(calibration["ids"]) == 2 and not scored & set(calibration["ids"])
    assert calibration["disjoint_from"] == ["passkey-200"]


def test_a_config_resaved_with_its_keys_in_another_order_reruns_nothing(run):
    copy, checkpoint = run
    assert "Nothing to be done" in copy.snakemake(reordered(config(checkpoint)), "-n")


def test_editing_a_scoring_function_reruns_scoring_not_inference(run):
    copy, checkpoint = run
    body = "    return f1_score(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())\n"
    with copy.edited("src/lcopt/metrics.py", body, "    # edited\n" + body):
        counts = job_counts(copy.snakemake(config(checkpoint), "-n"))
    assert counts == {"score": 6, "aggregate": 1, "sample_table": 1, "plots": 1, "report_files": 1, "all": 1}


def test_editing_a_technique_reruns_its_variants_and_their_inference_only(run):
    copy, checkpoint = run
    with copy.edited(
        "src/lcopt/techniques/prune.py", "class Prune(ModelTechnique):", "class Prune(ModelTechnique):  #"
    ):
        counts = job_counts(copy.snakemake(config(checkpoint), "-n"))
    assert counts == {
        "model_technique": 2,
        "inference": 2,
        "score": 2,
        "aggregate": 1,
        "sample_table": 1,
        "plots": 1,
        "report_files": 1,
        "all": 1,
    }


@pytest.mark.parametrize("name", ["src/lcopt/techniques/kivi/reference.py", "src/lcopt/techniques/kivi/kernels.py"])
def test_editing_kivi_reruns_the_kivi_jobs_only(run, name):
    """The fast engine's shared cache module no longer imports KIVI, so the baseline's and prune's
    inference do not hash KIVI's code (a comment in it used to rerun every inference job)."""
    copy, checkpoint = run
    first = (copy.root / name).read_text().splitlines()[0]
    with copy.edited(name, first, "# edited\n" + first):
        out = copy.snakemake(config(checkpoint), "-n")
    assert job_counts(out) == {
        "inference": 2,
        "score": 2,
        "aggregate": 1,
        "sample_table": 1,
        "plots": 1,
        "report_files": 1,
        "all": 1,
    }
    inference = [block for block in out.split("rule ")[1:] if block.startswith("inference:")]
    assert len(inference) == 2 and all("stack=kivi4" in block for block in inference), inference


def test_editing_one_model_s_checkpoint_reruns_that_model_s_variant_only(run, tmp_path):
    copy, checkpoint = run
    other = shutil.copytree(checkpoint, tmp_path / "minitron-copy")
    cfg = config(checkpoint)
    cfg["prune"]["checkpoints"]["demo-b"] = str(other)
    out = copy.snakemake(cfg, "-n")
    # its variant, and the prompts built with its tokenizer, and what reads them
    assert job_counts(out) == {
        "model_technique": 1,
        "prompts": 1,
        "inference": 1,
        "score": 1,
        "aggregate": 1,
        "sample_table": 1,
        "plots": 1,
        "report_files": 1,
        "all": 1,
    }
    assert "wildcards: model=demo-b, variant=prune" in out and "wildcards: model=demo-a, variant=prune" not in out
