"""Quality metrics, LongBench-exact where LongBench defines them.

`normalize_answer`, `f1_score`, `qa_f1_score` and `rouge_score` reproduce THUDM/LongBench
`metrics.py` line for line in behaviour (ROUGE-L from the `rouge` package, errors scored 0), and a
sample's score is the maximum over its reference answers, as in LongBench's `eval.py`. Google's
`rouge-score` ROUGE-L is carried beside it under its own name because the two differ (tokenization,
no stemming in `rouge`), and papers quote either.

Precision and recall are token-level, on LongBench's normalization, taken against the reference that
gives the best F1. The support metrics (`unsupported_token_rate`, `unsupported_entity_rate`,
`other_key_value_rate`) compare a prediction with the content of the prompt the model received (its
context and question, not its templates); docs/metrics.md defines them all.
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
# These compare a text (a prediction, or a gold answer for the reference row) with the *content* of the
# prompt the model received: the context and question after compression and truncation, without the task
# template or the chat template (`lcopt.prompts.prompt_content`). Never with the gold answers.
#
# Words are LongBench's, made Unicode-aware: NFKC (full-width "１０００" is "1000", "ﬁ" is "fi"), case
# folding, ASCII punctuation *deleted* as LongBench's `normalize_answer` deletes it ("1,000" is "1000",
# "U.S." is "us"), every other Unicode punctuation or symbol character ("—", "…", "“", "€") a word break,
# every CJK character a word of its own (Chinese and Japanese have no spaces: "東京" is 東 京), articles
# dropped. On ASCII text `support_tokens(t) == normalize_answer(t).split()`. Because deleting
# punctuation also joins words that the source writes apart ("Smith's" vs "Smith", "well-known" vs "well
# known"), a word or run is also supported when its *pieces* (split at the ASCII punctuation instead)
# occur in the source's pieces.

_ARTICLES = frozenset({"a", "an", "the"})
# Scripts written without spaces between words, compared character by character: Hangul Jamo, CJK
# radicals, Hiragana, Katakana, Bopomofo, Hangul compatibility Jamo, CJK ideographs (extension A, the
# unified block, compatibility ideographs, the supplementary planes' extensions B-H), Hangul syllables.
_CJK_RANGES = (
    (0x1100, 0x11FF),
    (0x2E80, 0x2FDF),
    (0x3005, 0x3007),
    (0x3040, 0x30FF),
    (0x3100, 0x318F),
    (0x31A0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xA960, 0xA97F),
    (0xAC00, 0xD7FF),
    (0xF900, 0xFAFF),
    (0x20000, 0x323AF),
)


def is_cjk(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _CJK_RANGES)


class _Breaks(dict):
    """`str.translate` table, filled per character on first use: non-ASCII punctuation and symbols
    (categories P* and S*) become spaces, CJK characters words of their own; the rest is kept."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        if ch not in _PUNCTUATION and unicodedata.category(ch)[0] in "PS":
            value = " "
        elif is_cjk(ch):
            value = f" {ch} "
        else:
            value = ch
        self[code] = value
        return value


_BREAKS = _Breaks()
_DELETE_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPLIT_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))


def _broken(text: str) -> str:
    """NFKC, with non-ASCII punctuation and symbols as spaces and spaces around CJK characters."""
    return unicodedata.normalize("NFKC", text).translate(_BREAKS)


def _segments(text: str) -> list[str]:
    """`_broken`, case-folded, split at white space; ASCII punctuation still in place."""
    return _broken(text).casefold().split()


def _word(segment: str) -> str:
    return segment.translate(_DELETE_PUNCTUATION)


def _pieces(segment: str) -> list[str]:
    return [p for p in segment.translate(_SPLIT_PUNCTUATION).split() if p not in _ARTICLES]


def support_tokens(text: str) -> list[str]:
    """Words of `text` for support checks: LongBench's normalization (ASCII punctuation deleted, articles
    dropped) after NFKC and case folding, other Unicode punctuation and symbols as spaces, CJK by
    character."""
    return [w for s in _segments(text) if (w := _word(s)) and w not in _ARTICLES]


def _support_pieces(text: str) -> list[str]:
    """Like `support_tokens`, but ASCII punctuation splits words instead of joining them."""
    return [p for s in _segments(text) for p in _pieces(s)]


def _padded(tokens: Sequence[str]) -> str:
    return f" {' '.join(tokens)} "


def _contains(haystack: str, tokens: Sequence[str]) -> bool:
    """Whether `tokens` occur contiguously in `haystack` (a `_padded` token list)."""
    return bool(tokens) and _padded(tokens) in haystack


def _edge_punctuation(token: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation) of a whitespace token."""
    start, end = 0, len(token)
    while start < end and unicodedata.category(token[start])[0] in "PS":
        start += 1
    while end > start and unicodedata.category(token[end - 1])[0] in "PS":
        end -= 1
    return token[:start], token[start:end], token[end:]


class Source:
    """The text support is measured against (a prompt's content), normalized and indexed once: a
    sample's prediction and its gold answers are all checked against it.

    `instructions` is the task template's own text. Its words are neither support nor claims: a model
    that heads its summary "Summary:" or answers "unanswerable" as qasper's template tells it to echoes
    its instructions, it does not invent; such words are not counted (`neutral`)."""

    def __init__(self, text: str, instructions: str = ""):
        self.neutral = frozenset(support_tokens(instructions))
        self._broken = _broken(text)
        segments = self._broken.casefold().split()
        words = [w for s in segments if (w := _word(s)) and w not in _ARTICLES]
        pieces = [p for p in " ".join(segments).translate(_SPLIT_PUNCTUATION).split() if p not in _ARTICLES]
        self.words, self.pieces = frozenset(words), frozenset(pieces)
        self._words_text, self._pieces_text = _padded(words), _padded(pieces)
        self._ordinary: frozenset[str] | None = None

    def has_word(self, segment: str) -> bool:
        """A segment (`_segments`) is supported: its word occurs, or every piece of it does."""
        pieces = _pieces(segment)
        return _word(segment) in self.words or (bool(pieces) and all(p in self.pieces for p in pieces))

    def has_run(self, text: str) -> bool:
        """`text`'s words occur contiguously in the source, joined or split at ASCII punctuation."""
        return _contains(self._words_text, support_tokens(text)) or _contains(self._pieces_text, _support_pieces(text))

    @property
    def ordinary(self) -> frozenset[str]:
        """Words the source writes in lower case (an ordinary word there, not only a name)."""
        if self._ordinary is None:
            lower = (s for s in self._broken.split() if s.lstrip(string.punctuation)[:1].islower())
            self._ordinary = frozenset(_word(s.casefold()) for s in lower)
        return self._ordinary


def as_source(source: str | Source) -> Source:
    return source if isinstance(source, Source) else Source(source)


def unsupported_token_rate(prediction: str, source: str | Source) -> float | None:
    """Share of the prediction's words (`support_tokens`, every occurrence counted) that occur nowhere in
    `source`, the content the model was given. A word the model could not have copied from what it was
    given: invented, or lost to truncation or compression. A word whose pieces (split at ASCII
    punctuation) all occur is supported ("Smith's" by "Smith ... 's"). A copied wrong word counts as
    supported (see the stricter metrics). Words of the task's template (`Source.neutral`) are not
    counted. None when the prediction has no other word (an empty prediction claims nothing; counted as
    `n_empty_predictions`)."""
    source = as_source(source)
    segments = [s for s in _segments(prediction) if (w := _word(s)) and w not in _ARTICLES | source.neutral]
    if not segments:
        return None
    return sum(not source.has_word(s) for s in segments) / len(segments)


_SENTENCE_ENDS = frozenset(".!?。")
# Never names: the answer words of LongBench's QA tasks and the pronoun I ("I do not know", "Yes").
ANSWER_WORDS = frozenset({"yes", "no", "unanswerable", "i"})
# English closed-class words (pronouns, determiners, prepositions, conjunctions, auxiliaries) and
# sentence adverbs: capitalized only because they start a sentence, so not names there ("In 1999",
# "However, Smith"). Inside a sentence they stay capitalized names' words ("Will Smith", "in May").
_FUNCTION_WORDS = """
    a an the me my myself we us our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves one what which who whom whose whatever whoever
    this that these those all any both each either neither every few many much more most other another some
    such none own same several am is are was were be been being have has had having do does did doing can
    could may might must shall should will would about above across after against along amid among around
    as at before behind below beneath beside besides between beyond by despite down during except for from
    in inside into like near of off on onto out outside over past per since through throughout till to
    toward towards under underneath unlike until up upon via with within without and but or nor so yet if
    because although though while whereas unless whether once than then not only very too also just now
    here there when where why how again further still even however meanwhile moreover furthermore therefore
    thus hence instead otherwise overall additionally finally first second third lastly later earlier today
    yesterday tomorrow currently previously recently ultimately indeed perhaps similarly likewise
    nevertheless nonetheless accordingly consequently namely specifically notably according im ive ill id
    youre youve youll youd hes shes theyre theyve weve dont doesnt didnt isnt arent wasnt werent cant
    couldnt wont wouldnt shouldnt hasnt havent hadnt lets thats theres heres whats whos
"""
FUNCTION_WORDS = ANSWER_WORDS | frozenset(_FUNCTION_WORDS.split())
_POSSESSIVE = ("'s", "\u2019s")


def _is_answer_word(core: str) -> bool:
    """Yes/No/Unanswerable, or the pronoun I (also in I'm, I'll, I've, I'd)."""
    return _word(core.casefold()) in ANSWER_WORDS or core == "I" or core[:2] in ("I'", "I\u2019")


def entities(prediction: str) -> list[tuple[str, bool]]:
    """Numbers and capitalized names of a text, as (their text, starts a sentence). The rule:

    - text is NFKC-normalized; CJK characters and dashes other than "-" separate tokens (CJK has no
      capitals: only its numbers count); a token is a whitespace-separated word without its leading and
      trailing punctuation;
    - a **number** is a token with a digit ("1,000", "3.5", "$5" is "5");
    - a **name** is a run of consecutive capitalized tokens without a digit, broken by punctuation at
      a token's edge ("New York City"; "Paris, France" is two names), with a possessive ending ('s)
      cut off ("Smith's" is "Smith");
    - **not names**: answer words and the pronoun I (`ANSWER_WORDS`: "Yes", "No", "Unanswerable", "I",
      "I'm") anywhere, and a function word (`FUNCTION_WORDS`: "The", "In", "However", "It") written
      with only its first letter capital because it starts a sentence (the first token of a line or one
      after . ! ? 。) is dropped from the front of its run ("In Paris" is "Paris"; "US" stays a name).
    """
    found: list[tuple[str, bool]] = []
    run: list[str] = []
    run_starts_sentence = False

    def flush() -> None:
        nonlocal run, run_starts_sentence
        first = run[0] if run else ""
        if run_starts_sentence and first[1:] == first[1:].lower() and _word(first.casefold()) in FUNCTION_WORDS:
            run, run_starts_sentence = run[1:], False
        if support_tokens(" ".join(run)):
            found.append((" ".join(run), run_starts_sentence))
        run = []

    text = "".join(
        " " if is_cjk(ch) else f" {ch} " if ch != "-" and unicodedata.category(ch) == "Pd" else ch
        for ch in unicodedata.normalize("NFKC", prediction)
    )
    for line in text.splitlines():
        sentence_start = True
        for raw in line.split():
            lead, core, trail = _edge_punctuation(raw)
            if lead:
                flush()
            is_number = any(ch.isdigit() for ch in core)
            if core[:1].isupper() and not is_number and not _is_answer_word(core):
                if not run:
                    run_starts_sentence = sentence_start
                possessive = core.endswith(_POSSESSIVE)
                run.append(core[:-2] if possessive else core)
                if possessive:
                    flush()
            else:
                flush()
            if is_number and support_tokens(core):
                found.append((core, sentence_start))
            if trail:
                flush()
            sentence_start = bool(_SENTENCE_ENDS & set(trail))
        flush()
    return found


def unsupported_entity_rate(prediction: str, source: str | Source) -> float | None:
    """Share of the text's numbers and names (`entities`) that do not occur in `source` as a contiguous
    run of words (`Source.has_run`). A name that starts a sentence may carry an ordinary word capitalized
    in front of it ("Suddenly Smith left"): it is also supported when that first word occurs in the
    source in lower case and the rest occurs as a run. Stricter than `unsupported_token_rate`: "John
    Smith" is unsupported in a text about John Doe and Mary Smith. None when the text has none (nothing
    to check); an entity made of the template's words only ("Summary") is not counted."""
    source = as_source(source)
    found = [(text, start) for text, start in entities(prediction) if not set(support_tokens(text)) <= source.neutral]
    if not found:
        return None

    def supported(text: str, starts_sentence: bool) -> bool:
        if source.has_run(text):
            return True
        first, _, rest = text.partition(" ")
        return starts_sentence and bool(rest) and set(support_tokens(first)) <= source.ordinary and source.has_run(rest)

    return sum(not supported(text, start) for text, start in found) / len(found)


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


def score_sample(metric: str, prediction: str, answers: Sequence[str], source: str | Source) -> dict:
    """Every metric for one prediction; `source` is the content of the prompt the model received (see the
    support metrics). `score` is LongBench's number for the task (0..1)."""
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
        "unsupported_token_rate": unsupported_token_rate(prediction, source),
        "empty_prediction": not support_tokens(prediction),
    }


def longbench_total(scores: Sequence[float]) -> float:
    """LongBench `eval.py`'s dataset number: round(100 * mean, 2)."""
    return round(100 * sum(scores) / len(scores), 2)
