"""Quality metrics, LongBench-exact where LongBench defines them.

`normalize_answer`, `f1_score`, `qa_f1_score` and `rouge_score` reproduce THUDM/LongBench
`metrics.py` line for line in behaviour (ROUGE-L from the `rouge` package, errors scored 0), and a
sample's score is the maximum over its reference answers, as in LongBench's `eval.py`. Google's
`rouge-score` ROUGE-L is carried beside it under its own name because the two differ (tokenization,
no stemming in `rouge`), and papers quote either.

Precision and recall are token-level, on LongBench's normalization, taken against the reference that
gives the best F1. The hallucination rate is defined in `hallucination_rate`.
"""

from __future__ import annotations

import math
import random
import re
import string
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
    """Google's `rouge-score` ROUGE-L F (its default tokenizer, no stemming)."""
    global _GOOGLE_SCORER
    if _GOOGLE_SCORER is None:
        from rouge_score import rouge_scorer

        _GOOGLE_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return _GOOGLE_SCORER.score(ground_truth, prediction)["rougeL"].fmeasure


def exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def hallucination_rate(prediction: str, context: str, question: str, answers: Sequence[str]) -> float | None:
    """Share of the prediction's normalized tokens found in none of: the context, the question, any
    reference answer. A token the model could not have copied or been told is unsupported. None for an
    empty prediction (nothing was claimed; such samples are counted separately)."""
    pred = normalize_answer(prediction).split()
    if not pred:
        return None
    support = set(normalize_answer(context).split()) | set(normalize_answer(question).split())
    for answer in answers:
        support |= set(normalize_answer(answer).split())
    return sum(token not in support for token in pred) / len(pred)


LONG_BENCH_METRIC = {"qa_f1": qa_f1_score, "rouge": rouge_score}


def score_sample(metric: str, prediction: str, answers: Sequence[str], context: str, question: str) -> dict:
    """Every metric for one prediction. `score` is LongBench's number for the task (0..1)."""
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
        "hallucination": hallucination_rate(prediction, context, question, answers),
        "empty_prediction": not normalize_answer(prediction),
    }


def longbench_total(scores: Sequence[float]) -> float:
    """LongBench `eval.py`'s dataset number: round(100 * mean, 2)."""
    return round(100 * sum(scores) / len(scores), 2)


def bootstrap_ci(values: Sequence[float], n_resamples: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap confidence interval of the mean; (nan, nan) for no values."""
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(n_resamples))
    lo_index = int((1 - level) / 2 * n_resamples)
    hi_index = min(n_resamples - 1, int((1 + level) / 2 * n_resamples))
    return means[lo_index], means[hi_index]
