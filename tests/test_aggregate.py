import polars as pl

from lcopt.aggregate import compounding


def _long(scores: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"model": "m", "dataset": "d", "stack": k, "kind": "quality", "metric": "score", "value": v}
            for k, v in scores.items()
        ]
    )


def test_compounding_compares_a_stack_with_the_sum_of_its_parts():
    table = compounding(_long({"baseline": 0.80, "lingua2": 0.70, "kivi2": 0.75, "lingua2+kivi2": 0.50, "kivi4": 0.8}))
    assert table.height == 1
    row = table.row(0, named=True)
    assert row["stack"] == "lingua2+kivi2"
    assert abs(row["drop"] - 0.30) < 1e-12
    assert abs(row["sum_of_part_drops"] - 0.15) < 1e-12  # 0.10 + 0.05
    assert abs(row["excess_drop"] - 0.15) < 1e-12  # compounding: worse than additive


def test_compounding_needs_every_part():
    assert compounding(_long({"baseline": 0.8, "lingua2+kivi2": 0.5, "lingua2": 0.7})).is_empty()


def test_markdown_shows_the_compounding_table():
    from lcopt.aggregate import markdown

    long = _long({"baseline": 0.80, "lingua2": 0.70, "kivi2": 0.75, "lingua2+kivi2": 0.50}).with_columns(
        pl.lit("qa_f1").alias("longbench_metric"),
        pl.lit(None).alias("ci_low"),
        pl.lit(None).alias("ci_high"),
        pl.lit(1).alias("n"),
        pl.lit(0).alias("n_failed"),
    )
    text = markdown(long)
    assert "## Compounding" in text
    assert "| m | d | lingua2+kivi2 | 80.0 | 50.0 | 30.0 | 15.0 | 15.0 |" in text


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
    preds = [
        {"_id": rows[0]["_id"], "status": "ok", "prediction": rows[0]["answers"][0], "truncated": True},
        {"_id": rows[1]["_id"], "status": "ok", "prediction": "", "chat_template": False},
        {"_id": rows[2]["_id"], "status": "oom", "prediction": "", "error": "CUDA out of memory"},
    ]
    write_jsonl_atomic(tmp_path / "preds.jsonl", preds)
    labels = {"model": "m", "stack": "baseline", "dataset": "pk"}
    summary = score_file(
        "passkey", tmp_path / "preds.jsonl", tmp_path / "rows.jsonl", tmp_path / "s.jsonl", tmp_path / "s.json", labels
    )
    assert (summary["n_ok"], summary["n_failed"], summary["n_empty_predictions"], summary["n_truncated"]) == (
        2,
        1,
        1,
        1,
    )
    assert summary["quality"]["score"]["mean"] == 0.5  # the empty prediction scores 0, the OOM is left out
    long = write_tables([tmp_path / "s.json"], tmp_path / "tables")
    score = long.filter(pl.col("metric") == "score").row(0, named=True)
    assert (score["n_failed"], score["failures"], score["n_empty_predictions"], score["n_truncated"]) == (
        1,
        "oom",
        1,
        1,
    )
    text = (tmp_path / "tables" / "summary.md").read_text()
    assert "| m | baseline | pk | qa_f1 | 50.0 |" in text and "| 3 | 1 (oom) | 1 | 1 |" in text
    assert "Prompts of m are the plain task template" in text
