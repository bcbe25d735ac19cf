"""lcopt's own small LLMLingua-2-style token classifier, so that `lingua2` runs offline and compresses meaningfully.

The real LLMLingua-2 checkpoints (microsoft/llmlingua-2-...) come from the hub. This module builds a tiny
`BertForTokenClassification` in the `bert-base-multilingual-cased` family (LLMLingua-2 chooses BERT's "##" word-piece
rules from that substring of the model path, see `lingua2.MODEL_FAMILIES`) and trains it on lcopt's synthetic
contexts. LLMLingua-2 trains on words that GPT-4 kept when compressing MeetingBank transcripts; as a stand-in, this
classifier learns "facts vs filler": label 1 (LLMLingua-2's "keep" label, whose probability llmlingua ranks words by)
for the words of a task's fact sentences, 0 for the filler around them (`synthetic.make_sample(fact_labels=True)`).
It is a demo of the technique's plumbing and of a classifier that keeps what matters, not a general compressor.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcopt import synthetic

if TYPE_CHECKING:
    from transformers import BertForTokenClassification, BertTokenizerFast

log = logging.getLogger(__name__)

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


def _tokenizer(texts: list[str], vocab_size: int) -> BertTokenizerFast:
    """A cased WordPiece tokenizer trained on `texts`, with BERT's special tokens and [CLS] ... [SEP] template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
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
    from lcopt.lingua2 import compress_context

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
    from lcopt.lingua2 import load_compressor

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


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(DEMO_DIRNAME))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from lcopt.lingua2 import model_family

    model_family(args.out)  # before training, not after
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps({k: v for k, v in train(args.out, TrainConfig(seed=args.seed)).items() if k != "losses"}))


if __name__ == "__main__":
    main()
