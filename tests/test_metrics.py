"""Unit tests for lcopt.metrics.

The `_ref_*` functions below are THUDM/LongBench's `metrics.py` (and `eval.py`'s scoring rules) copied
verbatim, so that lcopt's LongBench-exact metrics can be checked against them on real LongBench data.
"""

import json
import math
import os
import re
import string
from collections import Counter
from pathlib import Path

import pytest
from rouge import Rouge
from rouge_score import rouge_scorer

from lcopt import metrics
from lcopt.metrics import (
    bootstrap_ci,
    exact_match,
    f1_score,
    hallucination_rate,
    longbench_total,
    normalize_answer,
    precision_recall,
    qa_f1_score,
    rouge_l_google,
    rouge_score,
    score_sample,
)

# --------------------------------------------------------------------------------------------------
# LongBench reference implementation (THUDM/LongBench metrics.py / eval.py), verbatim in behaviour.
# --------------------------------------------------------------------------------------------------


def _ref_normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def _ref_f1_score(prediction, ground_truth, **kwargs):
    common = Counter(prediction) & Counter(ground_truth)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction)
    recall = 1.0 * num_same / len(ground_truth)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def _ref_qa_f1_score(prediction, ground_truth, **kwargs):
    normalized_prediction = _ref_normalize_answer(prediction)
    normalized_ground_truth = _ref_normalize_answer(ground_truth)
    prediction_tokens = normalized_prediction.split()
    ground_truth_tokens = normalized_ground_truth.split()
    return _ref_f1_score(prediction_tokens, ground_truth_tokens)


def _ref_rouge_score(prediction, ground_truth, **kwargs):
    rouge = Rouge()
    try:
        scores = rouge.get_scores([prediction], [ground_truth], avg=True)
    except:  # noqa: E722 - LongBench's bare except, kept on purpose
        return 0.0
    return scores["rouge-l"]["f"]


def _ref_sample_score(metric_fn, prediction, ground_truths):
    """eval.py: `score = 0.; for gt in ground_truths: score = max(score, metric(prediction, gt))`."""
    score = 0.0
    for ground_truth in ground_truths:
        score = max(score, metric_fn(prediction, ground_truth))
    return score


def _ref_total(scores):
    """eval.py: `total_score += score` per prediction, then `round(100 * total_score / len(...), 2)`."""
    total_score = 0.0
    for score in scores:
        total_score += score
    return round(100 * total_score / len(scores), 2)


# --------------------------------------------------------------------------------------------------
# Real LongBench data (../shared/assets); tests needing it skip when it is absent.
# --------------------------------------------------------------------------------------------------

_DEFAULT_ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
_ASSETS = Path(os.environ.get("LCOPT_SHARED_ASSETS") or _DEFAULT_ASSETS)
_LONGBENCH = _ASSETS / "longbench"
_QA_DATASETS = ["qasper", "narrativeqa", "hotpotqa", "gov_report"]


def _require(path):
    if not path.exists():
        pytest.skip(f"LongBench asset {path} is absent (set LCOPT_SHARED_ASSETS to the shared assets folder)")
    return path


def _load_answers_only(name):
    with _require(_LONGBENCH / "answers_only" / f"{name}.json").open(encoding="utf-8") as fh:
        rows = json.load(fh)
    assert rows and all("answers" in r and "input" in r for r in rows)
    return rows


def _load_multi_news():
    path = _require(_LONGBENCH / "multi_news.jsonl")
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    assert rows and all(r["answers"] for r in rows)
    return rows


def _first_half(text):
    words = text.split()
    return " ".join(words[: len(words) // 2])


# --------------------------------------------------------------------------------------------------
# 1. Hand-computed values
# --------------------------------------------------------------------------------------------------


def test_qa_f1_hand_computed():
    # prediction "The cat sat." -> lower "the cat sat." -> no punct "the cat sat" -> no article "cat sat"
    #   tokens [cat, sat] (2)
    # reference "a cat sat down" -> "cat sat down", tokens [cat, sat, down] (3)
    # overlap = 2; precision = 2/2 = 1; recall = 2/3
    # F1 = 2 * 1 * (2/3) / (1 + 2/3) = (4/3) / (5/3) = 4/5 = 0.8
    assert qa_f1_score("The cat sat.", "a cat sat down") == pytest.approx(0.8, abs=1e-12)
    # symmetric in the two sides: precision and recall swap, F1 unchanged
    assert qa_f1_score("a cat sat down", "The cat sat.") == pytest.approx(0.8, abs=1e-12)


def test_qa_f1_repeated_tokens_counter_semantics():
    # pred [cat, cat, cat, dog] (4), gold [cat, dog, dog] (3)
    # Counter & : cat min(3,1)=1, dog min(1,2)=1 -> overlap 2 (a set would also give 2, a naive
    # "pred token in gold" count would give 4)
    # precision 2/4 = 1/2, recall 2/3, F1 = 2*(1/2)*(2/3) / (1/2 + 2/3) = (2/3)/(7/6) = 4/7
    assert qa_f1_score("cat cat cat dog", "cat dog dog") == pytest.approx(4 / 7, abs=1e-12)
    # pred [cat, cat] vs gold [cat]: overlap 1, P = 1/2, R = 1, F1 = 2/3
    assert qa_f1_score("cat cat", "cat") == pytest.approx(2 / 3, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat", "cat"),
        ("  The  Quick,   brown-fox!  ", "quick brownfox"),  # hyphen is punctuation: tokens merge
        ("An apple a day", "apple day"),
        ("theater another anthem", "theater another anthem"),  # articles only as whole words
        ("the.", ""),
        ("(a) [an] {the}", ""),
        ("A.B.C.", "abc"),  # punctuation removed first, so "A.B.C." is one word, not articles
        ("don't stop", "dont stop"),
        ("tab\tand\nnewline", "tab and newline"),
        ("“The” answer", "“ ” answer"),  # curly quotes are not in string.punctuation
        ("THE END", "end"),
        ("", ""),
        ("   ", ""),
        ("42, 000", "42 000"),
    ],
)
def test_normalize_answer_cases(text, expected):
    assert normalize_answer(text) == expected
    assert _ref_normalize_answer(text) == expected  # the expectations agree with LongBench itself


def test_empty_prediction_scores_zero():
    assert qa_f1_score("", "cat") == 0.0
    assert qa_f1_score("The.", "cat") == 0.0  # normalizes to nothing
    assert qa_f1_score("cat", "") == 0.0
    assert qa_f1_score("dog", "cat") == 0.0
    assert rouge_score("", "the cat sat") == 0.0  # `rouge` raises on an empty hypothesis -> 0
    assert rouge_score("...", "the cat sat") == 0.0
    assert f1_score([], ["cat"]) == 0.0
    assert f1_score(["cat"], []) == 0.0


def test_f1_score_on_tokens():
    # overlap {a:1, b:1} = 2, P = 2/3, R = 2/2 -> F1 = 2*(2/3)*1/(5/3) = 4/5
    assert f1_score(["a", "b", "c"], ["a", "b"]) == pytest.approx(0.8, abs=1e-12)
    assert f1_score(["x"], ["x"]) == 1.0


def test_exact_match():
    assert exact_match("The Cat!", "cat") == 1.0
    assert exact_match("  an   answer. ", "Answer") == 1.0
    assert exact_match("cats", "cat") == 0.0
    assert exact_match("cat sat", "sat cat") == 0.0  # order matters, unlike F1
    assert qa_f1_score("cat sat", "sat cat") == 1.0
    assert isinstance(exact_match("a", "b"), float)


def test_precision_recall_hand_computed():
    # see test_qa_f1_repeated_tokens_counter_semantics: overlap 2, P = 2/4, R = 2/3
    p, r = precision_recall("cat cat cat dog", "cat dog dog")
    assert p == pytest.approx(0.5, abs=1e-12)
    assert r == pytest.approx(2 / 3, abs=1e-12)
    # "The cat sat." vs "a cat sat down": P = 2/2, R = 2/3
    p, r = precision_recall("The cat sat.", "a cat sat down")
    assert (p, r) == (pytest.approx(1.0), pytest.approx(2 / 3))
    assert precision_recall("", "cat") == (0.0, 0.0)
    assert precision_recall("cat", "") == (0.0, 0.0)
    assert precision_recall("dog", "cat") == (0.0, 0.0)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([1.0, 0.0, 0.0], 33.33),  # 100/3 = 33.333... -> 33.33
        ([1.0, 1.0, 0.0], 66.67),  # 200/3 = 66.666... -> 66.67
        ([0.5, 0.25, 0.0, 1.0], 43.75),  # 175/4
        ([0.1234, 0.5678], 34.56),  # 100 * 0.6912 / 2
        ([0.8], 80.0),
        ([0.0, 0.0], 0.0),
    ],
)
def test_longbench_total_rounding(scores, expected):
    assert longbench_total(scores) == expected
    assert longbench_total(scores) == _ref_total(scores)


def test_longbench_total_on_many_scores_matches_eval_py():
    scores = [((i * 7919) % 1000) / 997 for i in range(501)]
    assert longbench_total(scores) == _ref_total(scores)
    total = longbench_total(scores)
    assert total == round(total, 2)


def test_hallucination_rate_hand_example():
    context = "Paris is the capital of France."
    question = "What is the capital of France?"
    answers = ["Paris"]
    # prediction -> [paris, is, capital, of, germany]; only "germany" is unsupported -> 1/5
    rate = hallucination_rate("Paris is the capital of Germany", context, question, answers)
    assert rate == pytest.approx(0.2)
    # every occurrence counts: [germany, germany, paris] -> 2/3
    assert hallucination_rate("Germany, Germany; Paris", context, question, answers) == pytest.approx(2 / 3)
    # "what" is only in the question, "lyon" only in an answer, "france" only in the context
    assert hallucination_rate("what lyon France", "France", "what?", ["Lyon", "Nice"]) == 0.0
    assert hallucination_rate("what lyon France", "", "", []) == 1.0
    # supported via the second answer only
    assert hallucination_rate("nice", "", "", ["Lyon", "Nice"]) == 0.0
    # nothing claimed -> None (also after normalization)
    assert hallucination_rate("", context, question, answers) is None
    assert hallucination_rate("The.", context, question, answers) is None


# --------------------------------------------------------------------------------------------------
# 2. Reference equivalence on real LongBench data
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", _QA_DATASETS)
def test_normalize_answer_matches_longbench_on_real_text(dataset):
    rows = _load_answers_only(dataset)
    texts = [r["input"] for r in rows] + [a for r in rows for a in r["answers"]]
    assert len(texts) >= 200
    for text in texts:
        assert normalize_answer(text) == _ref_normalize_answer(text), text[:200]


@pytest.mark.parametrize("dataset", _QA_DATASETS)
def test_qa_f1_matches_longbench_on_real_pairs(dataset):
    rows = _load_answers_only(dataset)
    n = len(rows)
    pairs = []
    for i, row in enumerate(rows):
        other = rows[(i + 1) % n]
        far = rows[(i + n // 2) % n]
        for gold in row["answers"]:
            pairs.append((gold, row["input"]))  # answer as prediction against its own question
            pairs.append((row["input"], gold))
            pairs.append((gold, gold))
            pairs.append((_first_half(gold), gold))
            for pred in other["answers"] + far["answers"]:  # another sample's answer as prediction
                pairs.append((pred, gold))
    nonzero = 0
    for pred, gold in pairs:
        ours = qa_f1_score(pred, gold)
        ref = _ref_qa_f1_score(pred, gold)
        assert ours == ref, (pred[:100], gold[:100], ours, ref)
        assert f1_score(normalize_answer(pred).split(), normalize_answer(gold).split()) == ref
        nonzero += 0.0 < ref < 1.0
    # the comparison must exercise partial overlaps, not only 0 and 1
    assert nonzero >= 50


def test_rouge_score_matches_longbench_on_multi_news():
    rows = _load_multi_news()[:25]
    checked = []
    for i, row in enumerate(rows):
        gold = row["answers"][0]
        unrelated = rows[(i + 1) % len(rows)]["answers"][0]
        for pred in (_first_half(gold), unrelated, gold):
            ours = rouge_score(pred, gold)
            ref = _ref_rouge_score(pred, gold)
            assert ours == ref, (i, pred[:100], ours, ref)
            checked.append((pred, gold, ours))
    half_scores = [s for k, (_, _, s) in enumerate(checked) if k % 3 == 0]
    unrelated_scores = [s for k, (_, _, s) in enumerate(checked) if k % 3 == 1]
    self_scores = [s for k, (_, _, s) in enumerate(checked) if k % 3 == 2]
    # sanity of the values themselves: the half summary overlaps far more than an unrelated one
    assert all(0.4 < s < 1.0 for s in half_scores)
    assert all(0.0 < s < 0.4 for s in unrelated_scores)
    assert all(s == pytest.approx(1.0) for s in self_scores)


# --------------------------------------------------------------------------------------------------
# 3. score_sample: max over references; both ROUGE-L implementations carried
# --------------------------------------------------------------------------------------------------


def test_score_sample_hand_multi_reference():
    # vs "cat": P = 1/2, R = 1, F1 = 2/3; vs "cat sat down": P = 1, R = 2/3, F1 = 4/5 (best)
    result = score_sample("qa_f1", "the cat sat", ["cat", "cat sat down"], context="", question="")
    assert result["score"] == pytest.approx(0.8)
    assert result["f1"] == pytest.approx(0.8)
    assert result["precision"] == pytest.approx(1.0)  # of the best-F1 reference, not of "cat"
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["exact_match"] == 0.0
    assert result["empty_prediction"] is False
    assert result["hallucination"] == 0.0
    # exact match is the max over references too
    assert score_sample("qa_f1", "Cat.", ["dog", "the cat"], "", "")["exact_match"] == 1.0


def test_score_sample_empty_prediction_flags():
    result = score_sample("qa_f1", "The.", ["cat"], context="cat", question="what?")
    assert result["empty_prediction"] is True
    assert result["hallucination"] is None
    assert result["score"] == 0.0
    assert result["rouge_l"] == 0.0


def test_score_sample_is_max_over_references_on_qasper():
    rows = [r for r in _load_answers_only("qasper") if len(r["answers"]) > 1]
    assert len(rows) >= 20, "qasper should have multi-answer samples"
    not_first = 0
    for i, row in enumerate(rows[:60]):
        answers = row["answers"]
        other = rows[(i + 1) % len(rows)]["answers"]
        predictions = [row["input"], _first_half(answers[-1]), *other]
        for pred in predictions:
            per_ref = [_ref_qa_f1_score(pred, a) for a in answers]
            result = score_sample("qa_f1", pred, answers, context="", question=row["input"])
            assert result["score"] == _ref_sample_score(_ref_qa_f1_score, pred, answers) == max(per_ref)
            assert result["f1"] == max(per_ref)
            best = per_ref.index(max(per_ref))
            assert (result["precision"], result["recall"]) == precision_recall(pred, answers[best])
            not_first += per_ref[0] < max(per_ref)
    # the max must really matter: a "first reference" rule would have failed on these
    assert not_first >= 5


def test_score_sample_rouge_carries_both_rouge_l_on_multi_news():
    rows = _load_multi_news()[:10]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    differ = 0
    for i, row in enumerate(rows):
        gold = row["answers"]
        for pred in (_first_half(gold[0]), rows[(i + 1) % len(rows)]["answers"][0]):
            result = score_sample("rouge", pred, gold, context=row["context"], question=row["input"])
            ref = _ref_sample_score(_ref_rouge_score, pred, gold)
            google = max(scorer.score(g, pred)["rougeL"].fmeasure for g in gold)
            assert result["score"] == ref
            assert result["rouge_l"] == ref
            assert result["rouge_l_google"] == pytest.approx(google, abs=1e-12)
            assert rouge_l_google(pred, gold[0]) == pytest.approx(google, abs=1e-12)
            differ += abs(result["rouge_l"] - result["rouge_l_google"]) > 1e-3
            assert result["hallucination"] is not None and 0.0 <= result["hallucination"] <= 1.0
    assert differ >= 1, "rouge (LongBench) and rouge-score ROUGE-L should disagree on real summaries"


def test_rouge_l_google_hand_value():
    # LCS("the cat sat on the mat", "the cat lay on the mat") = the cat on the mat = 5 of 6 each -> 5/6
    assert rouge_l_google("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    assert rouge_l_google("", "the cat") == 0.0


# --------------------------------------------------------------------------------------------------
# 4. bootstrap_ci
# --------------------------------------------------------------------------------------------------

_VALUES = [((i * 37) % 11) / 10 for i in range(60)]


def test_bootstrap_ci_deterministic_for_seed():
    assert bootstrap_ci(_VALUES, seed=7) == bootstrap_ci(_VALUES, seed=7)
    assert bootstrap_ci(_VALUES, seed=7) != bootstrap_ci(_VALUES, seed=8)


def test_bootstrap_ci_contains_mean_and_is_ordered():
    mean = sum(_VALUES) / len(_VALUES)
    for seed in range(5):
        lo, hi = bootstrap_ci(_VALUES, seed=seed)
        assert min(_VALUES) <= lo < mean < hi <= max(_VALUES)
    lo50, hi50 = bootstrap_ci(_VALUES, seed=0, level=0.5)
    lo95, hi95 = bootstrap_ci(_VALUES, seed=0, level=0.95)
    assert lo95 <= lo50 < hi50 <= hi95


def test_bootstrap_ci_width_is_plausible():
    # 100 Bernoulli(1/2) values: standard error 0.05, so a 95% interval is about +-0.098
    values = [float(i % 2) for i in range(100)]
    lo, hi = bootstrap_ci(values, n_resamples=2000, seed=1)
    assert 0.14 < hi - lo < 0.26
    assert lo < 0.5 < hi


def test_bootstrap_ci_degenerate_and_empty():
    assert bootstrap_ci([0.25] * 17) == (0.25, 0.25)
    assert bootstrap_ci([1.0]) == (1.0, 1.0)
    lo, hi = bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)
    lo, hi = bootstrap_ci([None, None])
    assert math.isnan(lo) and math.isnan(hi)


def test_bootstrap_ci_ignores_none():
    with_none = [1.0, None, 0.0, None, 1.0, 0.5, None]
    assert bootstrap_ci(with_none, seed=3) == bootstrap_ci([1.0, 0.0, 1.0, 0.5], seed=3)
    assert bootstrap_ci([None, 0.3, None]) == (0.3, 0.3)


# --------------------------------------------------------------------------------------------------
# 5. score_sample errors
# --------------------------------------------------------------------------------------------------


def test_score_sample_rejects_empty_answers():
    with pytest.raises(ValueError, match="no reference answers"):
        score_sample("qa_f1", "cat", [], context="", question="")
    with pytest.raises(ValueError, match="no reference answers"):
        score_sample("rouge", "cat", [], context="", question="")


@pytest.mark.parametrize("metric", ["f1", "rougeL", "QA_F1", "", "code_sim"])
def test_score_sample_rejects_unknown_metric(metric):
    with pytest.raises(ValueError, match="unknown metric"):
        score_sample(metric, "cat", ["cat"], context="", question="")


def test_metric_table_is_longbench_for_qa_and_summaries():
    table = metrics.LONG_BENCH_METRIC
    assert table == {"qa_f1": qa_f1_score, "rouge": rouge_score}
