"""Quality metrics, LongBench-exact where LongBench defines them.

`normalize_answer`, `f1_score`, `qa_f1_score` and `rouge_score` reproduce THUDM/LongBench
`metrics.py` line for line in behaviour (ROUGE-L from the `rouge` package, errors scored 0), and a
sample's score is the maximum over its reference answers, as in LongBench's `eval.py`. Google's
`rouge-score` ROUGE-L is carried beside it under its own name because the two differ (tokenization,
no stemming in `rouge`), and papers quote either.

Precision and recall are token-level, on LongBench's normalization, taken against the reference that
gives the best F1. The support metrics (`unsupported_token_rate`, `unsupported_entity_rate`,
`other_key_value_rate`) compare a prediction with the prompt the model received; docs/metrics.md
defines them all.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """LongBench/SQuAD: lower case, drop punctuation, drop articles, fold white space."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _overlap(prediction_tokens: Sequence[str], ground_truth_tokens: Sequence[str]) -> int:
    return sum((Counter(prediction_tokens) & Counter(ground_truth_tokens)).values())


def f1_score(prediction_tokens: Sequence[str], ground_truth_tokens: Sequence[str]) -> float:
    num_same = _overlap(prediction_tokens, ground_truth_tokens)
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


def precision_recall(prediction: str, ground_truth: str) -> tuple[float, float]:
    """Token precision and recall after LongBench normalization (0 for an empty side)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    num_same = _overlap(pred, gold)
    return (num_same / len(pred) if pred else 0.0, num_same / len(gold) if gold else 0.0)


def qa_f1_score(prediction: str, ground_truth: str) -> float:
    return f1_score(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def rouge_score(prediction: str, ground_truth: str) -> float:
    """LongBench's ROUGE-L F: the `rouge` package, any error (e.g. an empty side) scored 0."""
    from rouge import Rouge

    try:
        scores = Rouge().get_scores([prediction], [ground_truth], avg=True)
    except Exception:  # LongBench uses a bare except here; keep its behaviour
        return 0.0
    return scores["rouge-l"]["f"]


_GOOGLE_SCORER = None


def rouge_l_google(prediction: str, ground_truth: str) -> float:
    """Google's `rouge-score` ROUGE-L F (its default tokenizer, no stemming), as a float.

    That tokenizer lower-cases, replaces every character other than ASCII a-z and 0-9 by a space and
    drops the rest: non-ASCII text is ignored entirely ("café" is "caf", Chinese is nothing). A side
    with no ASCII letter or digit scores 0.0 (rouge-score returns the integer 0 there)."""
    global _GOOGLE_SCORER
    if _GOOGLE_SCORER is None:
        from rouge_score import rouge_scorer

        _GOOGLE_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(_GOOGLE_SCORER.score(ground_truth, prediction)["rougeL"].fmeasure)


def exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


# --- support metrics: is what the model said in what it was given? ----------------------------------
# These compare the prediction with the prompt the model received (after truncation, compression and
# the chat template), never with the gold answers. Text is compared after `support_tokens`, which
# unlike LongBench's `normalize_answer` knows Unicode: NFC (so NFD and NFC spellings of a word are one
# word), case folding, and every Unicode punctuation or symbol character (categories P* and S*: "—",
# "…", "“", "”", "€", as well as ASCII's) as a word break.

_ARTICLES = frozenset({"a", "an", "the"})


def support_tokens(text: str) -> list[str]:
    """Words of `text` for support checks: NFC, case-folded, Unicode punctuation and symbols as spaces,
    articles dropped (as LongBench drops them)."""
    text = unicodedata.normalize("NFC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return [t for t in text.split() if t not in _ARTICLES]


def _contains(haystack: str, tokens: Sequence[str]) -> bool:
    """Whether `tokens` occur contiguously in `haystack` (tokens joined by single spaces, padded)."""
    return f" {' '.join(tokens)} " in haystack


def _padded(tokens: Sequence[str]) -> str:
    return f" {' '.join(tokens)} "


def unsupported_token_rate(prediction: str, prompt: str) -> float | None:
    """Share of the prediction's words (`support_tokens`, every occurrence counted) that occur nowhere in
    `prompt`, the exact text the model received. A word the model could not have copied from what it was
    given: invented, or lost to truncation or compression. A copied wrong word counts as supported (see
    the stricter metrics). None when the prediction has no word (an empty prediction claims nothing;
    counted as `n_empty_predictions`)."""
    pred = support_tokens(prediction)
    if not pred:
        return None
    seen = set(support_tokens(prompt))
    return sum(token not in seen for token in pred) / len(pred)


def _edge_punctuation(token: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation) of a whitespace token."""
    start, end = 0, len(token)
    while start < end and unicodedata.category(token[start])[0] in "PS":
        start += 1
    while end > start and unicodedata.category(token[end - 1])[0] in "PS":
        end -= 1
    return token[:start], token[start:end], token[end:]


_SENTENCE_ENDS = frozenset(".!?…")


def entities(prediction: str) -> list[tuple[list[str], bool]]:
    """Numbers and capitalized names of a prediction, as (`support_tokens` of it, starts a sentence).

    A number is a whitespace token with a digit ("1,000", "3.5", "$5"); a name is a run of consecutive
    capitalized tokens not broken by punctuation ("New York City"; "Paris, France" is two). Matching
    is by Unicode: NFC, `str.isupper` on the first character."""
    found: list[tuple[list[str], bool]] = []
    run: list[str] = []
    run_starts_sentence = False
    sentence_start = True

    def flush() -> None:
        nonlocal run
        tokens = support_tokens(" ".join(run))
        if tokens:
            found.append((tokens, run_starts_sentence))
        run = []

    for raw in unicodedata.normalize("NFC", prediction).split():
        lead, core, trail = _edge_punctuation(raw)
        if lead:
            flush()
        is_number = any(ch.isdigit() for ch in core)
        if core[:1].isupper() and not is_number:
            if not run:
                run_starts_sentence = sentence_start
            run.append(core)
        else:
            flush()
        if is_number and support_tokens(core):
            found.append((support_tokens(core), sentence_start))
        if trail:
            flush()
        sentence_start = bool(_SENTENCE_ENDS & set(trail))
    flush()
    return found


def unsupported_entity_rate(prediction: str, prompt: str) -> float | None:
    """Share of the prediction's numbers and capitalized names (`entities`) that do not occur in `prompt`
    as a contiguous run of words. A name that starts a sentence may carry an ordinary word capitalized
    in front of it ("When Smith left"): it is also supported when that first word occurs in the prompt
    in lower case (an ordinary word there) and the rest occurs as a run. Stricter than
    `unsupported_token_rate`: "John Smith" is unsupported in a text about John Doe and Mary Smith.
    None when the prediction has none (nothing to check)."""
    found = entities(prediction)
    if not found:
        return None
    text = _padded(support_tokens(prompt))
    ordinary = set()  # words the prompt writes in lower case
    for raw in unicodedata.normalize("NFC", prompt).split():
        core = _edge_punctuation(raw)[1]
        if core[:1].islower():
            ordinary.update(support_tokens(core))

    def supported(tokens: list[str], starts_sentence: bool) -> bool:
        if _contains(text, tokens):
            return True
        return starts_sentence and len(tokens) > 1 and tokens[0] in ordinary and _contains(text, tokens[1:])

    return sum(not supported(tokens, start) for tokens, start in found) / len(found)


def other_key_value_rate(prediction: str, answers: Sequence[str], key_values: dict[str, str]) -> float | None:
    """1.0 when the prediction names the value of another key (a value of `key_values` that is none of
    the gold answers) as a contiguous run of words, else 0.0: a synthetic lookup answered from the wrong
    fact, which `unsupported_token_rate` counts as supported because the value is in the prompt. None for
    an empty prediction."""
    pred = support_tokens(prediction)
    if not pred:
        return None
    gold = {tuple(support_tokens(a)) for a in answers}
    others = {tuple(support_tokens(v)) for v in key_values.values()} - gold - {()}
    text = _padded(pred)
    return float(any(_contains(text, value) for value in others))


LONG_BENCH_METRIC = {"qa_f1": qa_f1_score, "rouge": rouge_score}


def score_sample(metric: str, prediction: str, answers: Sequence[str], prompt: str) -> dict:
    """Every metric for one prediction; `prompt` is the text the model received. `score` is LongBench's
    number for the task (0..1)."""
    if metric not in LONG_BENCH_METRIC:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(LONG_BENCH_METRIC)}")
    if not answers:
        raise ValueError("sample has no reference answers; it cannot be scored")
    main = LONG_BENCH_METRIC[metric]
    f1s = [qa_f1_score(prediction, a) for a in answers]
    best = max(range(len(answers)), key=f1s.__getitem__)
    precision, recall = precision_recall(prediction, answers[best])
    return {
        "score": max(main(prediction, a) for a in answers),
        "f1": f1s[best],
        "precision": precision,
        "recall": recall,
        "exact_match": max(exact_match(prediction, a) for a in answers),
        "rouge_l": max(rouge_score(prediction, a) for a in answers),
        "rouge_l_google": max(rouge_l_google(prediction, a) for a in answers),
        "unsupported_token_rate": unsupported_token_rate(prediction, prompt),
        "empty_prediction": not support_tokens(prediction),
    }


def longbench_total(scores: Sequence[float]) -> float:
    """LongBench `eval.py`'s dataset number: round(100 * mean, 2)."""
    return round(100 * sum(scores) / len(scores), 2)
