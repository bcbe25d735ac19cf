"""The report's figures, drawn from small tables made here (fixtures, not results): what each figure
selects and computes (Pareto front, styles, roofline pairs, needle bins) and that each writes a PNG."""

import math
import random

import polars as pl
import pytest

from lcopt import plots
from lcopt.aggregate import compounding
from lcopt.report import figures

PNG = b"\x89PNG\r\n\x1a\n"
STACKS = ["baseline", "prune", "gptq4", "kivi4", "prune+gptq4", "gptq4+kivi4"]
DATASETS = {  # dataset -> (task, task family, LongBench metric, words)
    "passkey-1k": ("passkey", "synthetic retrieval", "qa_f1", 1024),
    "passkey-2k": ("passkey", "synthetic retrieval", "qa_f1", 2048),
    "multi_hop-1k": ("multi_hop", "synthetic multi-hop", "qa_f1", 1024),
    "facts-1k": ("fact_extraction", "synthetic summarization", "rouge", 1024),
}
# hand-picked (score, peak MiB, ms/token) per stack, the same on every dataset (passkey-2k's scores ×0.8)
CELL = {
    "baseline": (0.90, 500, 20),
    "prune": (0.60, 400, 15),
    "gptq4": (0.85, 300, 25),
    "kivi4": (0.88, 480, 30),
    "prune+gptq4": (0.40, 250, 18),
    "gptq4+kivi4": (0.80, 290, 35),
}


def fake_long(roofline: bool = False) -> pl.DataFrame:
    """A long table shaped like lcopt.aggregate.long_table's, with made-up values."""
    rows = []
    for stack in STACKS:
        score, mib, ms = CELL[stack]
        for ds, (task, family, metric, words) in DATASETS.items():
            shrink = 0.8 if ds.endswith("2k") else 1.0
            base = {
                "model": "m",
                "stack": stack,
                "dataset": ds,
                "task": task,
                "family": family,
                "longbench_metric": metric,
                "n": 8,
                "n_failed": 0,
                "failures": "",
                "n_empty_predictions": 0,
                "n_truncated": 0,
                "max_input_tokens": 4000,
                "chat_template": True,
            }
            quality = {"score": score * shrink, "precision": min(1, score + 0.05), "recall": score - 0.1, "f1": score}
            for name, v in quality.items():
                rows.append(
                    base
                    | {
                        "kind": "quality",
                        "metric": name,
                        "value": v,
                        "ci_low": v - 0.05,
                        "ci_high": min(1, v + 0.05),
                        "n_values": 8,
                    }
                )
            system = {
                "peak_mem_bytes": mib * 2**20,
                "tpot_s": ms / 1e3,
                "ttft_s": words / 1e4,
                "n_input_tokens": words * 1.3,
            }
            if roofline:
                system |= {"roofline_prefill_s": words / 3e4, "roofline_decode_s": ms / 4e3}
            for name, v in system.items():
                rows.append(
                    base
                    | {
                        "kind": "system",
                        "metric": name,
                        "value": float(v),
                        "ci_low": None,
                        "ci_high": None,
                        "n_values": 8,
                    }
                )
    return pl.DataFrame(rows)


def fake_per_sample() -> pl.DataFrame:
    rng = random.Random(0)
    rows = []
    for stack in STACKS:
        for ds in ("passkey-1k", "passkey-2k"):
            for i in range(20):
                depth = i / 19
                rows.append(
                    {
                        "model": "m",
                        "stack": stack,
                        "dataset": ds,
                        "task": "passkey",
                        "_id": f"{ds}-{i}",
                        "status": "ok",
                        "score": float(rng.random() < CELL[stack][0]),
                        "length": DATASETS[ds][3] + 5,
                        "depth": depth,
                    }
                )
    return pl.DataFrame(rows)


def fake_samples() -> dict:
    """fake_per_sample's rows as lcopt.aggregate.load_samples groups them: (model, dataset) -> stack -> id."""
    out: dict = {}
    for r in fake_per_sample().iter_rows(named=True):
        out.setdefault((r["model"], r["dataset"]), {}).setdefault(r["stack"], {})[r["_id"]] = r
    return out


def test_a_run_without_measured_quality_draws_every_figure(tmp_path):
    """Random weights (`init: random`): quality values are null, system figures real. Every figure is
    still written (the H200 workflow run's plots job failed on the null scores before)."""
    long = fake_long(roofline=True).with_columns(
        pl.when(pl.col("kind") == "quality").then(None).otherwise(pl.col(c)).alias(c)
        for c in ("value", "ci_low", "ci_high")
    )
    per_sample = fake_per_sample().with_columns(pl.lit(None, dtype=pl.Float64).alias("score"))
    long.write_parquet(tmp_path / "long.parquet")
    per_sample.write_parquet(tmp_path / "per_sample.parquet")
    compounding(fake_samples(), resamples=50).clear().write_csv(tmp_path / "compounding.csv")
    plan = figures(["m"], {d: fam for d, (_, fam, _, _) in DATASETS.items()})
    outputs = [tmp_path / "plots" / f.path for f in plan]
    plots.write_plots(tmp_path / "long.parquet", tmp_path / "compounding.csv", tmp_path / "per_sample.parquet",
                      plan, outputs)  # fmt: skip
    assert all(path.read_bytes()[:8] == PNG for path in outputs)


def test_error_bars_clip_a_rounding_miss():
    assert plots._err_bars(1.0, 1.0000000000000002, 1.0) == (0.0, 0.0)
    assert plots._err_bars(0.5, 0.25, 0.75) == (25.0, 25.0)
    assert plots._err_bars(0.5, math.nan, math.nan) == (0.0, 0.0)


def test_pareto_front_keeps_only_the_undominated():
    # (cost, quality): b is cheaper than a and as good; d beats c on both; e is dearest but best
    points = [(5, 0.5), (4, 0.5), (3, 0.2), (2, 0.3), (9, 0.9), (2, 0.3)]
    assert plots.pareto_front(points) == [3, 1, 4]
    assert plots.pareto_front([]) == []


def test_stack_styles_are_distinct_and_colour_blind_safe():
    techniques = ["prune", "gptq4", "rtn4", "lingua2", "kivi4", "kivi2"]
    stacks = ["baseline", *techniques] + [f"{a}+{b}" for i, a in enumerate(techniques) for b in techniques[i + 1 :]]
    styles = plots.stack_styles(stacks)
    assert len(set(styles.values())) == len(stacks) == 22
    assert styles["baseline"] == ("#000000", "*")
    assert {c for c, _ in styles.values()} <= {*plots.OKABE_ITO, "#000000"}
    assert styles["prune"][0] == styles["prune+kivi4"][0]  # colour: first technique
    assert styles["prune+kivi4"][1] == styles["gptq4+kivi4"][1]  # marker: second technique
    assert plots.stack_order(["prune+gptq4", "gptq4", "baseline"]) == ["baseline", "gptq4", "prune+gptq4"]


def test_figure_plan_groups_by_report_family_and_model():
    plan = figures(["m"], {d: fam for d, (_, fam, _, _) in DATASETS.items()})
    paths = [f.path for f in plan]
    assert len(paths) == len(set(paths))
    assert "m/retrieval/quality_vs_memory.png" in paths and "m/multi-hop-qa/precision_recall.png" in paths
    assert "m/summarization/quality_vs_latency.png" in paths and "scores.png" in paths
    assert {"m/interaction.png", "m/roofline.png", "m/context_scaling.png", "m/needle.png"} <= set(paths)
    by_path = {f.path: f for f in plan}
    assert by_path["m/retrieval/quality_vs_memory.png"].category == "Retrieval"
    assert by_path["m/multi-hop-qa/precision_recall.png"].category == "Multi-hop QA"
    assert by_path["m/retrieval/quality_vs_memory.png"].subcategory == "m"
    assert by_path["m/interaction.png"].labels["stacks"] == "Level 2"
    assert not [f for f in plan if f.family == "QA"]  # no single-doc QA dataset in this run


def test_every_planned_figure_is_drawn(tmp_path):
    long = fake_long()
    plan = figures(["m"], {d: fam for d, (_, fam, _, _) in DATASETS.items()})
    for figure in plan:
        plots.draw(figure, long, compounding(fake_samples(), resamples=50), fake_per_sample(), tmp_path / figure.path)
    for figure in plan:
        data = (tmp_path / figure.path).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, figure.path


def test_quality_vs_marks_the_pareto_front(tmp_path):
    fronts = plots.quality_vs(fake_long(), "m", "retrieval", "peak_mem_bytes", tmp_path / "q.png")
    # by memory: prune+gptq4 (250 MiB, 40), gptq4+kivi4 (290, 80), gptq4 (300, 85), kivi4 (480, 88),
    # baseline (500, 90); prune (400, 60) is beaten by gptq4
    front = ["prune+gptq4", "gptq4+kivi4", "gptq4", "kivi4", "baseline"]
    assert fronts == {"passkey-1k": front, "passkey-2k": front}
    fronts = plots.quality_vs(fake_long(), "m", "retrieval", "tpot_s", tmp_path / "t.png")
    # by ms/token: prune (15, 60), prune+gptq4 (18, 40: dominated), baseline (20, 90)
    assert fronts["passkey-1k"] == ["prune", "baseline"]
    assert plots.quality_vs(fake_long(), "m", "QA", "tpot_s", tmp_path / "none.png") == {}
    assert (tmp_path / "none.png").read_bytes()[:8] == PNG  # says there is no data, not a silent gap


def test_roofline_only_with_gpu_data(tmp_path):
    assert plots.roofline(fake_long(roofline=False), "m", tmp_path / "cpu.png") is False
    assert plots.roofline(fake_long(roofline=True), "m", tmp_path / "gpu.png") is True
    cpu, gpu = (tmp_path / "cpu.png").read_bytes(), (tmp_path / "gpu.png").read_bytes()
    assert cpu[:8] == gpu[:8] == PNG and len(gpu) > 2 * len(cpu)


def test_interaction_heatmap_refuses_a_table_without_its_columns(tmp_path):
    table = pl.DataFrame({"model": ["m"], "dataset": ["d"], "stack": ["a+b"], "drop": [0.1]})
    with pytest.raises(ValueError, match=r"compounding table has columns .* missing"):
        plots.interaction_heatmap(table, "m", tmp_path / "x.png")


def test_interaction_heatmap_reads_the_log_ratio_table(tmp_path):
    """The table lcopt.aggregate.compounding writes, here made by it: the colour is -interaction (red: the
    stack compounds), a cell without a measure is drawn as such."""
    table = compounding(fake_samples(), resamples=50)
    cells = plots.interaction_heatmap(table, "m", tmp_path / "heat.png")
    assert (tmp_path / "heat.png").read_bytes()[:8] == PNG
    for r in table.iter_rows(named=True):
        value = cells[(r["stack"], r["dataset"])]
        if r["interaction"] is None:
            assert math.isnan(value)
        else:
            assert value == pytest.approx(-r["interaction"])
    # a not-measurable cell and a hatched one draw (no number for the first)
    marked = table.with_columns(
        pl.when(pl.col("dataset") == "passkey-1k").then(False).otherwise(pl.col("measurable")).alias("measurable"),
        pl.when(pl.col("dataset") == "passkey-1k").then(None).otherwise(pl.col("interaction")).alias("interaction"),
    )
    cells = plots.interaction_heatmap(marked, "m", tmp_path / "marked.png")
    assert all(math.isnan(v) for (s, d), v in cells.items() if d == "passkey-1k")


def test_needle_heatmap_bins_depth(tmp_path):
    cells = plots.needle_heatmap(fake_per_sample(), "m", tmp_path / "needle.png")
    # 20 samples at depths i/19 per dataset: 4 per bin of 20%
    assert {n for (_, _, _), (_, n) in cells.items()} == {4}
    assert len(cells) == len(STACKS) * 2 * plots.DEPTH_BINS
    assert plots.needle_heatmap(fake_per_sample(), "other", tmp_path / "none.png") == {}


def test_context_scaling_needs_two_lengths_of_a_task(tmp_path):
    assert plots.context_scaling(fake_long(), "m", tmp_path / "s.png") == ["passkey"]
    one_length = fake_long().filter(pl.col("dataset") != "passkey-2k")
    assert plots.context_scaling(one_length, "m", tmp_path / "none.png") == []
