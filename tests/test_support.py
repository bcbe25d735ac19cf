"""The score stage's support metrics: read against a prompt's content, the gold answers' floor beside the
model's rate, and the inputs the score stage refuses (issue 21)."""

import json
import statistics

import polars as pl
import pytest

from lcopt import synthetic
from lcopt.io import write_jsonl_atomic
from lcopt.metrics import Source, unsupported_entity_rate, unsupported_token_rate
from lcopt.scoring import quality_metrics, score_file, score_rows
from lcopt.tasks import get_task

NEWS = "Passage 1:\nMayor Ruth Okafor opened the Harbor Bridge on Monday. About 1,000 people came."


def _row(i: int, answers: list[str], context: str = NEWS) -> dict:
    return {"_id": f"s{i}", "input": "", "context": context, "answers": answers}


def _prompt(row: dict, content: str | None = None) -> dict:
    text = get_task("multi_news").template.format(context=row["context"], input=row["input"])
    return {"_id": row["_id"], "prompt": "<|system|>Cutting Knowledge Date: December 2023\n" + text} | (
        {"content": row["context"] if content is None else content}
    )


def _score(tmp_path, task: str, rows: list[dict], prompts: list[dict], preds: list[dict], **labels) -> dict:
    write_jsonl_atomic(tmp_path / "rows.jsonl", rows)
    write_jsonl_atomic(tmp_path / "prompts.jsonl", prompts)
    write_jsonl_atomic(tmp_path / "preds.jsonl", preds)
    return score_file(
        task,
        tmp_path / "preds.jsonl",
        tmp_path / "rows.jsonl",
        tmp_path / "prompts.jsonl",
        tmp_path / "out.samples.jsonl",
        tmp_path / "out.summary.json",
        {"model": "m", "stack": "baseline", "dataset": "news"} | labels,
        resamples=200,
    )


# --- the gold floor --------------------------------------------------------------------------------


def test_gold_answers_get_the_same_support_metrics_against_the_same_content():
    rows = [
        # gold names the bridge and a reporter the news does not: entities [Ruth Okafor, Harbor Bridge,
        # Reuters] -> 1/3; a second answer with none unsupported -> the sample's mean is 1/6
        _row(0, ["Ruth Okafor opened the Harbor Bridge, Reuters says.", "Ruth Okafor opened it."]),
        _row(1, ["About 1000 people came to the Harbor Bridge."]),  # 1000 is 1,000 -> 0.0
    ]
    preds = [
        {"_id": "s0", "status": "ok", "prediction": "Mayor John Okafor opened a bridge in December 2023."},
        {"_id": "s1", "status": "oom", "prediction": ""},
    ]
    scored = score_rows("multi_news", preds, rows, [_prompt(r) for r in rows])
    s0 = scored[0]
    assert s0["gold_unsupported_entity_rate"] == pytest.approx((1 / 3 + 0.0) / 2)
    # the prediction: [Mayor John Okafor] not a run, [December 2023] only in the chat header -> 2/2
    assert s0["unsupported_entity_rate"] == 1.0
    gold_tokens = [unsupported_token_rate(a, NEWS) for a in rows[0]["answers"]]
    assert s0["gold_unsupported_token_rate"] == pytest.approx(statistics.fmean(gold_tokens)) and gold_tokens[0] > 0
    assert "gold_unsupported_entity_rate" not in scored[1]  # a failed sample has no metrics at all
    assert quality_metrics(get_task("multi_news"))[-2:] == (
        "gold_unsupported_token_rate",
        "gold_unsupported_entity_rate",
    )
    # the lookups' gold has a token rate only: a gold answer is never another key's value
    assert quality_metrics(get_task("kv_retrieval"))[-2:] == ("other_key_value_rate", "gold_unsupported_token_rate")
    assert quality_metrics(get_task("passkey"))[-1] == "gold_unsupported_token_rate"


def test_the_gold_floor_reaches_the_summary_and_the_tables(tmp_path):
    from lcopt.aggregate import write_tables

    rows = [_row(i, [f"Ruth Okafor spoke{' to Reuters' if i % 2 else ''}."]) for i in range(6)]
    preds = [{"_id": r["_id"], "status": "ok", "prediction": "Ruth Okafor spoke."} for r in rows]
    summary = _score(tmp_path, "multi_news", rows, [_prompt(r) for r in rows], preds)
    gold = summary["quality"]["gold_unsupported_entity_rate"]
    assert (gold["mean"], gold["n"]) == (pytest.approx(0.25), 6)  # half the samples: 1 of 2 entities
    assert gold["ci_low"] < 0.25 < gold["ci_high"]
    assert summary["quality"]["unsupported_entity_rate"]["mean"] == 0.0
    long = write_tables([tmp_path / "out.summary.json"], tmp_path / "tables")
    assert long.filter(pl.col("metric") == "gold_unsupported_entity_rate")["value"].to_list() == [pytest.approx(0.25)]
    text = (tmp_path / "tables" / "summary.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| model | stack | dataset | f1 |"))
    assert "| unsupported_entity_rate | gold_unsupported_entity_rate |" in header
    assert "| 0.0 | 25.0 |" in text


def test_the_gold_floor_of_real_multi_news_summaries(shared_assets):
    """The reference summaries against their own news (the content of an untruncated multi_news prompt is
    its context): writers add outlets and names ("the AP", "per the Guardian"), so the floor is far from 0
    (docs/metrics.md: 21.4% of entities over all 200 rows with SmolLM2's prompts)."""
    path = shared_assets / "longbench" / "multi_news.jsonl"
    if not path.is_file():
        pytest.skip(f"LongBench multi_news not found at {path}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:30]]
    shifted = {r["_id"]: rows[(i + 1) % len(rows)]["context"] for i, r in enumerate(rows)}
    preds = [{"_id": r["_id"], "status": "ok", "prediction": r["answers"][0]} for r in rows[:8]]
    scored = score_rows("multi_news", preds, rows, [_prompt(r) for r in rows])
    # a prediction equal to the gold answer has exactly the gold floor
    for s in scored:
        assert s["unsupported_entity_rate"] == s["gold_unsupported_entity_rate"]
        assert s["unsupported_token_rate"] == s["gold_unsupported_token_rate"]
    # the floor: measured 0.221 on these 30 rows; against the next sample's news, 0.928
    instructions = get_task("multi_news").template.format(context="\n", input="\n")
    own = [unsupported_entity_rate(r["answers"][0], Source(r["context"], instructions)) for r in rows]
    other = [unsupported_entity_rate(r["answers"][0], Source(shifted[r["_id"]], instructions)) for r in rows]
    assert [s["gold_unsupported_entity_rate"] for s in scored] == own[:8]
    assert 0.12 < statistics.fmean(own) < 0.32 and statistics.fmean(other) > statistics.fmean(own) + 0.4


def test_support_reads_the_content_with_the_template_s_words_neutral():
    """The template's own words ("Summary", "news") are neither support nor claims; the chat template's
    ("December 2023") support nothing."""
    rows = [_row(0, ["Ruth Okafor opened the bridge."])]
    preds = [{"_id": "s0", "status": "ok", "prediction": "Summary:\n\nOkafor opened the bridge in December 2023."}]
    (s,) = score_rows("multi_news", preds, rows, [_prompt(rows[0])])
    # entities: [Okafor] supported, [December] and [2023] not ("Summary" is the template's: not counted)
    assert s["unsupported_entity_rate"] == pytest.approx(2 / 3)
    # words: okafor opened bridge in december 2023 -> in, december, 2023 unsupported; summary not counted
    assert s["unsupported_token_rate"] == pytest.approx(3 / 6)
    assert unsupported_entity_rate(preds[0]["prediction"], _prompt(rows[0])["prompt"]) == 0.0  # the old reading


# --- inputs the score stage refuses ----------------------------------------------------------------


def _passkey(tmp_path, n: int = 5):
    rows = list(synthetic.generate("passkey", 64, n, seed=1))
    prompts = [{"_id": r["_id"], "prompt": r["context"], "content": r["context"]} for r in rows]
    preds = [{"_id": r["_id"], "status": "ok", "prediction": r["answers"][0]} for r in rows]
    return rows, prompts, preds


def _refused(tmp_path, rows, prompts, preds, match: str) -> str:
    with pytest.raises(ValueError, match=match) as err:
        _score(tmp_path, "passkey", rows, prompts, preds)
    assert not (tmp_path / "out.summary.json").exists() and not (tmp_path / "out.samples.jsonl").exists()
    return str(err.value)


def test_a_predictions_file_cut_short_is_an_error_naming_it(tmp_path):
    """Issue 21: a predictions file cut to 3 of its 40 rows was accepted, and every comparison shrank."""
    rows, prompts, preds = _passkey(tmp_path)
    message = _refused(tmp_path, rows, prompts, preds[:3], "rows for 5 prompts")
    predictions = tmp_path / "preds.jsonl"
    assert message.startswith(f"{predictions}: 3 rows for 5 prompts; 2 of the 5 prompts of ")
    assert f"(first: {rows[3]['_id']!r})" in message
    assert f"snakemake --cores 1 --force {predictions}" in message
    # a repeated row or a row of another prompt is refused too
    _refused(tmp_path, rows, prompts, [*preds, preds[0]], "1 samples have several rows")
    _refused(tmp_path, rows, prompts, [*preds[:4], preds[4] | {"_id": "other"}], "1 rows are for no prompt there")
    no_id = {k: v for k, v in preds[4].items() if k != "_id"}
    _refused(tmp_path, rows, prompts, [*preds[:4], no_id], r"rows are for no prompt there \(first: None\)")
    # a failed sample keeps its row: it is not missing
    summary = _score(tmp_path, "passkey", rows, prompts, [*preds[:4], preds[4] | {"status": "oom"}])
    assert (summary["n"], summary["n_failed"]) == (5, 1)


@pytest.mark.parametrize("which", ["preds", "prompts", "rows"])
def test_a_file_that_cannot_be_read_is_named_with_the_command_that_rebuilds_it(tmp_path, which):
    rows, prompts, preds = _passkey(tmp_path)
    write_jsonl_atomic(tmp_path / "rows.jsonl", rows)
    write_jsonl_atomic(tmp_path / "prompts.jsonl", prompts)
    write_jsonl_atomic(tmp_path / "preds.jsonl", preds)
    broken = tmp_path / f"{which}.jsonl"
    broken.write_text(broken.read_text()[:-40] + "\n")  # the last line cut mid-object
    with pytest.raises(ValueError) as err:
        score_file("passkey", tmp_path / "preds.jsonl", tmp_path / "rows.jsonl", tmp_path / "prompts.jsonl",
                   tmp_path / "out.samples.jsonl", tmp_path / "out.summary.json", {})  # fmt: skip
    message = str(err.value)
    assert f"{broken}: line 5 is not valid JSON" in message
    assert f"Rebuild it: `snakemake --cores 1 --force {broken}`" in message
    assert not (tmp_path / "out.summary.json").exists()


def test_prompts_without_content_are_refused_unless_nothing_is_scored(tmp_path):
    rows, prompts, preds = _passkey(tmp_path)
    old = [{k: v for k, v in p.items() if k != "content"} for p in prompts]
    message = _refused(tmp_path, rows, old, preds, "have no 'content'")
    assert message.startswith(f"{tmp_path / 'prompts.jsonl'}: 5 of its 5 rows have no 'content'")
    assert f"snakemake --cores 1 --force {tmp_path / 'prompts.jsonl'}" in message
    # a system run (random weights) scores no quality, so it needs no content
    random = [p | {"init": "random"} for p in preds]
    assert _score(tmp_path, "passkey", rows, old, random)["quality_measured"] is False
