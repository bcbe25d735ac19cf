"""Fuzz the config against the schema: any malformed value gets a ConfigError naming the file and a
key, never another exception deep inside."""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcopt.config import ConfigError, validate

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
PATHS = [
    ("seed",),
    ("samples",),
    ("device",),
    ("dtype",),
    ("stacks",),
    ("bootstrap_resamples",),
    ("models",),
    ("models", "demo"),
    ("models", "demo", "max_input_tokens"),
    ("models", "demo", "path"),
    ("models", "demo", "gpus"),
    ("datasets",),
    ("datasets", "kv"),
    ("datasets", "kv", "words"),
    ("datasets", "kv", "synthetic"),
    ("datasets", "mn", "longbench"),
    ("datasets", "kv", "samples"),
    ("longbench", "source"),
    ("longbench",),
    ("kivi", "group_size"),
    ("kivi", "residual_length"),
    ("lingua2", "rate"),
    ("lingua2", "device"),
    ("demo_model",),
    ("demo_model", "retrain"),
    ("unknown_key",),
    ("models", "demo", "typo"),
]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
        validate(cfg, "fuzz.yaml")
    except ConfigError as err:
        message = str(err)
        assert message.startswith("fuzz.yaml: key '"), message
