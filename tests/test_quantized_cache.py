"""quanto4 (transformers' QuantizedCache): the real bytes of 4-bit codes plus a scale and a zero
per group, and the demo model's answers kept, against a full-precision cache."""

import pytest
import torch

from lcopt.inference import cache_bytes, make_cache

OPTIONS = {"group_size": 64, "residual_length": 128}


@pytest.fixture(scope="module")
def demo():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lcopt.models import DEMO_MODEL, resolve_source

    path = resolve_source(DEMO_MODEL)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def passkey_prompt(tokenizer, seed: int):
    from lcopt import synthetic
    from lcopt.prompts import build_prompt
    from lcopt.tasks import get_task

    row = next(iter(synthetic.generate("passkey", 1024, 1, seed=seed)))
    p = build_prompt(tokenizer, get_task("passkey"), row, 4000)
    return tokenizer(p.text, add_special_tokens=p.add_special_tokens, return_tensors="pt"), row["answers"][0]


def test_bytes_and_answer_against_full_precision(demo, technique="quanto4"):
    model, tokenizer = demo
    enc, answer = passkey_prompt(tokenizer, seed=4)
    with torch.inference_mode():
        full = model.generate(**enc, max_new_tokens=8, do_sample=False, return_dict_in_generate=True)
        cache = make_cache(technique, model.config, {technique: OPTIONS})
        out = model.generate(
            **enc, past_key_values=cache, max_new_tokens=8, do_sample=False, return_dict_in_generate=True
        )
    n_in = enc["input_ids"].shape[1]
    assert tokenizer.decode(out.sequences[0, n_in:], skip_special_tokens=True).strip() == answer
    assert tokenizer.decode(full.sequences[0, n_in:], skip_special_tokens=True).strip() == answer
    # Fewer new tokens than the residual window: the prefill's tokens are stored as 4-bit codes (half a
    # byte) with a float32 scale and zero per group of 64, the decoded ones exactly (the last one is not cached).
    cfg = model.config
    per_token = cfg.num_key_value_heads * cfg.head_dim
    n_new = out.sequences.shape[1] - n_in
    assert n_new < OPTIONS["residual_length"]
    per_tensor = n_in * per_token * (0.5 + 2 * 4 / 64) + (n_new - 1) * per_token * 4
    assert cache_bytes(cache) == cfg.num_hidden_layers * 2 * per_tensor
    assert cache_bytes(full.past_key_values) / cache_bytes(cache) > 5.5  # 4 bytes -> 0.625 (+ the window)
