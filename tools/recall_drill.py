"""A minutes-long drill: does a tiny Llama learn key-value lookup in a given fact format?

The first demo model never learned `kv_retrieval` (README, demo model): it copied one of the
context's codes but not the one asked for. Full training runs take the whole GPU budget, so this
drill isolates the lookup: batches of token ids made on the device (no tokenizer, no text), a few facts
among filler sentences, then chat-like questions, the loss on the answers. It prints how often the
first question of each row is answered right, every `--every` steps, so a format or an
initialisation that makes lookup learnable shows up in a minute or two of GPU time. Measured, it
learned in 1 run of 6 with offset heads and the key 4 tokens before its value (seed-dependent; see
the README), so a run at chance says little about a format.

Formats (the context fact, then what comes between the asked key and the answer):
- `value_after_is`: "the code for K is V ." (the synthetic task's first format): K sits 2 tokens
  before V in the fact but 4 before the answer position in the question.
- `value_at_question_offset`: "the code for K is the number V ." (the synthetic task's format now):
  K sits 4 tokens before V, as it does before the answer position, so one fixed-offset head carries
  K to both places.
- `induction`: "K V ." and a bare-key question "question K" -> V, the textbook induction setting.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

# Token ids: a few template words, then keys, values and filler words in disjoint ranges.
THE, CODE, FOR, IS, NUMBER, DOT, QUESTION, COLON, WHAT, QMARK, ANSWER, ASSISTANT, END, BOS = range(14)
KEYS, VALUES, FILLERS = (32, 400), (432, 1000), (1432, 100)  # (first id, count)
VOCAB_SIZE = 1532
FORMATS = ("value_after_is", "value_at_question_offset", "induction")


@dataclass
class DrillConfig:
    format: str = "value_at_question_offset"
    pairs: int = 4
    filler_sentences: int = 4
    questions: int = 4
    batch_size: int = 256
    layers: int = 2
    hidden_size: int = 128
    heads: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.05
    offset_heads: float = 0.0  # sharpness for `demo_model.init_offset_heads`; 0 leaves layer 0 random
    steps: int = 2000
    seconds: float | None = None
    every: int = 250
    seed: int = 0


def make_batch(cfg: DrillConfig, gen: torch.Generator, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask): mask is 2 on the first question's answer, 1 on the other answers, 0 elsewhere."""
    if cfg.format not in FORMATS:
        raise ValueError(f"unknown drill format {cfg.format!r}; allowed: {', '.join(FORMATS)}")
    b, p, q = cfg.batch_size, cfg.pairs, cfg.questions

    def full(shape: tuple[int, ...], token: int) -> torch.Tensor:
        return torch.full(shape, token, device=device)

    def rand(lo_count: tuple[int, int], shape: tuple[int, ...]) -> torch.Tensor:
        lo, count = lo_count
        return torch.randint(lo, lo + count, shape, generator=gen).to(device)

    keys = torch.argsort(torch.rand(b, KEYS[1], generator=gen), 1)[:, :p].to(device) + KEYS[0]
    values = rand(VALUES, (b, p))
    word = {
        "value_after_is": [THE, CODE, FOR, "K", IS, "V", DOT],
        "value_at_question_offset": [THE, CODE, FOR, "K", IS, THE, NUMBER, "V", DOT],
        "induction": ["K", "V", DOT],
    }[cfg.format]
    facts = torch.stack([keys if w == "K" else values if w == "V" else full((b, p), w) for w in word], 2)
    width = facts.shape[2]
    filler = rand(FILLERS, (b, cfg.filler_sentences, width))
    filler[:, :, -1] = DOT
    sentences = torch.cat([facts, filler], 1)
    order = torch.argsort(torch.rand(b, p + cfg.filler_sentences, generator=gen), 1).to(device)
    context = torch.gather(sentences, 1, order[:, :, None].expand(-1, -1, width)).reshape(b, -1)

    asked = torch.randint(0, p, (b, q), generator=gen).to(device)
    asked_keys, answers = torch.gather(keys, 1, asked), torch.gather(values, 1, asked)
    if cfg.format == "induction":
        turn = [QUESTION, "K", "V"]
    else:
        turn = [QUESTION, COLON, WHAT, IS, THE, CODE, FOR, "K", QMARK, ANSWER, COLON, ASSISTANT, "V", END]
    turns = torch.stack(
        [asked_keys if w == "K" else answers if w == "V" else full((b, q), w) for w in turn], 2
    ).reshape(b, -1)
    ids = torch.cat([full((b, 1), BOS), context, turns], 1)
    mask = torch.zeros_like(ids)
    answer_at = 1 + context.shape[1] + turn.index("V")
    mask[:, answer_at] = 2
    for j in range(1, q):
        mask[:, answer_at + j * len(turn)] = 1
    return ids, mask


def build(cfg: DrillConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    from lcopt.demo_model import init_offset_heads

    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=cfg.hidden_size,
            intermediate_size=2 * cfg.hidden_size,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            num_key_value_heads=cfg.heads,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
    )
    if cfg.offset_heads > 0:
        init_offset_heads(model, cfg.offset_heads)
    return model


def run(cfg: DrillConfig, device: str | None = None) -> list[tuple[int, float]]:
    """Train; return (step, accuracy on first questions over the last `every` steps) pairs."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history, hits, start = [], [], time.time()
    for step in range(1, cfg.steps + 1):
        if cfg.seconds is not None and time.time() - start > cfg.seconds:
            break
        ids, mask = make_batch(cfg, gen, device)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, step / 100)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            logits = model(input_ids=ids).logits[:, :-1].float()
        target, where = ids[:, 1:], mask[:, 1:]
        token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        loss = token_loss[where >= 1].mean() + 0.1 * token_loss[where == 0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        hits.append((logits.argmax(-1)[where == 2] == target[where == 2]).float().mean())
        if step % cfg.every == 0:
            history.append((step, torch.stack(hits).mean().item()))
            hits = []
            print(
                f"{cfg.format} offset_heads={cfg.offset_heads} lr={cfg.lr} step {step} "
                f"first-question accuracy {history[-1][1]:.3f} (chance {1 / cfg.pairs:.3f}) "
                f"{time.time() - start:.0f}s",
                flush=True,
            )
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in vars(DrillConfig()).items():
        kind = str if name == "format" else float if name in ("seconds",) else type(default)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    run(DrillConfig(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
