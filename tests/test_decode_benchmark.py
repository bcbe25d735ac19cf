"""The decode benchmark's paths, and its runners on a CPU (the benchmark itself needs a GPU)."""

import pytest
import torch

from lcopt.decode_benchmark import RUNNERS, WEIGHTS, parse_path, run_fast, run_hf_static
from lcopt.probe import TokenClock


@pytest.mark.parametrize(
    ("path", "parsed"),
    [("fast:none", ("bf16", "fast", "none")), ("hf-static", ("bf16", "hf-static", "none")),
     ("int4:fast:kivi2", ("int4", "fast", "kivi2")), ("torchao4:hf-compiled", ("torchao4", "hf-compiled", "none"))],
)  # fmt: skip
def test_benchmark_paths_name_weights_runner_and_cache(path, parsed):
    assert parse_path(path) == parsed


@pytest.mark.parametrize("path", ["fastest", "int4", "hf-static:kivi4", "awq4:fast:none", "fast:none:x"])
def test_a_bad_benchmark_path_names_the_allowed_values(path):
    with pytest.raises(ValueError, match=f"{RUNNERS[0]}.*{RUNNERS[-1]}|transformers' own static cache"):
        parse_path(path)


def test_the_workflows_default_benchmark_paths_parse():
    import re

    from lcopt.config import schema

    paths = schema()["properties"]["benchmark"]["properties"]["paths"]
    assert {parse_path(p)[0] for p in paths["default"]} == set(WEIGHTS)
    assert all(re.match(paths["items"]["pattern"], p) for p in paths["default"])


def test_hf_static_reuses_one_static_cache_for_its_warm_up_and_timed_call():
    """The warm-up runs 256 prompt tokens on the cache sized for the timed call (so a 128K prompt is prefilled
    once); the timed call, on the reset cache, gives `generate`'s tokens, as lcopt's engine does."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)  # fmt: skip
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    ids = torch.randint(0, 512, (400,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=0)
    expected = expected[0, len(ids) :].tolist()
    for run in (run_hf_static, run_fast):
        clock = TokenClock()
        tokens = run(model, "none", ids, 12, {})(clock)
        assert tokens == expected and len(clock.stamps) == 12


def test_a_torchao_path_without_torchao_stops_at_once_naming_the_extra(monkeypatch, tmp_path, capsys):
    """torchao is not a dependency (only the `peers` extra): a torchao4 path without it is a usage error
    before any GPU work, not a row that failed after the other paths ran."""
    import sys

    from lcopt.decode_benchmark import main, require_torchao

    monkeypatch.setitem(sys.modules, "torchao", None)  # `import torchao` raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[peers\]'"):
        require_torchao()
    with pytest.raises(SystemExit):
        main(["--model", f"x={tmp_path}", "--paths", "fast:none", "torchao4:hf-compiled", "--out", str(tmp_path / "o")])
    assert "torchao4 paths need torchao" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
