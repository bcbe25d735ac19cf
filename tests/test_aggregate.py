import math

import numpy as np
import polars as pl
import pytest

from lcopt.aggregate import compounding, markdown, paired
from lcopt.stats import bh_qvalues, cell_seed


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


def test_compounding_is_the_log_ratio_of_the_stack_to_independent_parts():
    """Drops 0.5 and 0.5 "predict" a drop of 1.0 and the measured 0.9 reads "less than additive"; on the
    retention scale the parts predict 1 × 0.5 × 0.5 = 0.25 and the stack's 0.1 compounds: log(0.1 / 0.25),
    here on totals guarded by 1/2 (20.5 · 2.5 / 10.5²)."""
    table = compounding(
        _samples(baseline=[1.0] * 20, lingua2=HALF_A, kivi2=HALF_B, lingua2__kivi2=STACK, kivi4=[1.0] * 20)
    )
    assert table.height == 1
    row = table.row(0, named=True)
    assert row["stack"] == "lingua2+kivi2"
    assert (row["n_ids"], row["n_common"], row["n_dropped"]) == (20, 20, 0)
    assert row["baseline"] == 1.0 and row["score"] == pytest.approx(0.1) and row["drop"] == pytest.approx(0.9)
    assert row["part_scores"] == "lingua2=0.5000;kivi2=0.5000"
    assert row["expected"] == pytest.approx(0.25)
    assert row["interaction"] == pytest.approx(math.log(20.5 * 2.5 / 10.5**2))  # -0.77; unguarded log 0.4 = -0.92
    # 20 samples: the interval reaches above 0, not distinguishable
    assert row["interaction_ci_low"] < row["interaction"] < 0 < row["interaction_ci_high"]
    assert row["p_value"] > 0.05 and row["q_value"] == row["p_value"]  # a family of one
    assert row["distinguishable"] is False and row["measurable"] is True and row["reason"] is None
    assert row["seed"] == cell_seed(0, "m", "d", "lingua2+kivi2", "score", "interaction")


def test_compounding_marks_only_interactions_distinguishable_from_zero():
    n = 200
    base = [1.0] * n
    a = [float(i % 2 == 0) for i in range(n)]
    b = [float(i >= n // 4) for i in range(n)]  # independent of a: keeps 3/4
    independent = [x * y for x, y in zip(a, b, strict=True)]  # exactly 1/2 * 3/4
    overlapping = a  # fails the same samples as a: 0.5 measured vs 0.375 expected
    row = compounding(_samples(baseline=base, lingua2=a, kivi2=b, lingua2__kivi2=independent)).row(0, named=True)
    assert abs(row["interaction"]) < 0.01 and row["distinguishable"] is False and row["p_value"] > 0.5
    row = compounding(_samples(baseline=base, lingua2=a, kivi2=b, lingua2__kivi2=overlapping)).row(0, named=True)
    assert row["interaction"] == pytest.approx(math.log(100.5 * 200.5 / (100.5 * 150.5)))  # ≈ log(4/3)
    assert row["distinguishable"] is True
    assert 0 < row["interaction_ci_low"] < row["interaction"] < row["interaction_ci_high"]


def test_compounding_needs_every_part_and_a_baseline():
    assert compounding(_samples(baseline=[0.8] * 4, lingua2__kivi2=[0.5] * 4, lingua2=[0.7] * 4)).is_empty()
    assert compounding(_samples(lingua2__kivi2=[0.5] * 4, lingua2=[0.7] * 4, kivi2=[0.5] * 4)).is_empty()


def test_a_baseline_near_zero_is_not_measurable():
    """The issue's first counter-example: baseline 1/50, parts 2/50 and 3/50. In 36% of the resamples the
    baseline scores 0, where the old scale clipped the expected score to 1 (CI [-1.00, 0.00]). Its own
    95% CI reaches 0: the cell says so, with no number."""
    zeros = [0.0] * 50
    base, a, b = [1.0, *zeros[1:]], [1.0, 1.0, *zeros[2:]], [1.0, 1.0, 1.0, *zeros[3:]]
    row = compounding(_samples(baseline=base, lingua2=a, kivi2=b, lingua2__kivi2=a)).row(0, named=True)
    assert row["measurable"] is False and row["reason"] == "not measurable: baseline, lingua2, kivi2 95% CI reaches 0"
    assert row["interaction"] is None and row["interaction_ci_low"] is None and row["p_value"] is None
    assert row["distinguishable"] is None and row["expected"] is None
    assert row["score"] == pytest.approx(0.04) and row["seed"] is not None
    # a baseline that scores 0 on every common sample: the same, not a division by 0
    row = compounding(_samples(baseline=[0.0] * 4, lingua2=[0.0] * 4, kivi2=[0.5] * 4, lingua2__kivi2=[0.0] * 4))
    assert row.row(0, named=True)["reason"] == "not measurable: baseline, lingua2 95% CI reaches 0"


def test_parts_that_improve_a_near_zero_baseline():
    """The issue's second counter-example: a baseline of 0.0375 (32 samples, three at 0.4), parts that
    improve it ×1.5 and ×2, a stack equal to the baseline, was flagged as compounding, -7.5 [-9.4, -5.8].
    The baseline's three samples are all missed by 4.3% of the resamples: its CI reaches 0, not measurable.
    With ten times the samples the baseline is measured, and the log ratio says what the data say without
    clipping: the stack realizes none of the parts' ×3 gain (log 1/3, the guard's 1/2 aside); a stack at
    ×3 interacts 0."""

    def scaled(value, n):
        return [value] * (3 * n // 32) + [0.0] * (n - 3 * n // 32)

    row = compounding(
        _samples(
            baseline=scaled(0.4, 32), lingua2=scaled(0.6, 32), kivi2=scaled(0.8, 32), lingua2__kivi2=scaled(0.4, 32)
        )
    ).row(0, named=True)
    assert row["baseline"] == pytest.approx(0.0375) and row["measurable"] is False
    samples = _samples(
        baseline=scaled(0.4, 320), lingua2=scaled(0.6, 320), kivi2=scaled(0.8, 320), lingua2__kivi2=scaled(0.4, 320)
    )
    row = compounding(samples).row(0, named=True)
    assert row["measurable"] is True and row["expected"] == pytest.approx(0.1125)  # 0.0375 × 1.5 × 2
    assert row["interaction"] == pytest.approx(math.log(12.5 * 12.5 / (18.5 * 24.5)))  # log(1/3), guarded: -1.06
    assert row["interaction_ci_low"] <= row["interaction"] <= row["interaction_ci_high"] < 0
    samples[("m", "d")]["lingua2+kivi2"] = _records([0.4] * 90 + [0.0] * 230)  # ×3 the baseline's total
    row = compounding(samples).row(0, named=True)
    assert abs(row["interaction"]) < 0.01 and row["distinguishable"] is False


def test_a_part_at_zero_makes_the_cell_not_measurable():
    """A part that keeps nothing leaves nothing to compound with; on a ratio scale the cell rests on the
    guard alone, so it is not measured."""
    row = compounding(
        _samples(baseline=[1.0] * 30, lingua2=[0.0] * 30, kivi2=HALF_A + HALF_A[:10], lingua2__kivi2=[0.0] * 30)
    )
    assert row.row(0, named=True)["reason"] == "not measurable: lingua2 95% CI reaches 0"


def test_each_stack_is_compared_on_the_samples_it_and_the_baseline_finished():
    """kivi2 ran out of memory on the two hardest samples (the last ones, where the baseline fails too):
    averaged over what it finished it looks better than the baseline, on the common samples it is not.
    kivi4 finished everything and is compared on all ten samples, whatever kivi2 did."""
    base = [1.0] * 8 + [0.0, 0.0]
    kivi2 = [1.0] * 7 + [0.0] + [None, None]
    samples = _samples(baseline=base, kivi2=kivi2, kivi4=[1.0] * 8 + [0.0, 0.0])
    table = paired(samples).filter(pl.col("metric") == "score")
    kivi = table.filter(pl.col("stack") == "kivi2").row(0, named=True)
    assert (kivi["n_ids"], kivi["n_ok"], kivi["n_common"], kivi["n_dropped"]) == (10, 8, 8, 2)
    assert kivi["value_all"] == pytest.approx(7 / 8)  # over everything it finished: above the baseline's 0.8
    assert kivi["value"] == pytest.approx(7 / 8) and kivi["baseline"] == pytest.approx(1.0)
    assert kivi["diff"] == pytest.approx(-1 / 8)
    assert kivi["diff_ci_low"] <= -1 / 8 <= kivi["diff_ci_high"] <= 0
    base_row = table.filter(pl.col("stack") == "baseline").row(0, named=True)
    assert base_row["value_all"] == pytest.approx(0.8) and base_row["value"] == pytest.approx(0.8)
    assert base_row["diff"] is None and base_row["n_dropped"] == 0 and base_row["reason"] == "the baseline itself"
    same = table.filter(pl.col("stack") == "kivi4").row(0, named=True)
    assert same["n_common"] == 10 and same["baseline"] == pytest.approx(0.8)
    assert (same["diff"], same["diff_ci_low"], same["diff_ci_high"], same["p_value"]) == (0, 0, 0, 1.0)
    assert same["distinguishable"] is False
    assert set(paired(samples)["metric"]) == set(PAIRED)


def test_an_unrelated_failing_stack_changes_no_other_cell():
    """Adding a stack that failed 25 of 50 samples leaves every other paired and compounding cell
    bit-identical: its failures enter its own comparisons only. The q-values are the exception by
    design: the new stack's cells join their model's family, so BH is recomputed over one more test."""
    rng = np.random.default_rng(8)
    base = (rng.random(50) < 0.8).astype(float)
    kivi4 = base * (rng.random(50) < 0.8)
    prune = base * (rng.random(50) < 0.6)
    both = kivi4 * prune
    stacks = {"baseline": list(base), "kivi4": list(kivi4), "prune": list(prune), "prune__kivi4": list(both)}
    before = _samples(**stacks)
    failing = [None if i % 2 else float(v) for i, v in enumerate(base * (rng.random(50) < 0.7))]
    after = _samples(**stacks, kivi2=failing, prune__kivi2=failing)
    adjusted = ["q_value", "distinguishable"]
    for table in (paired, compounding):
        old, new = table(before, seed=3), table(after, seed=3)
        kept = new.filter(~pl.col("stack").is_in(["kivi2", "prune+kivi2"]))
        assert kept.drop(adjusted).equals(old.drop(adjusted))
        assert new.height > old.height
    new_rows = paired(after, seed=3).filter((pl.col("stack") == "kivi2") & (pl.col("metric") == "score"))
    assert new_rows.row(0, named=True)["n_common"] == 25


def test_a_stack_that_finished_nothing_has_its_own_row():
    samples = _samples(baseline=[1.0] * 10, lingua2=[None] * 10, kivi2=HALF_A[:10], lingua2__kivi2=[None] * 10)
    pairs = paired(samples).filter(pl.col("metric") == "score")
    row = pairs.filter(pl.col("stack") == "lingua2").row(0, named=True)
    assert (row["n_ok"], row["n_common"], row["diff"], row["p_value"]) == (0, 0, None, None)
    assert row["reason"] == "0 samples finished by both the stack and the baseline"
    assert pairs.filter(pl.col("stack") == "kivi2").row(0, named=True)["p_value"] is not None  # unaffected
    comp = compounding(samples).row(0, named=True)
    assert (comp["stack"], comp["n_common"], comp["n_dropped"], comp["score"]) == ("lingua2+kivi2", 0, 10, None)
    assert comp["reason"] == "0 samples finished by the stack, its parts and the baseline"


def test_q_values_are_benjamini_hochberg_within_a_model_and_metric():
    rng = np.random.default_rng(1)
    stacks = {"baseline": list((rng.random(40) < 0.8).astype(float))}
    for name, keep in [("kivi4", 0.97), ("kivi2", 0.8), ("prune", 0.5), ("gptq4", 1.0)]:
        stacks[name] = [v * float(rng.random() < keep) for v in stacks["baseline"]]
    samples = _samples(**stacks) | {
        ("m", "e"): _samples(**stacks)[("m", "d")],
        ("n", "d"): _samples(**stacks)[("m", "d")],
    }
    table = paired(samples)
    for (model, _), family in table.filter(pl.col("p_value").is_not_null()).group_by("model", "metric"):
        assert family.height == {"m": 8, "n": 4}[model]  # 4 stacks × the model's datasets
        assert np.allclose(family["q_value"].to_numpy(), bh_qvalues(family["p_value"].to_list()))
        assert (family["distinguishable"] == (family["q_value"] < 0.05)).all()
    raw = table.filter(pl.col("p_value") < 0.05).height
    assert table.filter(pl.col("distinguishable")).height <= raw


def test_each_cell_has_its_own_seed_and_keeps_its_ci_when_cells_are_added():
    rng_scores = [float((i * 7) % 5 > 1) for i in range(30)]
    other = [float((i * 3) % 4 > 0) for i in range(30)]
    small = paired(_samples(baseline=[1.0] * 30, kivi2=rng_scores), seed=5)
    large = paired(_samples(baseline=[1.0] * 30, kivi2=rng_scores, kivi4=other, prune=other), seed=5)
    key = (pl.col("stack") == "kivi2") & (pl.col("metric") == "score")
    a, b = small.filter(key).row(0, named=True), large.filter(key).row(0, named=True)
    assert (a["diff_ci_low"], a["diff_ci_high"], a["p_value"], a["seed"]) == (
        b["diff_ci_low"],
        b["diff_ci_high"],
        b["p_value"],
        b["seed"],
    )
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
    percent = [
        f"{100 * math.expm1(row[k]):+.0f}%" for k in ("interaction", "interaction_ci_low", "interaction_ci_high")
    ]
    assert percent[0] == "-54%"  # log(20.5 · 2.5 / 10.5²)
    cells = f"| 20 | 100.0 | lingua2 50.0, kivi2 50.0 | 25.0 | 10.0 | {percent[0]} | {percent[1]} to {percent[2]} "
    assert f"| m | d | lingua2+kivi2 {cells}| {row['q_value']:.3f} | no |" in text
    kivi = pairs.filter((pl.col("stack") == "kivi2") & (pl.col("metric") == "score")).row(0, named=True)
    ci = f"{kivi['diff_ci_low'] * 100:.1f} to {kivi['diff_ci_high'] * 100:.1f}"
    q = f"{kivi['q_value']:.3f}"
    assert f"| m | kivi2 | d | qa_f1 | 50.0 | -50.0 | {ci} | {q} | yes | 50.0 | 0.0–100.0 | 20 | 0 | 0 |" in text
    # what chance alone gives, per model and table
    raw = pairs.filter((pl.col("metric") == "score") & (pl.col("p_value") < 0.05)).height
    assert (
        "- m, stack-vs-baseline differences: 3 cells tested; if none differed, chance alone would give about " in text
    )
    assert f"0.05 × 3 ≈ 0.2 with p < 0.05; {raw} have p < 0.05, 3 survive Benjamini–Hochberg at 5%" in text
    assert "- m, interactions: 1 cell tested;" in text


def test_markdown_says_not_measurable():
    zeros = [0.0] * 50
    base, a = [1.0, *zeros[1:]], [1.0, 1.0, *zeros[2:]]
    samples = _samples(baseline=base, lingua2=a, kivi2=a, lingua2__kivi2=a)
    text = markdown(
        _long({"baseline": 0.02, "lingua2": 0.04, "kivi2": 0.04, "lingua2+kivi2": 0.04}), None, compounding(samples)
    )
    assert (
        "| m | d | lingua2+kivi2 | 50 | 2.0 | lingua2 4.0, kivi2 4.0 | — | 4.0 | not measurable | — | — | — |" in text
    )
    assert "- 1 cell not measurable: a baseline or part whose own 95% CI reaches 0." in text


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
    assert (
        "| m | baseline | pk | qa_f1 | 50.0 | — | — | — | — | 50.0 |" in text and "| 3 | 1 (oom) | 1 | 1 | 1 |" in text
    )
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
    write_jsonl_atomic(
        tmp_path / "prompts.jsonl", [{"_id": r["_id"], "prompt": r["context"], "content": r["context"]} for r in rows]
    )
    summaries = []
    for stack in ("baseline", "kivi4"):
        shared = {"gpu_shared_by": 4} if stack == "kivi4" else {}  # LCOPT_JOBS_PER_GPU=4 ran kivi4's job
        preds = [
            {"_id": r["_id"], "status": "ok", "prediction": "noise", "init": "random", "tpot_s": 0.004} | shared
            for r in rows
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
    assert "| m | kivi4 | pk | qa_f1 | — | — | — | — | — | not measured | — | 2 |" in text and "nan" not in text
    assert "Times of 1 (model, stack) cells were measured with up to 4 jobs sharing one GPU" in text


def _score_files(tmp_path):
    """Two finished score summaries and their per-sample files, as the score stage writes them."""
    from lcopt import synthetic
    from lcopt.io import write_jsonl_atomic
    from lcopt.scoring import score_file

    rows = list(synthetic.generate("passkey", 64, 4, seed=1))
    write_jsonl_atomic(tmp_path / "rows.jsonl", rows)
    write_jsonl_atomic(
        tmp_path / "prompts.jsonl", [{"_id": r["_id"], "prompt": r["context"], "content": r["context"]} for r in rows]
    )
    summaries = []
    for stack, right in (("baseline", 4), ("kivi4", 2)):
        preds = [
            {"_id": r["_id"], "status": "ok", "prediction": r["answers"][0] if i < right else "no"}
            for i, r in enumerate(rows)
        ]
        write_jsonl_atomic(tmp_path / f"{stack}.jsonl", preds)
        summary = tmp_path / "scores" / stack / "pk.summary.json"
        summary.parent.mkdir(parents=True)
        labels = {"model": "m", "stack": stack, "dataset": "pk"}
        inputs = [tmp_path / f"{stack}.jsonl", tmp_path / "rows.jsonl", tmp_path / "prompts.jsonl"]
        score_file("passkey", *inputs, summary.with_name("pk.samples.jsonl"), summary, labels)
        summaries.append(summary)
    return summaries


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda s: s.write_text("{not json"), "not a JSON summary"),
        (lambda s: s.write_text('{"model": "m"}'), "missing key(s) stack, dataset, task, family, metric"),
        (lambda s: s.write_text("[]"), "a JSON list, expected an object"),
        (lambda s: s.write_text(s.read_text().replace('"quality": {', '"quality": {"x": 1, ')), "'quality' must map"),
        (lambda s: s.with_name("pk.samples.jsonl").write_text('{"_id": "a"\n'), "line 1 is not valid JSON"),
        (
            lambda s: s.with_name("pk.samples.jsonl").write_text('{"_id": "a"}\n'),
            "record 1 has no '_id' or no 'status'",
        ),
        (
            lambda s: s.with_name("pk.samples.jsonl").write_text('{"_id": "a", "status": "ok", "score": 1}\n'),
            "finished record 1 ('a') has no number for f1, precision",
        ),
        (lambda s: s.with_name("pk.samples.jsonl").unlink(), "missing"),
    ],
)
def test_a_damaged_score_file_is_named_with_its_rebuild_command_and_no_table_is_written(tmp_path, damage, problem):
    """The aggregate stage reads every input before it writes anything: a damaged score file stops it with
    the file's name, what is wrong and the command that rebuilds it, and the previous tables are left as
    they were (the rule's update() flag has Snakemake restore them if it removed any)."""
    from lcopt.aggregate import ScoreFileError, write_tables

    summaries = _score_files(tmp_path)
    write_tables(summaries, tmp_path / "tables")
    before = {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()}
    damage(summaries[1])
    with pytest.raises(ScoreFileError) as error:
        write_tables(summaries, tmp_path / "tables", seed=1)  # another seed: any write would change the tables
    message = str(error.value)
    assert problem in message
    assert "snakemake --cores 1 --force " in message and "delete it and rerun the workflow" in message
    named = message.split(":")[0]
    assert named in {str(summaries[1]), str(summaries[1].with_name("pk.samples.jsonl"))}
    assert f"--force {named}`" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()} == before


def test_one_seed_gives_identical_tables(tmp_path):
    """The same inputs and seed write byte-identical tables (every cell's replicates come from its own
    seed); another seed moves the intervals."""
    from lcopt.aggregate import write_tables

    summaries = _score_files(tmp_path)
    write_tables(summaries, tmp_path / "a", seed=4)
    write_tables(summaries, tmp_path / "b", seed=4)
    write_tables(summaries, tmp_path / "c", seed=5)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) and "paired.csv" in names
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert (tmp_path / "a" / "paired.csv").read_bytes() != (tmp_path / "c" / "paired.csv").read_bytes()
