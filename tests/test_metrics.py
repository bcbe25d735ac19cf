"""Unit tests for lcopt.metrics.

The `_ref_*` functions below are THUDM/LongBench's `metrics.py` (and `eval.py`'s scoring rules) copied
verbatim, so that lcopt's LongBench-exact metrics can be checked against them on real LongBench data.
"""

import json
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
    Source,
    entities,
    exact_match,
    f1_score,
    longbench_total,
    normalize_answer,
    other_key_value_rate,
    precision_recall,
    qa_f1_score,
    rouge_l_google,
    rouge_score,
    score_sample,
    support_tokens,
    unsupported_entity_rate,
    unsupported_token_rate,
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


def test_unsupported_token_rate_hand_example():
    prompt = "Paris is the capital of France.\n\nQuestion: What is the capital of France?"
    # prediction -> [paris, is, capital, of, germany] (article dropped); only "germany" is unsupported -> 1/5
    assert unsupported_token_rate("Paris is the capital of Germany", prompt) == pytest.approx(0.2)
    # every occurrence counts: [germany, germany, paris] -> 2/3
    assert unsupported_token_rate("Germany, Germany; Paris", prompt) == pytest.approx(2 / 3)
    # the question is part of the prompt ("what"); case and punctuation do not matter
    assert unsupported_token_rate("WHAT? france!", prompt) == 0.0
    assert unsupported_token_rate("what lyon France", "") == 1.0
    # nothing claimed -> None (also after normalization)
    assert unsupported_token_rate("", prompt) is None
    assert unsupported_token_rate("The.", prompt) is None


def test_unsupported_token_rate_ignores_the_gold_answers():
    """A gold answer that the prompt does not contain (cut by truncation or compression) is not support:
    score_sample gets no context, question or answers, only the prompt the model received."""
    result = score_sample("qa_f1", "Lyon", ["Lyon"], source="What is the second city of France?")
    assert result["score"] == 1.0 and result["unsupported_token_rate"] == 1.0
    assert score_sample("qa_f1", "Lyon", ["Nice"], source="Lyon or Nice?")["unsupported_token_rate"] == 0.0


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("— … “ ”", []),  # Unicode punctuation only: no word (LongBench's normalization keeps “ ”)
        ("«Paris»", ["paris"]),
        ("Café", ["café"]),
        ("Cafe\u0301", ["café"]),  # NFD (e + combining acute) is the NFC word
        ("Straße", ["strasse"]),  # case-folded
        ("an apple — the end", ["apple", "end"]),
        # ASCII punctuation is deleted, as LongBench deletes it; other symbols break words
        ("brown-fox 3.5 $5 €20", ["brownfox", "35", "5", "20"]),
        ("1,000 U.S.", ["1000", "us"]),
        ("１，０００ ＵＳ", ["1000", "us"]),  # NFKC: full-width digits, comma and letters
        ("東京は首都です", ["東", "京", "は", "首", "都", "で", "す"]),  # CJK by character
        ("서울은 2023年", ["서", "울", "은", "2023", "年"]),
    ],
)
def test_support_tokens_normalize_unicode(prediction, expected):
    assert support_tokens(prediction) == expected


def test_unicode_edge_inputs_of_the_support_metric():
    prompt = "Le café est à Paris . Question : où est le café ?"
    # only punctuation: empty, no rate (was 1.0: LongBench's normalization keeps the Unicode marks)
    assert unsupported_token_rate("— … “ ”", prompt) is None
    assert score_sample("qa_f1", "— … “ ”", ["paris"], prompt)["empty_prediction"] is True
    # the same word in NFD and NFC is one word
    nfd = "cafe\u0301"
    assert nfd != "café" and unsupported_token_rate(nfd, prompt) == 0.0
    assert unsupported_token_rate("café", prompt.replace("café", nfd)) == 0.0
    assert unsupported_token_rate("“Paris”…", prompt) == 0.0


def test_numbers_and_abbreviations_are_supported_as_longbench_normalizes_them():
    """Issue 21: "1,000" was unsupported by "1000" (LongBench's F1 treats them as equal), full-width
    digits and "U.S." vs "US" likewise."""
    source = "About 1000 people joined the US protest on 3 May; the U.S. Army counted 2,500."
    for prediction in ("1,000", "１０００", "1000", "2500", "２，５００"):
        assert unsupported_token_rate(prediction, source) == 0.0, prediction
        assert unsupported_entity_rate(prediction, source) == 0.0, prediction
    for prediction in ("U.S.", "US", "Ｕ.Ｓ.", "U.S. Army", "US Army"):
        assert unsupported_entity_rate(prediction, source) == 0.0, prediction
    assert unsupported_entity_rate("10,000", source) == 1.0 and unsupported_token_rate("10,000", source) == 1.0
    assert unsupported_entity_rate("UK Army", source) == 1.0
    # a word that deleting punctuation would join is still supported by its pieces
    assert unsupported_token_rate("Smith's well-known dog", "Smith is well known; the dog's name") == 0.0
    assert unsupported_entity_rate("Smith's", "Smith is well known") == 0.0


def test_support_words_are_longbench_words_on_ascii_text():
    """On ASCII text the support words are exactly LongBench's `normalize_answer(...).split()` (plus NFKC,
    which ASCII does not change): real LongBench answers and questions."""
    texts = [t for name in _QA_DATASETS for r in _load_answers_only(name) for t in (r["input"], *r["answers"])]
    texts = [t for t in texts if t.isascii()]
    assert len(texts) > 1000
    for text in texts:
        assert support_tokens(text) == _ref_normalize_answer(text).split(), text[:200]


def test_cjk_is_compared_by_character():
    """Issue 21: "東京" inside "東京は首都です" was unsupported (no spaces, so one word)."""
    assert unsupported_token_rate("東京", "東京は首都です") == 0.0
    assert unsupported_token_rate("東京です", "東京は首都です") == 0.0
    assert unsupported_token_rate("大阪", "東京は首都です") == 1.0
    assert unsupported_token_rate("東大阪", "東京は首都です") == pytest.approx(2 / 3)
    # numbers inside CJK text are entities of their own, checked against the source
    assert entities("東京は2023年に") == [("2023", True)]  # the CJK before it is no word: it starts the text
    assert unsupported_entity_rate("東京は2023年に", "2023年の東京") == 0.0
    assert unsupported_entity_rate("東京は2024年に", "2023年の東京") == 1.0


def test_entities_are_numbers_and_capitalized_runs():
    found = entities("The Eiffel Tower, built in 1889, stands in Paris. When Smith left, 1,000 people cheered.")
    assert found == [
        ("Eiffel Tower", False),  # the sentence-initial "The" is dropped, the run goes on
        ("1889", False),
        ("Paris", False),
        ("Smith", False),  # "When" starts the sentence and is a function word: not a name
        ("1,000", False),
    ]
    assert entities("paris in the spring") == []
    assert entities("New York City") == [("New York City", True)]
    assert entities("Paris, France") == [("Paris", True), ("France", False)]
    assert entities("— …") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # answer words and the pronoun I are never names (issue 21: "I do not know" scored 1.0)
        ("I do not know", []),
        ("Yes", []),
        ("No.", []),
        ("YES, it is", []),
        ("Unanswerable", []),
        ("Then I'm sure I’ll go", []),
        ("I think Paris", [("Paris", False)]),
        # a function word capitalized because it starts a sentence (or a line) is not a name
        ("However, Smith won. In 1999 it rained.", [("Smith", False), ("1999", False)]),
        ("In Paris\nAccording to Reuters", [("Paris", False), ("Reuters", False)]),
        ("It was here.", []),
        # ...but stays part of a name inside a sentence, and an all-capitals word is an acronym
        ("He met Will Smith in May", [("Will Smith", False), ("May", False)]),
        ("US troops left. IT staff stayed.", [("US", True), ("IT", True)]),
        # a sentence-initial word that is not a function word stays (checked against the source)
        ("Suddenly Smith left", [("Suddenly Smith", True)]),
        # possessives and dashes
        ("Smith's dog met Jones’ cat", [("Smith", True), ("Jones", False)]),
        ("it cost 98—because of Rome", [("98", False), ("Rome", False)]),
    ],
)
def test_which_words_are_entities(text, expected):
    assert entities(text) == expected


def test_answer_words_are_not_unsupported_names():
    source = "The passages name Ruth Smith and Paris."
    assert unsupported_entity_rate("I do not know", source) is None  # was 1.0
    assert unsupported_entity_rate("Yes", source) is None  # a hotpotqa yes/no answer checks nothing
    assert unsupported_entity_rate("No", source) is None
    assert unsupported_entity_rate("Yes, Ruth Smith", source) == 0.0
    assert unsupported_entity_rate("No, John Smith", source) == 1.0


def test_real_hotpotqa_yes_no_answers_have_no_entity():
    answers = [a for r in _load_answers_only("hotpotqa") for a in r["answers"]]
    yes_no = [a for a in answers if a.strip().lower() in ("yes", "no")]
    assert len(yes_no) >= 10
    for answer in yes_no:
        for written in (answer, answer.capitalize(), answer.upper(), answer.capitalize() + "."):
            assert entities(written) == [] and unsupported_entity_rate(written, "anything") is None
    # the other answers are names and numbers, still checked
    assert sum(bool(entities(a)) for a in answers) >= 0.8 * len(answers)


def test_unsupported_entity_rate_hand_example():
    prompt = "John Doe met Mary Smith in Paris in 1999 . Question : who did John Doe meet suddenly ?"
    # entities: [mary smith] supported -> 0/1
    assert unsupported_entity_rate("Mary Smith", prompt) == 0.0
    # [john smith] is not a run of the prompt, although both words are in it -> 1/1
    assert unsupported_entity_rate("John Smith", prompt) == 1.0
    assert unsupported_entity_rate("It was John Smith", prompt) == 1.0
    assert unsupported_token_rate("John Smith", prompt) == 0.0  # the token rate cannot see it
    # [mary smith] ok, [london] not, [1999] ok, [2001] not -> 2/4
    assert unsupported_entity_rate("Mary Smith, in London in 1999 or 2001", prompt) == pytest.approx(0.5)
    # a sentence-initial word before a name that the prompt writes in lower case ("suddenly") is an
    # ordinary word: "Mary Smith" follows as a run -> supported; "Later" is a function word (dropped);
    # "Meanwhile" is one too; "Quietly" is neither in the prompt nor a function word -> unsupported
    assert unsupported_entity_rate("Suddenly Mary Smith", prompt) == 0.0
    assert unsupported_entity_rate("Later Mary Smith", prompt) == 0.0
    assert unsupported_entity_rate("Quietly Mary Smith", prompt) == 1.0
    # nothing to check -> None
    assert unsupported_entity_rate("she did", prompt) is None
    assert unsupported_entity_rate("", prompt) is None


def test_the_template_s_own_words_are_neither_support_nor_claims():
    """Words of the task template (`Source(..., instructions=)`) are not counted: a summary headed
    "Summary:" echoes its instructions, it does not invent."""
    template = "Write a one-page summary of all news.\n\nNews:\n{context}\n\nSummary:"
    instructions = template.format(context="\n")
    source = Source("Occupy protesters left City Hall on Sunday.", instructions)
    assert unsupported_token_rate("Summary: protesters left", source) == 0.0
    assert unsupported_token_rate("Summary: protesters left", "Occupy protesters left City Hall.") == pytest.approx(
        1 / 3
    )
    assert unsupported_entity_rate("Summary:\n\nOccupy protesters left City Hall", source) == 0.0
    assert unsupported_entity_rate("Summary", source) is None
    # the template's words support nothing: a name not in the content stays unsupported
    assert unsupported_entity_rate("Write News Corp", source) == 1.0
    assert unsupported_token_rate("Summary", source) is None


def test_other_key_value_rate_hand_example():
    key_values = {"bofa": "12", "kapi": "907", "muse": "12"}
    # asked for bofa (12); "907" belongs to kapi -> 1
    assert other_key_value_rate("907", ["12"], key_values) == 1.0
    assert other_key_value_rate("the code is 907 .", ["12"], key_values) == 1.0
    # the right value, or a value no key has -> 0; a value shared with the asked key's is not another's
    assert other_key_value_rate("12", ["12"], key_values) == 0.0
    assert other_key_value_rate("555", ["12"], key_values) == 0.0
    assert other_key_value_rate("1907", ["12"], key_values) == 0.0  # whole words only
    assert other_key_value_rate("", ["12"], key_values) is None


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


def test_entity_rate_tells_a_summary_s_own_source_from_another_on_multi_news():
    """Reference summaries against their own news (a few names and numbers the writers added) and against
    the next sample's news: the entity rate separates the two far more than the token rate."""
    rows = _load_multi_news()[:30]
    pairs = [(r["answers"][0], r["context"], rows[(i + 1) % len(rows)]["context"]) for i, r in enumerate(rows)]

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values)

    own = [unsupported_entity_rate(summary, context) for summary, context, _ in pairs]
    other = [unsupported_entity_rate(summary, context) for summary, _, context in pairs]
    assert sum(a < b for a, b in zip(own, other, strict=True)) >= 28
    assert mean(own) < 0.35 < 0.6 < mean(other)  # measured: 0.23 and 0.81
    token_gap = mean(unsupported_token_rate(s, o) for s, _, o in pairs) - mean(
        unsupported_token_rate(s, c) for s, c, _ in pairs
    )
    assert mean(other) - mean(own) > token_gap  # measured: 0.58 vs 0.34


# --------------------------------------------------------------------------------------------------
# 3. score_sample: max over references; both ROUGE-L implementations carried
# --------------------------------------------------------------------------------------------------


def test_score_sample_hand_multi_reference():
    # vs "cat": P = 1/2, R = 1, F1 = 2/3; vs "cat sat down": P = 1, R = 2/3, F1 = 4/5 (best)
    result = score_sample("qa_f1", "the cat sat", ["cat", "cat sat down"], source="the cat sat on the mat")
    assert result["score"] == pytest.approx(0.8)
    assert result["f1"] == pytest.approx(0.8)
    assert result["precision"] == pytest.approx(1.0)  # of the best-F1 reference, not of "cat"
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["exact_match"] == 0.0
    assert result["empty_prediction"] is False
    assert result["unsupported_token_rate"] == 0.0
    # exact match is the max over references too
    assert score_sample("qa_f1", "Cat.", ["dog", "the cat"], "")["exact_match"] == 1.0


def test_score_sample_empty_prediction_flags():
    result = score_sample("qa_f1", "The.", ["cat"], source="cat what?")
    assert result["empty_prediction"] is True
    assert result["unsupported_token_rate"] is None
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
            result = score_sample("qa_f1", pred, answers, source=row["input"])
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
            result = score_sample("rouge", pred, gold, source=row["context"] + row["input"])
            ref = _ref_sample_score(_ref_rouge_score, pred, gold)
            google = max(scorer.score(g, pred)["rougeL"].fmeasure for g in gold)
            assert result["score"] == ref
            assert result["rouge_l"] == ref
            assert result["rouge_l_google"] == pytest.approx(google, abs=1e-12)
            assert rouge_l_google(pred, gold[0]) == pytest.approx(google, abs=1e-12)
            differ += abs(result["rouge_l"] - result["rouge_l_google"]) > 1e-3
            assert result["unsupported_token_rate"] is not None and 0.0 <= result["unsupported_token_rate"] <= 1.0
            assert isinstance(result["rouge_l_google"], float)
    assert differ >= 1, "rouge (LongBench) and rouge-score ROUGE-L should disagree on real summaries"


def test_rouge_l_google_hand_value():
    # LCS("the cat sat on the mat", "the cat lay on the mat") = the cat on the mat = 5 of 6 each -> 5/6
    assert rouge_l_google("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    assert rouge_l_google("", "the cat") == 0.0


@pytest.mark.parametrize(("prediction", "reference"), [("", "the cat"), ("—…", "the cat"), ("東京", "東京"), ("x", "")])
def test_rouge_l_google_is_a_float_when_a_side_has_no_ascii_word(prediction, reference):
    """rouge-score returns the integer 0 when its tokenizer finds nothing (its default tokenizer keeps
    only ASCII letters and digits, so non-ASCII text counts as nothing, even identical text)."""
    value = rouge_l_google(prediction, reference)
    assert type(value) is float and value == 0.0
    assert type(score_sample("rouge", prediction or "x", [reference or "y"], "")["rouge_l_google"]) is float


# --------------------------------------------------------------------------------------------------
# 5. score_sample errors
# --------------------------------------------------------------------------------------------------


def test_score_sample_rejects_empty_answers():
    with pytest.raises(ValueError, match="no reference answers"):
        score_sample("qa_f1", "cat", [], source="")
    with pytest.raises(ValueError, match="no reference answers"):
        score_sample("rouge", "cat", [], source="")


@pytest.mark.parametrize("metric", ["f1", "rougeL", "QA_F1", "", "code_sim"])
def test_score_sample_rejects_unknown_metric(metric):
    with pytest.raises(ValueError, match="unknown metric"):
        score_sample(metric, "cat", ["cat"], source="")


def test_metric_table_is_longbench_for_qa_and_summaries():
    table = metrics.LONG_BENCH_METRIC
    assert table == {"qa_f1": qa_f1_score, "rouge": rouge_score}
