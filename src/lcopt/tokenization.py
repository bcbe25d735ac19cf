"""Tokenizer helpers that prompts, models and inference share: whether a tokenizer has a chat template,
the fingerprint that ties a prompt file to the tokenizer that built it, and a variant's own tokenizer.

Their own module so that `lcopt.prompts` and `lcopt.models` need not import each other."""

from __future__ import annotations

import hashlib
import json


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


# Text whose ids tell normalizers and pre-tokenizers apart where vocabularies agree.
TOKENIZER_PROBE = "Probe: naïve café, 12345 + 67890 = 80235.\n\tDon't   stop!  <s> </s> 日本語"


def tokenizer_sha256(tokenizer) -> str:
    """A fingerprint of what turns a prompt into ids: vocabulary, special tokens, chat template and the
    ids of a probe text (with and without special tokens)."""
    facts = [
        sorted(tokenizer.get_vocab().items()),
        tokenizer.all_special_tokens,
        getattr(tokenizer, "chat_template", None) or "",
        tokenizer(TOKENIZER_PROBE)["input_ids"],
        tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"],
    ]
    return hashlib.sha256(json.dumps(facts, ensure_ascii=False, default=str).encode()).hexdigest()


def load_tokenizer(variant: dict):
    """The tokenizer a variant runs with: its weights' own (or, for a random one, its config directory's)."""
    from transformers import AutoTokenizer

    source = variant.get("tokenizer") or variant["weights"]
    return AutoTokenizer.from_pretrained(source, trust_remote_code=bool(variant.get("trust_remote_code")))
