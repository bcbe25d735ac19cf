"""Seeded synthetic long-context tasks with a controllable context length.

They feed the embedded default run: no download, known answers, and a difficulty ladder
(one needle, many key-value pairs, a two-step lookup, an extract-everything task scored with
ROUGE as a stand-in for summarization). Rows use LongBench's fields (`input`, `context`,
`answers`, `length`, `dataset`, `_id`), so every later stage treats them like LongBench rows.

All text is lower case with punctuation set off by spaces, so that a word-level tokenizer (the
demo model's) decodes an answer to exactly the gold string.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

TASKS = ("passkey", "kv_retrieval", "multi_hop", "fact_extraction")

_NOUNS = (
    "river",
    "garden",
    "window",
    "market",
    "teacher",
    "engine",
    "forest",
    "letter",
    "bridge",
    "village",
    "doctor",
    "island",
    "kitchen",
    "mountain",
    "painter",
    "school",
    "station",
    "storm",
    "tower",
    "valley",
    "harbor",
    "farmer",
    "library",
    "lantern",
    "meadow",
    "orchard",
    "pilot",
    "sailor",
    "castle",
    "desert",
    "canyon",
    "clock",
    "cottage",
    "dancer",
    "festival",
    "fountain",
    "glacier",
    "hunter",
    "journey",
    "lake",
)
_ADJECTIVES = (
    "old",
    "quiet",
    "bright",
    "small",
    "green",
    "heavy",
    "warm",
    "distant",
    "narrow",
    "gentle",
    "busy",
    "dark",
    "early",
    "empty",
    "golden",
    "hidden",
    "lonely",
    "modern",
    "pale",
    "rapid",
    "silver",
    "simple",
    "strange",
    "tall",
    "wild",
    "young",
    "calm",
    "cold",
    "deep",
    "famous",
)
_VERBS = (
    "watches",
    "follows",
    "finds",
    "visits",
    "crosses",
    "leaves",
    "paints",
    "reaches",
    "guards",
    "passes",
    "builds",
    "carries",
    "greets",
    "hears",
    "joins",
    "opens",
    "remembers",
    "shows",
    "studies",
    "waits near",
)
_ADVERBS = ("slowly", "often", "never", "always", "today", "again", "later", "quietly", "soon", "rarely")
_CITIES = (
    "paris",
    "rome",
    "cairo",
    "lima",
    "oslo",
    "tokyo",
    "delhi",
    "quito",
    "vienna",
    "dublin",
    "madrid",
    "berlin",
    "athens",
    "prague",
    "lisbon",
    "warsaw",
    "seoul",
    "nairobi",
    "havana",
    "boston",
    "denver",
    "sydney",
    "toronto",
    "mumbai",
    "manila",
    "bogota",
    "zurich",
    "helsinki",
    "geneva",
    "kyoto",
)

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _make_names(count: int = 400, seed: int = 1234) -> tuple[str, ...]:
    """Pronounceable two-syllable names used as keys; fixed by the seed, disjoint from real words."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    names = sorted({a + b for a in syllables for b in syllables})
    random.Random(seed).shuffle(names)
    return tuple(names[:count])


NAMES = _make_names()
NUMBERS = tuple(str(i) for i in range(1000))

QA_TEMPLATE = (
    "Read the text below and answer the question . Only give the answer .\n\n"
    "Text : {context}\n\nQuestion : {input}\nAnswer :"
)
EXTRACTION_TEMPLATE = (
    "Read the text below and list every move it reports , in the order given .\n\nText : {context}\n\n{input}\nMoves :"
)


def vocabulary() -> list[str]:
    """Every word the generators and templates can produce (the demo tokenizer's vocabulary)."""
    words: set[str] = set(NAMES) | set(NUMBERS) | set(_CITIES) | set(_NOUNS) | set(_ADJECTIVES)
    words |= set(_ADVERBS)
    for phrase in _VERBS:
        words |= set(phrase.split())
    fixed_text = " ".join(
        [
            QA_TEMPLATE,
            EXTRACTION_TEMPLATE,
            _QUESTIONS_TEXT,
            "the pass key is . remember it . linked to moved code for number and while a name that , ? : ;",
        ]
    )
    words |= set(fixed_text.lower().replace("{context}", " ").replace("{input}", " ").split())
    return sorted(words)


_QUESTIONS_TEXT = (
    "what is the pass key ? what is the code for ? what is the code for the name linked to ? "
    "list every move in the text , in order ."
)


def _filler_sentence(rng: random.Random) -> list[str]:
    shape = rng.randrange(3)
    if shape == 0:
        words = [
            "the",
            rng.choice(_ADJECTIVES),
            rng.choice(_NOUNS),
            *rng.choice(_VERBS).split(),
            "the",
            rng.choice(_NOUNS),
        ]
    elif shape == 1:
        words = [
            "a",
            rng.choice(_NOUNS),
            rng.choice(_ADVERBS),
            *rng.choice(_VERBS).split(),
            "a",
            rng.choice(_ADJECTIVES),
            rng.choice(_NOUNS),
        ]
    else:
        words = [
            "the",
            rng.choice(_NOUNS),
            "is",
            rng.choice(_ADJECTIVES),
            "and",
            "the",
            rng.choice(_NOUNS),
            "is",
            rng.choice(_ADJECTIVES),
        ]
    return [*words, "."]


def _code(rng: random.Random) -> str:
    """A value to retrieve: one number token for the demo tokenizer, several for BPE tokenizers."""
    return str(rng.randrange(1000))


@dataclass(frozen=True)
class _Sample:
    facts: list[list[str]]  # sentences that must appear in the context, in order
    question: str
    answers: list[str]
    needle_index: int  # which fact the question is about (for the depth column)
    followups: list[tuple[str, str]] = ()  # more (question, answer) pairs on the same context
    key_values: dict[str, str] | None = None  # every key of the context's code facts -> its code


def _passkey(rng: random.Random, n_words: int) -> _Sample:
    key = _code(rng)
    fact = f"the pass key is {key} . remember it . {key} is the pass key .".split()
    return _Sample([fact], "what is the pass key ?", [key], 0)


def _kv_pairs(rng: random.Random, n_words: int) -> tuple[list[str], list[str]]:
    n_pairs = max(2, min(len(NAMES) // 2, n_words // 40))
    return rng.sample(NAMES, n_pairs), [_code(rng) for _ in range(n_pairs)]


def _code_fact(name: str, code: str) -> list[str]:
    """The key sits 4 words before its code, as the asked key sits 4 tokens before the answer
    ("... {name} ? answer : <|assistant|>"): one fixed-offset attention head then carries the key to
    both places, and lookup becomes learnable for the small demo model (README, demo model)."""
    return f"the code for {name} is the number {code} .".split()


def _kv_retrieval(rng: random.Random, n_words: int) -> _Sample:
    names, codes = _kv_pairs(rng, n_words)
    facts = [_code_fact(n, c) for n, c in zip(names, codes, strict=True)]
    target, *others = rng.sample(range(len(names)), len(names))
    followups = [(f"what is the code for {names[i]} ?", codes[i]) for i in others]
    return _Sample(
        facts,
        f"what is the code for {names[target]} ?",
        [codes[target]],
        target,
        followups,
        dict(zip(names, codes, strict=True)),
    )


def _multi_hop(rng: random.Random, n_words: int) -> _Sample:
    """`a is linked to b` plus `the code for b is the number ...`: the answer needs two lookups.

    As in the code facts, b sits 4 words after a, as far as the answer position after a in the question."""
    n_links = max(2, n_words // 80)
    names = rng.sample(NAMES, 2 * n_links)
    sources, targets = names[:n_links], names[n_links:]
    codes = [_code(rng) for _ in range(n_links)]
    links = [f"{s} is linked to {t} .".split() for s, t in zip(sources, targets, strict=True)]
    code_facts = [_code_fact(t, c) for t, c in zip(targets, codes, strict=True)]
    facts = links + code_facts
    order = list(range(len(facts)))
    rng.shuffle(order)
    target, *others = rng.sample(range(n_links), n_links)
    question = "what is the code for the name linked to {} ?"
    followups = [(question.format(sources[i]), codes[i]) for i in others]
    return _Sample(
        [facts[i] for i in order],
        question.format(sources[target]),
        [codes[target]],
        order.index(n_links + target),
        followups,
        dict(zip(targets, codes, strict=True)),
    )


def _fact_extraction(rng: random.Random, n_words: int) -> _Sample:
    n_facts = rng.randint(3, 5)
    people = rng.sample(NAMES, n_facts)
    facts = [f"{p} moved to {rng.choice(_CITIES)} .".split() for p in people]
    answer = " ".join(" ".join(f) for f in facts)
    return _Sample(facts, "list every move in the text , in order .", [answer], 0)


_GENERATORS = {
    "passkey": _passkey,
    "kv_retrieval": _kv_retrieval,
    "multi_hop": _multi_hop,
    "fact_extraction": _fact_extraction,
}


def make_sample(
    task: str, n_words: int, rng: random.Random, sample_id: str, followups: int = 0, fact_labels: bool = False
) -> dict:
    """One row: filler sentences up to about `n_words` words with the task's facts at random depths.

    `followups` > 0 adds up to that many further questions on the same context (`followups` field),
    which training uses for denser supervision; benchmark rows have none. `fact_labels` adds
    `fact_labels`: 1 for each context word (whitespace-split) from a fact sentence, 0 for filler, the
    supervision of the demo LLMLingua-2 classifier (`lingua2_demo.py`). Neither option draws from `rng`,
    so the other fields are the same with or without them.

    Lookup rows (kv_retrieval, multi_hop) carry `key_values`: every key of the context's code facts ->
    its code, which `metrics.other_key_value_rate` needs to tell a value of another key from an invented
    one. It is added after the fields that existed before it and draws nothing from `rng`."""
    if task not in _GENERATORS:
        raise ValueError(f"unknown synthetic task {task!r}; allowed: {', '.join(TASKS)}")
    spec = _GENERATORS[task](rng, n_words)
    fact_words = sum(len(f) for f in spec.facts)
    filler: list[list[str]] = []
    total = fact_words
    while total < n_words:
        sentence = _filler_sentence(rng)
        filler.append(sentence)
        total += len(sentence)
    # Facts go between filler sentences at sorted random slots, keeping their order.
    slots = sorted(rng.randint(0, len(filler)) for _ in spec.facts)
    sentences: list[list[str]] = []
    is_fact: list[bool] = []
    needle_sentence = 0
    fact_iter = iter(enumerate(spec.facts))
    pending = next(fact_iter, None)
    for slot in range(len(filler) + 1):
        while pending is not None and slots[pending[0]] == slot:
            if pending[0] == spec.needle_index:
                needle_sentence = len(sentences)
            sentences.append(pending[1])
            is_fact.append(True)
            pending = next(fact_iter, None)
        if slot < len(filler):
            sentences.append(filler[slot])
            is_fact.append(False)
    context = " ".join(" ".join(s) for s in sentences)
    extra = {"key_values": spec.key_values} if spec.key_values is not None else {}
    if followups:
        extra["followups"] = [list(f) for f in spec.followups[:followups]]
    if fact_labels:
        extra["fact_labels"] = [int(fact) for s, fact in zip(sentences, is_fact, strict=True) for _ in s]
    return {
        "_id": sample_id,
        "dataset": task,
        "input": spec.question,
        "context": context,
        "answers": spec.answers,
        "length": len(context.split()),
        "language": "en",
        "all_classes": None,
        "depth": round(needle_sentence / max(1, len(sentences) - 1), 4),
        **extra,
    }


def generate(task: str, n_words: int, n_samples: int, seed: int) -> Iterator[dict]:
    """`n_samples` rows of one task; the same (task, n_words, seed) always gives the same rows."""
    rng = random.Random(f"{task}/{n_words}/{seed}")
    for i in range(n_samples):
        yield make_sample(task, n_words, rng, f"{task}-{n_words}-{seed}-{i}")


def prompt_template(task: str) -> str:
    return EXTRACTION_TEMPLATE if task == "fact_extraction" else QA_TEMPLATE
