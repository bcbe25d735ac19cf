"""Fuzz the config against the schema: any malformed value gets a ConfigError naming the file and the
key that was broken, never another exception deep inside; what is accepted is valid and usable."""

import copy

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcopt.config import ConfigError, load, schema, validate
from lcopt.stacks import parse_stack

GOOD = {
    "seed": 0,
    "samples": 5,
    "device": "cpu",
    "models": {"demo": {"path": "lcopt-demo", "max_input_tokens": 4000}},
    "datasets": {"kv": {"synthetic": "kv_retrieval", "words": 512}, "mn": {"longbench": "multi_news"}},
    "longbench": {"source": "local", "local_dir": "/data"},
    "stacks": ["baseline", "kivi4"],
    "kivi": {"group_size": 32, "residual_length": 128},
    "lingua2": {"model": "m-xlm-roberta-large", "rate": 0.5, "device": "cpu"},
}


def schema_paths(node: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key the schema names (a model or dataset entry stands for its `additionalProperties`),
    so a key added to the schema is fuzzed without touching this test."""
    out = []
    for key, sub in node.get("properties", {}).items():
        out.append((*prefix, key))
        out += schema_paths(sub, (*prefix, key))
    entry = {"models": "demo", "datasets": "kv"}.get(prefix[-1]) if prefix else None
    if entry and isinstance(node.get("additionalProperties"), dict):
        out.append((*prefix, entry))
        out += schema_paths(node["additionalProperties"], (*prefix, entry))
    return out


PATHS = [*schema_paths(schema()), ("datasets", "mn", "longbench"), ("unknown_key",), ("models", "demo", "typo")]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(2**31, 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["baseline", "kivi4", "prune+kivi2", "local", "hub", "cuda", "bfloat16", "passkey"]),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def test_the_fuzzed_paths_cover_the_schema():
    assert {("prune", "calibration_dataset"), ("models", "demo", "gguf", "file"), ("datasets", "kv", "seed")} <= set(
        PATHS
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_malformed_configs_fail_cleanly(mutations):
    cfg = copy.deepcopy(GOOD)
    for path, value in mutations:
        node = cfg
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    try:
        accepted = validate(cfg, "fuzz.yaml")
    except ConfigError as err:
        message = str(err)
        assert message.startswith("fuzz.yaml: key '"), message
        named = message.split("'")[1].split(".")[0]
        # the key named is one that was broken (GOOD itself is valid)
        assert named in {path[0] for path, _ in mutations}, (message, mutations)
        return
    jsonschema.validate(accepted, schema())  # defaults filled in are valid too
    for stack in accepted["stacks"]:
        parse_stack(stack)
    torch.manual_seed(accepted["seed"])  # an accepted seed seeds torch
    for ds in accepted["datasets"].values():
        assert ("longbench" in ds) != ("synthetic" in ds)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_config_file_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"c\.yaml: the config must be a mapping of keys, got a (list|str|int)"):
        load([path])


def test_a_seed_too_large_for_torch_is_rejected():
    with pytest.raises(ConfigError, match=r"key 'seed': .* is greater than the maximum of 4294967295"):
        validate(copy.deepcopy(GOOD) | {"seed": 2**64}, "c.yaml")
