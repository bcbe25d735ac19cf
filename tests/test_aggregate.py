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
