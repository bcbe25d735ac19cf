"""Held-out exact match of the shipped demo model (the figures in docs/demo-model.md).

Greedy answers of `lcopt-demo` (src/lcopt/data/demo-model, fp32, CPU unless --device) on synthetic rows
of the given seed, which neither the training stream nor the default run's benchmark rows use
(`synthetic.generate(task, words, rows, seed)`), scored by exact match after LongBench's answer
normalization, as `lcopt.demo_model.evaluate` does. Prints one JSON line per (task, words).

    python tools/demo_model_eval.py --rows 200 --seed 20000 --runs kv_retrieval@1024 kv_retrieval@2048 \\
        multi_hop@1024 passkey@2048
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lcopt import synthetic
from lcopt.metrics import normalize_answer
from lcopt.models import DEMO_MODEL, resolve_source
from lcopt.prompts import build_prompt
from lcopt.tasks import get_task


@torch.no_grad()
def exact_match(model, tokenizer, task: str, words: int, rows: int, seed: int, device: str) -> float:
    hits = 0
    for row in synthetic.generate(task, words, rows, seed=seed):
        prompt = build_prompt(tokenizer, get_task(task), row, 4000)
        enc = tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens, return_tensors="pt").to(device)
        out = model.generate(
            **enc,
            max_new_tokens=get_task(task).max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        prediction = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        hits += normalize_answer(prediction) == normalize_answer(row["answers"][0])
    return hits / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20_000)
    parser.add_argument("--runs", nargs="+", default=["kv_retrieval@1024"], metavar="TASK@WORDS")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    path = resolve_source(DEMO_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(args.device).eval()
    for run in args.runs:
        task, words = run.split("@")
        start = time.perf_counter()
        score = exact_match(model, tokenizer, task, int(words), args.rows, args.seed, args.device)
        print(
            json.dumps(
                {
                    "task": task,
                    "words": int(words),
                    "rows": args.rows,
                    "seed": args.seed,
                    "exact_match": score,
                    "seconds": round(time.perf_counter() - start, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
