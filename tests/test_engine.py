"""The fast engine's greedy tokens equal `generate`'s with the same weights and the same cache method.

On a CPU the engine runs without CUDA graphs and with the torch reads of its caches; `device` tests
(run on a GPU: `pytest -m device`) repeat the check with graphs and the fused Triton kernels."""

import pytest
import torch

from lcopt.engine import EngineUnsupported, FastEngine, static_cache_factory, unsupported_reason
from lcopt.inference import ReferenceRunner
from lcopt.models import DEMO_MODEL, resolve_source

NEW_TOKENS = 64


def load(path: str, device: str = "cpu", dtype=torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    model.generation_config.eos_token_id = None  # compare NEW_TOKENS tokens, not where each stops
    return model, AutoTokenizer.from_pretrained(path)


def reference_tokens(model, ids, kv: str, device: str = "cpu") -> list[int]:
    return ReferenceRunner(model, kv, {}, device).generate(ids, NEW_TOKENS, pad_token_id=0)


def fast_tokens(model, ids, kv: str, **engine) -> list[int]:
    return FastEngine(model, static_cache_factory(kv, model, {}), **engine).generate(ids, NEW_TOKENS, stop=set())


@pytest.fixture(scope="module")
def demo():
    return load(resolve_source(DEMO_MODEL))


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    return load(str(smollm2_dir))


def passkey_ids(tokenizer, words: int) -> list[int]:
    from lcopt import synthetic
    from lcopt.prompts import build_prompt
    from lcopt.tasks import get_task

    row = next(iter(synthetic.generate("passkey", words, 1, seed=11)))
    prompt = build_prompt(tokenizer, get_task("passkey"), row, 4000)
    return tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"]


@pytest.mark.parametrize("kv", ["none", "kivi4", "kivi2"])
def test_tokens_equal_generate_on_the_demo_model(demo, kv):
    model, tokenizer = demo
    ids = passkey_ids(tokenizer, 600)
    assert len(ids) > 256  # past KIVI's residual window: quantized keys and values are read
    assert fast_tokens(model, ids, kv) == reference_tokens(model, ids, kv)


@pytest.mark.parametrize("kv", ["none", "kivi4"])
def test_tokens_equal_generate_on_smollm2(smollm2, kv):
    model, tokenizer = smollm2
    ids = passkey_ids(tokenizer, 300)
    assert fast_tokens(model, ids, kv) == reference_tokens(model, ids, kv)


def test_a_model_split_in_segments_gives_the_same_tokens(demo):
    """Layers placed one device after another run as one segment (cache, graph) per device; two
    segments on one CPU take the same path and must give the same tokens."""
    model, tokenizer = demo
    ids = passkey_ids(tokenizer, 300)
    n = model.config.num_hidden_layers
    halves = [list(range(n // 2)), list(range(n // 2, n))]
    split = FastEngine(model, static_cache_factory("kivi4", model, {}), segments=halves)
    assert len(split.segments) == 2 and split.cache is None
    assert split.generate(ids, NEW_TOKENS, stop=set()) == fast_tokens(model, ids, "kivi4")


def test_the_prefill_chunk_does_not_change_the_tokens(demo):
    model, tokenizer = demo
    ids = passkey_ids(tokenizer, 300)
    assert fast_tokens(model, ids, "kivi4", prefill_chunk=97) == fast_tokens(model, ids, "kivi4")


def test_architectures_it_cannot_run_are_refused(demo):
    model, _ = demo
    config = model.config
    config.model_type, original = "gpt2", config.model_type
    try:
        assert "gpt2" in unsupported_reason(model)
        with pytest.raises(EngineUnsupported):
            FastEngine(model, static_cache_factory("none", model, {}))
    finally:
        config.model_type = original
