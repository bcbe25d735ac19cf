import polars as pl
import pytest

from lcopt.aggregate import common_ids, compounding, markdown, paired
from lcopt.stats import cell_seed


def _records(scores: list[float | None]) -> dict[str, dict]:
    """Per-sample records of one stack; None is a sample that ran out of memory."""
    return {
        f"s{i:02d}": {"_id": f"s{i:02d}", "status": "oom"}
        if v is None
        else {"_id": f"s{i:02d}", "status": "ok", **dict.fromkeys(PAIRED, v)}
        for i, v in enumerate(scores)
    }


PAIRED = ("score", "f1", "precision", "recall", "exact_match", "rouge_l", "rouge_l_google")

# 20 samples: the baseline solves all, each part 10 (different halves), the stack 2.
HALF_A = [1.0] * 10 + [0.0] * 10
HALF_B = [1.0, 0.0] * 10
STACK = [1.0, 0.0] * 2 + [0.0] * 16


def _samples(**stacks: list) -> dict:
    return {("m", "d"): {name.replace("__", "+"): _records(v) for name, v in stacks.items()}}


def test_compounding_uses_retention_not_the_sum_of_drops():
    """Drops 0.5 and 0.5 "predict" a drop of 1.0 and the measured 0.9 reads "less than additive"; on the
    retention scale the parts predict 1 × 0.5 × 0.5 = 0.25 and the stack's 0.1 compounds (-0.15)."""
    table = compounding(
        _samples(baseline=[1.0] * 20, lingua2=HALF_A, kivi2=HALF_B, lingua2__kivi2=STACK, kivi4=[1.0] * 20)
    )
    assert table.height == 1
    row = table.row(0, named=True)
    assert row["stack"] == "lingua2+kivi2"
    assert (row["n_common"], row["n_dropped"]) == (20, 0)
    assert row["baseline"] == 1.0 and row["score"] == pytest.approx(0.1) and row["drop"] == pytest.approx(0.9)
    assert row["part_scores"] == "lingua2=0.5000;kivi2=0.5000"
    assert row["retention_product"] == pytest.approx(0.25) and row["expected"] == pytest.approx(0.25)
    assert row["interaction"] == pytest.approx(-0.15)
    assert row["interaction_ci_low"] < -0.15 < row["interaction_ci_high"]
    assert row["seed"] == cell_seed(0, "m", "d", "lingua2+kivi2", "score", "interaction")


def test_compounding_marks_only_interactions_distinguishable_from_zero():
    n = 200
    base = [1.0] * n
    a = [float(i % 2 == 0) for i in range(n)]
    b = [float(i >= n // 4) for i in range(n)]  # independent of a: keeps 3/4
    independent = [x * y for x, y in zip(a, b, strict=True)]  # exactly 1/2 * 3/4
    overlapping = a  # fails the same samples as a: 0.5 measured vs 0.375 expected
    table = compounding(_samples(baseline=base, lingua2=a, kivi2=b, lingua2__kivi2=independent))
    row = table.row(0, named=True)
    assert row["interaction"] == pytest.approx(0.0) and row["distinguishable"] is False
    table = compounding(_samples(baseline=base, lingua2=a, kivi2=b, lingua2__kivi2=overlapping))
    row = table.row(0, named=True)
    assert row["interaction"] == pytest.approx(0.125) and row["distinguishable"] is True
    assert 0 < row["interaction_ci_low"] < 0.125 < row["interaction_ci_high"]


def test_compounding_needs_every_part_and_a_baseline_with_something_to_retain():
    assert compounding(_samples(baseline=[0.8] * 4, lingua2__kivi2=[0.5] * 4, lingua2=[0.7] * 4)).is_empty()
    assert compounding(_samples(lingua2__kivi2=[0.5] * 4, lingua2=[0.7] * 4, kivi2=[0.5] * 4)).is_empty()
    row = compounding(_samples(baseline=[0.0] * 4, lingua2=[0.0] * 4, kivi2=[0.5] * 4, lingua2__kivi2=[0.0] * 4)).row(
        0, named=True
    )
    assert row["score"] == 0.0 and row["expected"] is None and row["interaction"] is None
    assert row["distinguishable"] is None


def test_stacks_are_compared_on_the_samples_every_stack_finished():
    """kivi2 ran out of memory on the two hardest samples (the last ones, where the baseline fails too):
    averaged over what it finished it looks better than the baseline, on the common samples it is not."""
    base = [1.0] * 8 + [0.0, 0.0]
    kivi2 = [1.0] * 7 + [0.0] + [None, None]
    samples = _samples(baseline=base, kivi2=kivi2, kivi4=[1.0] * 8 + [0.0, 0.0])
    ids, n_ids = common_ids(samples[("m", "d")])
    assert n_ids == 10 and ids == [f"s{i:02d}" for i in range(8)]
    table = paired(samples).filter(pl.col("metric") == "score")
    kivi = table.filter(pl.col("stack") == "kivi2").row(0, named=True)
    assert (kivi["n_ids"], kivi["n_ok"], kivi["n_common"], kivi["n_dropped"]) == (10, 8, 8, 2)
    assert kivi["value_all"] == pytest.approx(7 / 8)  # over everything it finished: above the baseline's 0.8
    assert kivi["value"] == pytest.approx(7 / 8) and kivi["baseline"] == pytest.approx(1.0)
    assert kivi["diff"] == pytest.approx(-1 / 8)
    assert kivi["diff_ci_low"] <= -1 / 8 <= kivi["diff_ci_high"] <= 0
    base_row = table.filter(pl.col("stack") == "baseline").row(0, named=True)
    assert base_row["value_all"] == pytest.approx(0.8) and base_row["value"] == 1.0
    assert base_row["diff"] is None and base_row["n_dropped"] == 2
    same = table.filter(pl.col("stack") == "kivi4").row(0, named=True)
    assert (same["diff"], same["diff_ci_low"], same["diff_ci_high"], same["distinguishable"]) == (0, 0, 0, False)
    assert set(paired(samples)["metric"]) == set(PAIRED)


def test_each_cell_has_its_own_seed_and_keeps_its_ci_when_cells_are_added():
    rng_scores = [float((i * 7) % 5 > 1) for i in range(30)]
    other = [float((i * 3) % 4 > 0) for i in range(30)]
    small = paired(_samples(baseline=[1.0] * 30, kivi2=rng_scores), seed=5)
    large = paired(_samples(baseline=[1.0] * 30, kivi2=rng_scores, kivi4=other, prune=other), seed=5)
    key = (pl.col("stack") == "kivi2") & (pl.col("metric") == "score")
    a, b = small.filter(key).row(0, named=True), large.filter(key).row(0, named=True)
    assert (a["diff_ci_low"], a["diff_ci_high"], a["seed"]) == (b["diff_ci_low"], b["diff_ci_high"], b["seed"])
    assert a["seed"] == cell_seed(5, "m", "d", "kivi2", "score", "diff")
    seeds = large.filter(pl.col("seed").is_not_null())["seed"]
    assert seeds.n_unique() == seeds.len()
    moved = paired(_samples(baseline=[1.0] * 30, kivi2=rng_scores), seed=6).filter(key).row(0, named=True)
    assert moved["seed"] != a["seed"]


def _long(scores: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"model": "m", "dataset": "d", "stack": k, "kind": "quality", "metric": "score", "value": v}
            for k, v in scores.items()
        ]
    ).with_columns(
        pl.lit("qa_f1").alias("longbench_metric"),
        pl.lit(0.0).alias("ci_low"),
        pl.lit(1.0).alias("ci_high"),
        pl.lit(20).alias("n"),
        pl.lit(0).alias("n_failed"),
    )


def test_markdown_shows_paired_differences_and_the_compounding_table():
    samples = _samples(baseline=[1.0] * 20, lingua2=HALF_A, kivi2=HALF_B, lingua2__kivi2=STACK)
    comp, pairs = compounding(samples), paired(samples)
    text = markdown(_long({"baseline": 1.0, "lingua2": 0.5, "kivi2": 0.5, "lingua2+kivi2": 0.1}), pairs, comp)
    assert "## Compounding" in text
    row = comp.row(0, named=True)
    ci = f"{row['interaction_ci_low'] * 100:.1f} to {row['interaction_ci_high'] * 100:.1f}"
    marked = "yes" if row["distinguishable"] else "no"
    cells = f"| 20 | 100.0 | lingua2 50.0, kivi2 50.0 | 25.0 | 10.0 | -15.0 | {ci} | {marked} |"
    assert f"| m | d | lingua2+kivi2 {cells}" in text
    kivi = pairs.filter((pl.col("stack") == "kivi2") & (pl.col("metric") == "score")).row(0, named=True)
    ci = f"{kivi['diff_ci_low'] * 100:.1f} to {kivi['diff_ci_high'] * 100:.1f}"
    assert f"| m | kivi2 | d | qa_f1 | 50.0 | -50.0 | {ci} | yes | 50.0 | 0.0–100.0 | 20 | 0 | 0 |" in text


def test_failed_and_empty_predictions_reach_the_tables(tmp_path):
    """An out-of-memory sample is counted as failed (with its kind), an empty prediction as empty and
    scored 0, a truncated prompt as truncated; all show in the long table and in summary.md, and a plain
    prompt is noted."""
    from lcopt import synthetic
    from lcopt.aggregate import write_tables
    from lcopt.io import write_jsonl_atomic
    from lcopt.scoring import score_file

    rows = list(synthetic.generate("passkey", 64, 3, seed=1))
    write_jsonl_atomic(tmp_path / "rows.jsonl", rows)
    prompts = [{"_id": r["_id"], "prompt": r["context"], "content": r["context"]} for r in rows]
    write_jsonl_atomic(tmp_path / "prompts.jsonl", prompts)
    preds = [
        {"_id": rows[0]["_id"], "status": "ok", "prediction": rows[0]["answers"][0], "truncated": True},
        {"_id": rows[1]["_id"], "status": "ok", "prediction": "“…”", "chat_template": False},
        {"_id": rows[2]["_id"], "status": "oom", "prediction": "", "error": "CUDA out of memory"},
    ]
    write_jsonl_atomic(tmp_path / "preds.jsonl", preds)
    labels = {"model": "m", "stack": "baseline", "dataset": "pk"}
    summary = score_file(
        "passkey",
        tmp_path / "preds.jsonl",
        tmp_path / "rows.jsonl",
        tmp_path / "prompts.jsonl",
        tmp_path / "pk.samples.jsonl",
        tmp_path / "pk.summary.json",
        labels,
    )
    assert (summary["n_ok"], summary["n_failed"], summary["n_empty_predictions"], summary["n_truncated"]) == (
        2,
        1,
        1,
        1,
    )
    assert summary["quality"]["score"]["mean"] == 0.5  # the empty prediction scores 0, the OOM is left out
    assert summary["quality"]["unsupported_token_rate"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 1} | {
        "seed": cell_seed(0, "m", "baseline", "pk", "unsupported_token_rate")
    }
    long = write_tables([tmp_path / "pk.summary.json"], tmp_path / "tables")
    score = long.filter(pl.col("metric") == "score").row(0, named=True)
    assert (score["n_failed"], score["failures"], score["n_empty_predictions"], score["n_truncated"]) == (
        1,
        "oom",
        1,
        1,
    )
    text = (tmp_path / "tables" / "summary.md").read_text()
    assert "| m | baseline | pk | qa_f1 | 50.0 | — | — | — | 50.0 |" in text and "| 3 | 1 (oom) | 1 | 1 | 1 |" in text
    assert "Prompts of m are the plain task template" in text
    pairs = pl.read_csv(tmp_path / "tables" / "paired.csv")
    assert pairs.filter(pl.col("metric") == "score").row(0, named=True)["n_dropped"] == 1


def test_random_weight_cells_reach_the_system_tables_without_paired_scores(tmp_path):
    """`init: random` predictions are scored as "not measured" (no metrics per sample); the tables
    still build, with their system figures and no paired or compounding rows (the H200 workflow run
    failed here with KeyError 'score' before)."""
    from lcopt import synthetic
    from lcopt.aggregate import write_tables
    from lcopt.io import write_jsonl_atomic
    from lcopt.scoring import score_file

    rows = list(synthetic.generate("passkey", 64, 2, seed=1))
    write_jsonl_atomic(tmp_path / "rows.jsonl", rows)
    write_jsonl_atomic(tmp_path / "prompts.jsonl", [{"_id": r["_id"], "prompt": r["context"]} for r in rows])
    summaries = []
    for stack in ("baseline", "kivi4"):
        preds = [
            {"_id": r["_id"], "status": "ok", "prediction": "noise", "init": "random", "tpot_s": 0.004} for r in rows
        ]
        write_jsonl_atomic(tmp_path / f"{stack}.jsonl", preds)
        labels = {"model": "m", "stack": stack, "dataset": "pk"}
        summary = tmp_path / f"{stack}.summary.json"
        score_file("passkey", tmp_path / f"{stack}.jsonl", tmp_path / "rows.jsonl", tmp_path / "prompts.jsonl",
                   tmp_path / f"{stack}.samples.jsonl", summary, labels)  # fmt: skip
        summaries.append(summary)
    long = write_tables(summaries, tmp_path / "tables")
    assert set(long.filter(pl.col("kind") == "system")["stack"]) == {"baseline", "kivi4"}
    assert not long["quality_measured"].any()
    assert pl.read_csv(tmp_path / "tables" / "paired.csv").is_empty()
    assert pl.read_csv(tmp_path / "tables" / "compounding.csv").is_empty()
    text = (tmp_path / "tables" / "summary.md").read_text()
    assert "| m | kivi4 | pk | qa_f1 | — | — | — | — | not measured | — | 2 |" in text and "nan" not in text
