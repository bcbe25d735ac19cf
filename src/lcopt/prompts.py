"""Prompts as LongBench builds them: task template, middle truncation, then the chat template.

LongBench (`pred.py`) tokenizes the filled template and, when it is longer than the model's budget,
keeps the first and last half of the budget's tokens ("the left and right side may contain crucial
instructions"). lcopt does the same, but counts the chat template's tokens inside the budget, so the
tokens that reach the model never exceed `max_input_tokens`.

Each row also records its `content`: the context and question the model was given, after compression
and truncation, without the task template or the chat template. The support metrics read it
(`lcopt.scoring`): a template's own words ("Cutting Knowledge Date: December 2023" in Llama-3.1's chat
header, "unanswerable" in qasper's instructions) are not support for what the model says.

Prompts are built with the tokenizer of the model that will read them (a released checkpoint's own,
`lcopt.jobs.prompt_source`), within its own context: the budget is the config's `max_input_tokens`
or, when smaller, the model's positions less the task's answer. Each row records the budget and a
fingerprint of the tokenizer, which inference checks against the tokenizer it runs with.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from lcopt.tasks import Task
from lcopt.tokenization import has_chat_template, tokenizer_sha256

# Per-sample figures of a prompt-side technique, carried from its rows into the predictions.
# `original_tokens`, `compressed_tokens` and `compression_ratio` are LLMLingua's own count, in GPT-3.5
# (cl100k) tokens; the `model_*` ones count the same two contexts in the target model's tokens (the ratio
# the model sees), `compression_seconds` and `compression_device` are the compressor's.
COMPRESSION_FIELDS = (
    "compression_ratio",
    "compression_seconds",
    "compression_device",
    "original_tokens",
    "compressed_tokens",
    "model_original_tokens",
    "model_compressed_tokens",
    "model_compression_ratio",
)


@dataclass(frozen=True)
class Prompt:
    text: str  # exactly what is tokenized for the model
    add_special_tokens: bool  # False when the chat template already wrote BOS and friends
    n_tokens: int
    n_tokens_untruncated: int
    truncated: bool
    chat_template: bool
    content: str  # the context and question that reached the model (`prompt_content`), templates excluded


def input_budget(max_input_tokens: int, positions: int | None, max_new_tokens: int) -> int:
    """The prompt tokens a model gets: the config's budget, or less when its positions (config.json
    `max_position_embeddings`) cannot hold that budget plus the answer."""
    return max_input_tokens if positions is None else min(max_input_tokens, positions - max_new_tokens)


def _wrap(tokenizer, user_text: str) -> str:
    if not has_chat_template(tokenizer):
        return user_text
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=False
    )


def _count(tokenizer, text: str, add_special_tokens: bool) -> int:
    return len(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def middle_truncate(tokenizer, text: str, max_tokens: int) -> str:
    """LongBench's rule: keep the first and last `max_tokens // 2` tokens, decoded back to text.

    The two halves are decoded together, so a tokenizer whose decoder adds the spaces between tokens
    (word-level, WordPiece) joins them as it joins any two tokens; for byte-level BPE this is the same
    as LongBench's decode(head) + decode(tail)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    half = max_tokens // 2
    return tokenizer.decode(ids[:half] + ids[len(ids) - half :], skip_special_tokens=True)


def fill_template(template: str, **fields: str) -> tuple[str, list[tuple[int, int]]]:
    """`template.format(**fields)` and the character span of each field's value in it, in order."""
    parts, spans, at = [], [], 0
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        at += len(literal)
        if name is not None:
            value = fields[name]
            parts.append(value)
            spans.append((at, at + len(value)))
            at += len(value)
    return "".join(parts), spans


def kept_spans(tokenizer, text: str, max_tokens: int) -> list[tuple[int, int]]:
    """The character spans of `text` whose tokens `middle_truncate` keeps (the first and last
    `max_tokens // 2`), from the tokenizer's offsets; a tokenizer without offsets is measured by the
    length of its decoded halves (exact where decoding gives back the text, as byte-level BPE does)."""
    fast = getattr(tokenizer, "is_fast", False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast)
    ids = encoded["input_ids"]
    if len(ids) <= max_tokens:
        return [(0, len(text))]
    half = max_tokens // 2
    if not half:
        return []
    if fast:
        head_end, tail_start = encoded["offset_mapping"][half - 1][1], encoded["offset_mapping"][len(ids) - half][0]
    else:
        head_end = len(tokenizer.decode(ids[:half], skip_special_tokens=True))
        tail_start = len(text) - len(tokenizer.decode(ids[len(ids) - half :], skip_special_tokens=True))
    return [(0, head_end), (max(tail_start, head_end), len(text))]


def prompt_content(text: str, fields: list[tuple[int, int]], kept: list[tuple[int, int]]) -> str:
    """The parts of the template's fields (context, question) that truncation kept, one paragraph each."""
    pieces = [text[max(a, c) : min(b, d)] for a, b in fields for c, d in kept if max(a, c) < min(b, d)]
    return "\n\n".join(p for p in pieces if p.strip())


def build_prompt(tokenizer, task: Task, row: dict, max_input_tokens: int, context: str | None = None) -> Prompt:
    """The model input for one row; `context` replaces the row's (e.g. a compressed one)."""
    user_text, fields = fill_template(
        task.template, context=row["context"] if context is None else context, input=row["input"]
    )
    chat = has_chat_template(tokenizer)
    add_special = not chat
    full = _wrap(tokenizer, user_text)
    n_full = _count(tokenizer, full, add_special)
    if n_full <= max_input_tokens:
        content = prompt_content(user_text, fields, [(0, len(user_text))])
        return Prompt(full, add_special, n_full, n_full, False, chat, content)
    overhead = n_full - len(tokenizer(user_text, add_special_tokens=False)["input_ids"])
    budget = max_input_tokens - overhead
    if budget < 2:
        raise ValueError(
            f"max_input_tokens={max_input_tokens} leaves no room for the prompt ({overhead} tokens of template)"
        )
    # Decoding and re-encoding at the cut can merge or split a token or two: shrink until it fits.
    for _ in range(8):
        text = _wrap(tokenizer, middle_truncate(tokenizer, user_text, budget))
        n = _count(tokenizer, text, add_special)
        if n <= max_input_tokens:
            content = prompt_content(user_text, fields, kept_spans(tokenizer, user_text, budget))
            return Prompt(text, add_special, n, n_full, True, chat, content)
        budget -= n - max_input_tokens
    raise RuntimeError(f"could not fit the prompt into {max_input_tokens} tokens")


def model_token_counts(tokenizer, original_context: str, compressed_context: str) -> dict:
    """A compressed context's size in the target model's tokens: both contexts tokenized alone (no
    special tokens), and their ratio (original / compressed; inf when nothing was kept)."""
    n_orig = len(tokenizer(original_context, add_special_tokens=False)["input_ids"])
    n_comp = len(tokenizer(compressed_context, add_special_tokens=False)["input_ids"])
    ratio = n_orig / n_comp if n_comp else (1.0 if n_orig == 0 else float("inf"))
    return {"model_original_tokens": n_orig, "model_compressed_tokens": n_comp, "model_compression_ratio": ratio}


def write_prompts(
    source: str,
    task_name: str,
    rows_jsonl,
    max_input_tokens: int,
    out_jsonl,
    trust_remote_code: bool = False,
    original_rows_jsonl=None,
) -> None:
    """The prompts stage: one row per sample with the exact model input, the content in it (context and
    question, for the support metrics), its token counts, the budget it was cut to and the fingerprint of
    the tokenizer that counted them (`source`'s).

    `original_rows_jsonl`, for compressed rows, is the dataset before compression: each prompt then also
    records the compression in this model's tokens (`model_token_counts`)."""
    import logging

    from tqdm import tqdm
    from transformers import AutoTokenizer

    from lcopt.io import read_jsonl, write_jsonl_atomic
    from lcopt.models import context_positions, resolve_source
    from lcopt.tasks import get_task

    local = resolve_source(source, weights=False)  # the tokenizer and config are enough
    tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=trust_remote_code)
    task = get_task(task_name)
    positions = context_positions(local)
    budget = input_budget(max_input_tokens, positions, task.max_new_tokens)
    log = logging.getLogger(__name__)
    if budget < max_input_tokens:
        log.info("%s: %d positions, so prompts get %d tokens, not %d", source, positions, budget, max_input_tokens)
    if not has_chat_template(tokenizer):
        log.warning("%s has no chat template: prompts are the plain task template", source)
    fingerprint = tokenizer_sha256(tokenizer)
    originals = {r["_id"]: r["context"] for r in read_jsonl(original_rows_jsonl)} if original_rows_jsonl else None
    out = []
    for row in tqdm(read_jsonl(rows_jsonl), desc=f"prompts {task_name}", unit="sample", mininterval=2):
        p = build_prompt(tokenizer, task, row, budget)
        if originals is not None:
            if row["_id"] not in originals:
                raise KeyError(f"{rows_jsonl}: row {row['_id']!r} is not in {original_rows_jsonl}")
            row = row | model_token_counts(tokenizer, originals[row["_id"]], row["context"])
        out.append(
            {
                "_id": row["_id"],
                "prompt": p.text,
                "content": p.content,
                "add_special_tokens": p.add_special_tokens,
                "n_tokens": p.n_tokens,
                "n_tokens_untruncated": p.n_tokens_untruncated,
                "truncated": p.truncated,
                "chat_template": p.chat_template,
                "max_new_tokens": task.max_new_tokens,
                "max_input_tokens": budget,
                "max_position_embeddings": positions,
                "tokenizer_source": source,
                "tokenizer_sha256": fingerprint,
                **{k: row[k] for k in COMPRESSION_FIELDS if k in row},
            }
        )
    write_jsonl_atomic(out_jsonl, out)
