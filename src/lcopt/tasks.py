"""What each task is: its prompt template, generation budget and the metric LongBench scores it with.

The LongBench entries are copied from THUDM/LongBench `LongBench/config/dataset2prompt.json` (byte for
byte, typos included: narrativeqa's "asconcisely"), `dataset2maxlen.json` and `eval.py`'s
`dataset2metric`, so that a prediction made here gets the number LongBench's own evaluation gives it;
tests/data/longbench_config.json holds the official text they are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lcopt import synthetic

MetricFamily = Literal["qa_f1", "rouge"]
# The stricter support metric a task has (docs/metrics.md): numbers and names of the prediction checked
# against the prompt, or a lookup answered with another key's value.
StrictSupport = Literal["unsupported_entity_rate", "other_key_value_rate"]


@dataclass(frozen=True)
class Task:
    name: str
    template: str  # str.format with {context} and {input}
    max_new_tokens: int
    metric: MetricFamily
    family: str  # single-doc QA, multi-doc QA, summarization, synthetic retrieval, ...
    strict_support: StrictSupport | None = None


_ANSWER_PASSAGES = (
    "Answer the question based on the given passages. Only give me the answer and do not output any "
    "other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the "
    "given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\n"
    "Answer:"
)

LONGBENCH: dict[str, Task] = {
    "narrativeqa": Task(
        "narrativeqa",
        "You are given a story, which can be either a novel or a movie script, and a question. Answer the "
        "question asconcisely as you can, using a single phrase if possible. Do not provide any "
        "explanation.\n\nStory: {context}\n\nNow, answer the question based on the story asconcisely as "
        "you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}"
        "\n\nAnswer:",
        128,
        "qa_f1",
        "single-doc QA",
        "unsupported_entity_rate",
    ),
    "qasper": Task(
        "qasper",
        "You are given a scientific article and a question. Answer the question as concisely as you can, "
        "using a single phrase or sentence if possible. If the question cannot be answered based on the "
        'information in the article, write "unanswerable". If the question is a yes/no question, answer '
        '"yes", "no", or "unanswerable". Do not provide any explanation.\n\nArticle: {context}\n\n Answer '
        "the question based on the above article as concisely as you can, using a single phrase or "
        "sentence if possible. If the question cannot be answered based on the information in the "
        'article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or '
        '"unanswerable". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:',
        128,
        "qa_f1",
        "single-doc QA",
        "unsupported_entity_rate",
    ),
    "hotpotqa": Task("hotpotqa", _ANSWER_PASSAGES, 32, "qa_f1", "multi-doc QA", "unsupported_entity_rate"),
    "2wikimqa": Task("2wikimqa", _ANSWER_PASSAGES, 32, "qa_f1", "multi-doc QA", "unsupported_entity_rate"),
    "gov_report": Task(
        "gov_report",
        "You are given a report by a government agency. Write a one-page summary of the report.\n\n"
        "Report:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
        512,
        "rouge",
        "summarization",
        "unsupported_entity_rate",
    ),
    "multi_news": Task(
        "multi_news",
        "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}"
        "\n\nNow, write a one-page summary of all the news.\n\nSummary:",
        512,
        "rouge",
        "summarization",
        "unsupported_entity_rate",
    ),
}

SYNTHETIC: dict[str, Task] = {
    "passkey": Task("passkey", synthetic.QA_TEMPLATE, 8, "qa_f1", "synthetic retrieval"),
    "kv_retrieval": Task(
        "kv_retrieval", synthetic.QA_TEMPLATE, 8, "qa_f1", "synthetic retrieval", "other_key_value_rate"
    ),
    "multi_hop": Task("multi_hop", synthetic.QA_TEMPLATE, 8, "qa_f1", "synthetic multi-hop", "other_key_value_rate"),
    "fact_extraction": Task("fact_extraction", synthetic.EXTRACTION_TEMPLATE, 64, "rouge", "synthetic summarization"),
}

TASKS: dict[str, Task] = {**LONGBENCH, **SYNTHETIC}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}") from None
