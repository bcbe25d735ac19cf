"""lcopt's own small Llama model, trained on the synthetic tasks so that the offline default run has
something real to degrade.

A random-weights model scores zero everywhere and shows nothing; this one answers the synthetic
retrieval tasks, so pruning, quantization and cache compression have accuracy to lose. It is a plain
`LlamaForCausalLM` with a word-level tokenizer and a chat template, saved with `save_pretrained` and
loaded with `from_pretrained` like any hub model.

Training uses the workflow's own prompt builder (`lcopt.prompts`), so the model sees exactly the
prompts that inference will give it. The loss is on the answer tokens only, and the context length
follows a curriculum from short to long.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lcopt import synthetic
from lcopt.io import atomic_dir, write_json_atomic
from lcopt.prompts import build_prompt
from lcopt.tasks import get_task

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "<|end|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n{{ message['content'] }}<|end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class TrainConfig:
    """Everything that decides the checkpoint; saved next to it as `train_config.json`."""

    seed: int = 0
    steps: int = 8000
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    tokens_per_step: int = 16384
    min_words: int = 32
    max_words: int = 1300
    curriculum_fraction: float = 0.6  # the longest length is reached after this share of the steps
    context_loss_weight: float = 0.1  # next-token loss on the prompt too: dense signal for copying heads
    followups: int = 7  # extra questions per context (chat turns) for the lookup tasks
    max_seconds: float | None = None  # wall-clock guard; the step it stopped at is saved as stop_after_step
    stop_after_step: int | None = None
    init_from: dict | None = None  # the TrainConfig of an earlier stage this one continues from
    max_input_tokens: int = 4000
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 4
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    offset_heads: float = 0.0  # > 0: layer-0 heads start as fixed-offset heads of this sharpness
    tasks: tuple[str, ...] = synthetic.TASKS  # cycled per batch row; repeat a task to weight it
    eval_samples: int = 64
    eval_words: tuple[int, ...] = (1024,)
    num_workers: int = 12  # data-loading processes, capped by the machine's cores


def build_tokenizer():
    """A word-level tokenizer over the synthetic vocabulary, lower-casing, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + synthetic.vocabulary())}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    core.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def build_model(tokenizer, cfg: TrainConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    if cfg.offset_heads > 0:
        init_offset_heads(model, cfg.offset_heads)
    return model


@torch.no_grad()
def init_offset_heads(model, sharpness: float) -> None:
    """Start layer-0 head h as a head that attends h + 1 tokens back, all heads with one shared OV map.

    Key-value lookup needs, at the value, the key a few tokens earlier and, at the answer, the key
    asked a few tokens earlier. A small model trained from random weights has to find such
    fixed-offset heads by itself, and on these tasks it sat at chance for thousands of steps; a
    short convolution gives them for free in the architectures that solve associative recall
    easily. Here the heads start out that way: every token embedding gets a shared direction `u`,
    query and key read only `u`, and the query is rotated by h + 1 RoPE steps, so the score peaks
    at that offset. The shared value/output map makes layer 0 write the same vector for a token
    whatever its offset, so a later head can match the key at the value with the key in the
    question. It is only an initialisation: training keeps or changes it, and the model stays a
    plain `LlamaForCausalLM`.
    """
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    shared = torch.randn(cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    shared /= shared.norm()
    emb = model.get_input_embeddings().weight
    emb += emb.norm(dim=1).mean() * shared.to(emb)
    attn = model.model.layers[0].self_attn
    theta = cfg.rope_parameters["rope_theta"] ** (-torch.arange(0, head_dim, 2).float() / head_dim)
    # Slow frequencies cannot tell nearby offsets apart; they would only add noise to the score.
    fast = (theta > 0.05).float().repeat(2)
    key = torch.cat([torch.ones(head_dim // 2), torch.zeros(head_dim // 2)])
    value = attn.v_proj.weight[:head_dim].clone()
    out = attn.o_proj.weight[:, :head_dim].clone()
    for kv_head in range(cfg.num_key_value_heads):
        rows = slice(kv_head * head_dim, (kv_head + 1) * head_dim)
        attn.k_proj.weight[rows] = torch.outer(key, shared)
        attn.v_proj.weight[rows] = value
    for head in range(cfg.num_attention_heads):
        rows = slice(head * head_dim, (head + 1) * head_dim)
        offset = head + 1
        query = sharpness * fast * torch.cat([torch.cos(offset * theta), -torch.sin(offset * theta)])
        attn.q_proj.weight[rows] = torch.outer(query, shared)
        attn.o_proj.weight[:, rows] = out


def words_at(step: int, cfg: TrainConfig, rng: random.Random) -> int:
    """Curriculum: the longest allowed context grows linearly, then every length is mixed."""
    ramp = max(1, int(cfg.steps * cfg.curriculum_fraction))
    # quadratic: long stretches at short lengths, where lookup skills form fastest
    longest = cfg.min_words + (cfg.max_words - cfg.min_words) * min(1.0, (step + 1) / ramp) ** 2
    return rng.randint(cfg.min_words, int(longest))


def encode_example(tokenizer, task: str, row: dict, max_input_tokens: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the chat (prompt, answer, then any follow-up turns) and the answer spans.

    Follow-up turns ask about other keys of the same context, as a chat would; they multiply the
    supervised tokens per context without changing what the first turn looks like."""
    prompt = build_prompt(tokenizer, get_task(task), row, max_input_tokens)
    ids = tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"]
    spans = []
    turns = [(None, row["answers"][0]), *row.get("followups", [])]
    for question, answer in turns:
        if question is not None:
            ids += tokenizer(f"\n<|user|>\nQuestion : {question}\nAnswer :\n<|assistant|>\n", add_special_tokens=False)[
                "input_ids"
            ]
        start = len(ids)
        ids += tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        spans.append((start, len(ids)))
    return ids, spans


class _Batches(torch.utils.data.IterableDataset):
    """Step-indexed batches: worker w of n builds steps w, w+n, ..., which DataLoader yields in order."""

    def __init__(self, tokenizer, cfg: TrainConfig, first_step: int = 0):
        self.tokenizer, self.cfg, self.first_step = tokenizer, cfg, first_step

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.first_step + wid, self.cfg.steps, nw):
            yield make_batch(self.tokenizer, self.cfg, step)


def make_batch(tokenizer, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, answer_mask): answer_mask is 1 on answer tokens, 0 on the prompt, -1 on padding."""
    rng = random.Random(f"train/{cfg.seed}/{step}")
    n_words = words_at(step, cfg, rng)
    batch_size = max(1, cfg.tokens_per_step // (n_words + 64))
    examples = []
    for i in range(batch_size):
        task = cfg.tasks[(step + i) % len(cfg.tasks)]
        row = synthetic.make_sample(task, n_words, rng, f"train-{step}-{i}", followups=cfg.followups)
        examples.append(encode_example(tokenizer, task, row, cfg.max_input_tokens))
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), tokenizer.pad_token_id, dtype=torch.long)
    answer_mask = torch.full((len(examples), width), -1, dtype=torch.long)
    for row_index, (ids, spans) in enumerate(examples):
        # Right padding: with a causal mask no real token sees a pad, so no attention mask is needed
        # and positions start at 0 as they do at inference.
        input_ids[row_index, : len(ids)] = torch.tensor(ids)
        answer_mask[row_index, : len(ids)] = 0
        for start, end in spans:
            answer_mask[row_index, start:end] = 1
    return input_ids, answer_mask


def loss_terms(model, input_ids: torch.Tensor, answer_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss on answer tokens and on prompt tokens."""
    logits = model(input_ids=input_ids).logits[:, :-1].float()
    target, mask = input_ids[:, 1:], answer_mask[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    answer = token_loss[mask == 1].mean()
    context = token_loss[mask == 0].mean()
    return answer, context


@torch.no_grad()
def evaluate(model, tokenizer, cfg: TrainConfig, device: str) -> dict[str, float]:
    """Greedy exact match per task and length on held-out seeds (the workflow measures it properly)."""
    from lcopt.metrics import normalize_answer

    model.eval()
    results = {}
    for task in dict.fromkeys(cfg.tasks):
        for n_words in cfg.eval_words:
            hits = 0
            rows = synthetic.generate(task, n_words, cfg.eval_samples, seed=10_000 + cfg.seed)
            for row in rows:
                prompt = build_prompt(tokenizer, get_task(task), row, cfg.max_input_tokens)
                enc = tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens, return_tensors="pt")
                out = model.generate(
                    **enc.to(device),
                    max_new_tokens=get_task(task).max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
                pred = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                hits += normalize_answer(pred) == normalize_answer(row["answers"][0])
            results[f"{task}@{n_words}"] = hits / cfg.eval_samples
    model.train()
    return results


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def fit(cfg: TrainConfig, tokenizer, device: str, init_model=None):
    """Train one stage; a stage with `init_from` starts from `init_model` or, if none, replays that stage."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if init_model is not None:
        model = init_model.to(device=device, dtype=torch.float32)
    elif cfg.init_from is not None:
        model, _ = fit(
            TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.init_from.items()}),
            tokenizer,
            device,
        )
    else:
        model = build_model(tokenizer, cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("demo model: %.2fM parameters, %d steps on %s", n_params / 1e6, cfg.steps, device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.startswith("cuda"),
    )
    # Batches depend only on (seed, step), so the worker count changes speed, never the data.
    workers = min(cfg.num_workers, max(0, (os.cpu_count() or 1) - 2))
    loader = torch.utils.data.DataLoader(
        _Batches(tokenizer, cfg),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda")
        else torch.autocast("cpu", enabled=False)
    )
    history = []
    start = last = time.time()
    model.train()
    for step, (input_ids, answer_mask) in enumerate(loader):
        if cfg.stop_after_step is not None and step > cfg.stop_after_step:
            break
        if cfg.max_seconds is not None and time.time() - start > cfg.max_seconds:
            cfg.stop_after_step = step - 1
            log.info("time budget spent: stopping after step %d", step - 1)
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        input_ids, answer_mask = input_ids.to(device, non_blocking=True), answer_mask.to(device, non_blocking=True)
        with autocast:
            answer_loss, context_loss = loss_terms(model, input_ids, answer_mask)
            loss = answer_loss + cfg.context_loss_weight * context_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            now = time.time()
            entry = {
                "step": step,
                "answer_loss": round(answer_loss.item(), 4),
                "context_loss": round(context_loss.item(), 4),
                "width": input_ids.shape[1],
                "lr": lr_at(step, cfg),
                "elapsed_s": round(now - start, 1),
            }
            history.append(entry)
            log.info(
                "step %d/%d answer loss %.4f context loss %.4f width %d (%.1f steps/s)",
                step,
                cfg.steps,
                entry["answer_loss"],
                entry["context_loss"],
                input_ids.shape[1],
                50 / max(1e-9, now - last) if step else 0.0,
            )
            last = now
    return model, history


def train(out_dir: Path, cfg: TrainConfig, device: str | None = None, init_model=None) -> dict:
    """Train (from scratch, or on from `init_model`) and save a `from_pretrained` directory atomically."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = build_tokenizer()
    start = time.time()
    model, history = fit(cfg, tokenizer, device, init_model)
    n_params = sum(p.numel() for p in model.parameters())
    train_seconds = time.time() - start
    scores = evaluate(model, tokenizer, cfg, device) if cfg.eval_samples else {}
    log.info("held-out exact match: %s", json.dumps(scores))
    with atomic_dir(out_dir) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp)  # bf16 halves the checkpoint
        tokenizer.save_pretrained(tmp)
        summary = {
            "parameters": n_params,
            "train_seconds": round(train_seconds, 1),
            "device": device,
            "torch": torch.__version__,
            "exact_match": scores,
            "history": history,
        }
        write_json_atomic(Path(tmp) / "train_config.json", asdict(cfg) | {"max_seconds": None})
        write_json_atomic(Path(tmp) / "train_summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--config", type=Path, help="JSON with TrainConfig fields (the checkpoint's own train_config.json)"
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override TrainConfig fields")
    parser.add_argument("--device")
    parser.add_argument("--init-checkpoint", type=Path, help="continue from this checkpoint (a new stage)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    fields = json.loads(args.config.read_text()) if args.config else {}
    for item in args.set:
        key, value = item.split("=", 1)
        fields[key] = json.loads(value)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    init_model = None
    if args.init_checkpoint:
        from transformers import AutoModelForCausalLM

        init_model = AutoModelForCausalLM.from_pretrained(args.init_checkpoint, dtype=torch.float32)
        cfg.init_from = json.loads((args.init_checkpoint / "train_config.json").read_text())
    train(args.out, cfg, args.device, init_model)


if __name__ == "__main__":
    main()
