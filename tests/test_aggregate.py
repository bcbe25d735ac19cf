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
