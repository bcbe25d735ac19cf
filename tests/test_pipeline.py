"""Inference, scoring and tables on the shipped demo model, outside snakemake."""

import json

import pytest
import torch

from lcopt import inference, synthetic
from lcopt.io import read_jsonl, write_jsonl_atomic
from lcopt.models import DEMO_MODEL, ModelError, load_variant, resolve_source, write_variant
from lcopt.prompts import write_prompts
from lcopt.scoring import score_file


@pytest.fixture(scope="module")
def demo_job(tmp_path_factory):
    """Rows, prompts and a baseline variant of the demo model for 4 passkey samples at 1K words."""
    d = tmp_path_factory.mktemp("job")
    write_jsonl_atomic(d / "rows.jsonl", synthetic.generate("passkey", 1024, 4, seed=7))
    write_prompts(DEMO_MODEL, "passkey", d / "rows.jsonl", 4000, d / "prompts.jsonl")
    write_variant("demo", "baseline", DEMO_MODEL, d / "variant.json")
    inference.run(d / "variant.json", d / "prompts.jsonl", d / "preds.jsonl", device="cpu")
    return d


def test_demo_model_solves_passkey_at_1k(demo_job):
    preds = read_jsonl(demo_job / "preds.jsonl")
    rows = read_jsonl(demo_job / "rows.jsonl")
    assert [p["_id"] for p in preds] == [r["_id"] for r in rows]
    assert sum(p["prediction"].strip() == r["answers"][0] for p, r in zip(preds, rows, strict=True)) >= 3


def test_kv_cache_bytes_are_the_real_tensor_bytes(demo_job):
    model, _, _ = load_variant(demo_job / "variant.json", "cpu")
    cfg = model.config
    for p in read_jsonl(demo_job / "preds.jsonl"):
        # every prompt token and every generated token but the last has keys and values cached
        tokens = p["n_input_tokens"] + p["n_output_tokens"] - 1
        expected = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * tokens * 4
        assert p["kv_cache_bytes"] == expected


def test_resume_keeps_finished_samples_and_matches_an_uninterrupted_run(demo_job, tmp_path):
    full = read_jsonl(demo_job / "preds.jsonl")
    out = tmp_path / "preds.jsonl"
    # a job killed after two samples left this behind:
    done = [dict(full[0], ttft_s=-1.0), dict(full[1], ttft_s=-2.0)]
    (tmp_path / "preds.jsonl.partial").write_text("".join(json.dumps(r) + "\n" for r in done))
    settings = ("none", "cpu", "auto", None, {}, "auto")  # kv_method, device, dtype, max_new_tokens, kv_options, engine
    key = inference.job_key(demo_job / "variant.json", demo_job / "prompts.jsonl", *settings)
    (tmp_path / "preds.jsonl.partial.key").write_text(key)
    inference.run(demo_job / "variant.json", demo_job / "prompts.jsonl", out, device="cpu")
    resumed = read_jsonl(out)
    assert [r["ttft_s"] for r in resumed[:2]] == [-1.0, -2.0]  # not recomputed
    assert [r["prediction"] for r in resumed] == [r["prediction"] for r in full]
    assert not (tmp_path / "preds.jsonl.partial").exists() and not (tmp_path / "preds.jsonl.partial.key").exists()


def test_a_partial_line_that_is_not_a_finished_sample_is_dropped_with_a_warning(demo_job, tmp_path, caplog):
    """A line of another shape (an edit by hand, another tool) would otherwise fail every rerun (KeyError)."""
    full = read_jsonl(demo_job / "preds.jsonl")
    out = tmp_path / "preds.jsonl"
    partial = tmp_path / "preds.jsonl.partial"
    lines = [json.dumps(dict(full[0], ttft_s=-1.0)), json.dumps({"foo": 1}), "[1, 2]", json.dumps(full[1])]
    partial.write_text("".join(line + "\n" for line in lines))
    settings = ("none", "cpu", "auto", None, {}, "auto")
    (tmp_path / "preds.jsonl.partial.key").write_text(
        inference.job_key(demo_job / "variant.json", demo_job / "prompts.jsonl", *settings)
    )
    assert [r["_id"] for r in inference._finished(partial)] == [full[0]["_id"], full[1]["_id"]]
    assert "dropping 2 line(s) that are not finished samples" in caplog.text and "kept 2 rows" in caplog.text
    assert partial.read_text() == lines[0] + "\n" + lines[3] + "\n"  # the file keeps only the finished samples
    inference.run(demo_job / "variant.json", demo_job / "prompts.jsonl", out, device="cpu")
    resumed = read_jsonl(out)
    assert resumed[0]["ttft_s"] == -1.0 and [r["prediction"] for r in resumed] == [r["prediction"] for r in full]


def test_a_partial_file_of_other_inputs_is_not_resumed(demo_job, tmp_path):
    """A job killed before the prompts changed (e.g. a new max_input_tokens) left rows for other prompts."""
    full = read_jsonl(demo_job / "preds.jsonl")
    out = tmp_path / "preds.jsonl"
    (tmp_path / "preds.jsonl.partial").write_text(json.dumps(dict(full[0], ttft_s=-1.0)) + "\n")
    (tmp_path / "preds.jsonl.partial.key").write_text("the key of a job with other prompts")
    inference.run(demo_job / "variant.json", demo_job / "prompts.jsonl", out, device="cpu")
    assert read_jsonl(out)[0]["ttft_s"] > 0  # recomputed


def fail_on_sample(demo_job, monkeypatch, index: int, fail) -> str:
    """Make inference call `fail()` on the `index`-th prompt (the others run for real); returns its _id."""
    real = inference.generate_one
    victim = read_jsonl(demo_job / "prompts.jsonl")[index]["_id"]

    def generate_one(model, tokenizer, prompt, *args):
        if prompt["_id"] == victim:
            fail()
        return real(model, tokenizer, prompt, *args)

    monkeypatch.setattr(inference, "generate_one", generate_one)
    return victim


def raise_(exc: BaseException):
    def fail():
        raise exc

    return fail


def test_out_of_memory_is_recorded_and_the_job_goes_on(demo_job, tmp_path, monkeypatch):
    fail_on_sample(
        demo_job, monkeypatch, 1, raise_(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    )
    out = tmp_path / "preds.jsonl"
    inference.run(demo_job / "variant.json", demo_job / "prompts.jsonl", out, device="cpu")
    preds = read_jsonl(out)
    assert [p["status"] for p in preds] == ["ok", "oom", "ok", "ok"]
    assert "out of memory" in preds[1]["error"]
    summary = score_file(
        "passkey",
        out,
        demo_job / "rows.jsonl",
        demo_job / "prompts.jsonl",
        tmp_path / "s.jsonl",
        tmp_path / "s.json",
        {},
        resamples=200,
    )
    assert (summary["n"], summary["n_ok"], summary["n_failed"], summary["failures"]) == (4, 3, 1, ["oom"])
    assert summary["quality"]["score"]["n"] == 3
    scored = read_jsonl(tmp_path / "s.jsonl")
    assert scored[1]["status"] == "oom" and "score" not in scored[1]


def test_a_real_cpu_allocation_failure_is_recorded_as_oom(demo_job, tmp_path, monkeypatch):
    """The CPU allocator's own error (a RuntimeError, not torch.OutOfMemoryError) counts as out of memory."""
    one_exbibyte = 1 << 60  # fails in the allocator
    fail_on_sample(demo_job, monkeypatch, 2, lambda: torch.empty(one_exbibyte, dtype=torch.uint8))
    out = tmp_path / "preds.jsonl"
    inference.run(demo_job / "variant.json", demo_job / "prompts.jsonl", out, device="cpu")
    preds = read_jsonl(out)
    assert [p["status"] for p in preds] == ["ok", "ok", "oom", "ok"]
    assert "can't allocate memory" in preds[2]["error"] and preds[2]["prediction"] == ""


def test_an_error_that_is_not_per_sample_stops_the_job(demo_job, tmp_path, monkeypatch):
    """Any other error fails the job, naming the sample, and keeps the finished samples for a rerun."""
    victim = fail_on_sample(demo_job, monkeypatch, 1, raise_(RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED")))
    out = tmp_path / "preds.jsonl"
    with pytest.raises(inference.InferenceError) as err:
        inference.run(demo_job / "variant.json", demo_job / "prompts.jsonl", out, device="cpu")
    message = str(err.value)
    assert message.startswith(f"{out}: sample {victim!r} failed with RuntimeError: CUBLAS_STATUS_EXECUTION_FAILED")
    assert "Only running out of memory is recorded per sample" in message
    assert not out.exists()
    assert [r["status"] for r in read_jsonl(f"{out}.partial")] == ["ok"]
    assert inference.is_out_of_memory(torch.OutOfMemoryError("x")) and not inference.is_out_of_memory(err.value)


def test_model_sources_fail_clearly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"no config\.json; not a Hugging Face model directory"):
        resolve_source(str(empty))
    (empty / "config.json").write_text("not json")
    with pytest.raises(ModelError, match=r"config\.json: not a JSON object"):
        resolve_source(str(empty))
    (empty / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"config\.json: no 'model_type'; not a transformers model config"):
        resolve_source(str(empty))
    (empty / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelError, match=r"config\.json but no weights \(\*\.safetensors"):
        resolve_source(str(empty))
    (empty / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"no tokenizer \(tokenizer\.json"):
        resolve_source(str(empty))
    (empty / "tokenizer.json").write_text("{}")
    assert resolve_source(str(empty)) == str(empty.resolve())
    with pytest.raises(ModelError, match="no such directory"):
        resolve_source("./missing/model")
    assert resolve_source("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B-Instruct"
    assert resolve_source(DEMO_MODEL).endswith("demo-model")


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(demo_job, tmp_path):
    """A real kill: the job dies between (or inside) sample writes; the rerun redoes at most one sample."""
    import os
    import signal
    import subprocess
    import sys
    import time

    write_jsonl_atomic(tmp_path / "rows.jsonl", synthetic.generate("passkey", 1024, 10, seed=5))
    write_prompts(DEMO_MODEL, "passkey", tmp_path / "rows.jsonl", 4000, tmp_path / "prompts.jsonl")
    out = tmp_path / "preds.jsonl"
    partial = tmp_path / "preds.jsonl.partial"
    code = (
        "import sys; from pathlib import Path; from lcopt.inference import run; "
        "run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), device='cpu')"
    )
    args = [sys.executable, "-c", code, str(demo_job / "variant.json"), str(tmp_path / "prompts.jsonl"), str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not partial.exists() or partial.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed job must not leave a file that looks complete"
    finished_before = partial.read_text().count("\n")
    assert 3 <= finished_before < 10
    with open(partial, "a") as f:  # as if the kill had landed in the middle of a write
        f.write('{"_id": "passkey-1024-5-9", "status": "o')
    inference.run(demo_job / "variant.json", tmp_path / "prompts.jsonl", out, device="cpu")
    resumed = read_jsonl(out)
    inference.run(demo_job / "variant.json", tmp_path / "prompts.jsonl", tmp_path / "clean.jsonl", device="cpu")
    clean = read_jsonl(tmp_path / "clean.jsonl")
    assert [r["_id"] for r in resumed] == [r["_id"] for r in clean]
    assert [r["prediction"] for r in resumed] == [r["prediction"] for r in clean]
    assert [r["n_output_tokens"] for r in resumed] == [r["n_output_tokens"] for r in clean]


def test_a_row_without_answers_is_a_clear_error(tmp_path):
    from lcopt.scoring import score_rows

    rows = [{"_id": "a", "input": "q", "context": "c", "answers": []}]
    preds = [{"_id": "a", "status": "ok", "prediction": "x"}]
    prompts = [{"_id": "a", "prompt": "c q", "content": "c\n\nq"}]
    with pytest.raises(ValueError, match=r"sample 'a' of task passkey: sample has no reference answers"):
        score_rows("passkey", preds, rows, prompts)
    with pytest.raises(KeyError, match=r"prediction 'a' has no row in the prompts file"):
        score_rows("passkey", preds, [rows[0] | {"answers": ["x"]}], [])


def test_support_metrics_read_the_content_the_model_received_not_the_row(tmp_path):
    """A word of the original context that compression or truncation removed is not support; the lookup
    tasks' stricter metric sees a value of another key."""
    from lcopt.scoring import score_rows

    row = next(synthetic.generate("kv_retrieval", 200, 1, seed=0))
    other_value = next(v for v in row["key_values"].values() if v != row["answers"][0])
    preds = [{"_id": row["_id"], "status": "ok", "prediction": other_value}]
    full = [{"_id": row["_id"], "content": row["context"] + "\n\n" + row["input"]}]
    cut = [{"_id": row["_id"], "content": row["input"]}]  # the facts were compressed away
    (scored,) = score_rows("kv_retrieval", preds, [row], full)
    assert scored["unsupported_token_rate"] == 0.0 and scored["other_key_value_rate"] == 1.0
    assert scored["score"] == 0.0
    (scored,) = score_rows("kv_retrieval", preds, [row], cut)
    assert scored["unsupported_token_rate"] == 1.0 and scored["other_key_value_rate"] == 1.0
    right = [{"_id": row["_id"], "status": "ok", "prediction": row["answers"][0]}]
    (scored,) = score_rows("kv_retrieval", right, [row], full)
    assert (scored["score"], scored["unsupported_token_rate"], scored["other_key_value_rate"]) == (1.0, 0.0, 0.0)
    assert "unsupported_entity_rate" not in scored  # a LongBench task's stricter metric
    with pytest.raises(ValueError, match="row has no 'key_values'"):
        score_rows("kv_retrieval", right, [{k: v for k, v in row.items() if k != "key_values"}], full)


def test_predictions_of_random_weights_are_not_scored(tmp_path):
    """A system run (`init: random`) has no quality: no score, `quality_measured` false, system figures kept."""
    from lcopt.scoring import score_rows, summarize

    rows = [{"_id": "a", "input": "q", "context": "the code is 12", "answers": ["12"]}]
    prompts = [{"_id": "a", "prompt": "the code is 12 q", "content": "the code is 12\n\nq"}]
    preds = [{"_id": "a", "status": "ok", "prediction": "12", "init": "random", "e2e_s": 2.0, "ttft_s": 1.0}]
    scored = score_rows("passkey", preds, rows, prompts)
    assert "score" not in scored[0] and scored[0]["not_measured"]
    summary = summarize(scored, preds, seed=0, resamples=100)
    assert summary["quality_measured"] is False and summary["longbench_score"] is None
    assert summary["quality"]["score"]["mean"] is None
    assert summary["system"]["e2e_s"]["mean"] == 2.0 and summary["system"]["e2e_with_compression_s"]["mean"] == 2.0
    measured = score_rows("passkey", [dict(preds[0], init="pretrained")], rows, prompts)
    assert measured[0]["score"] == 1.0
