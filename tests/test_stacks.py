import pytest

from lcopt.stacks import StackError, parse_stack


def test_baseline_is_the_empty_stack():
    s = parse_stack("baseline")
    assert (s.model_variant, s.prompt_variant, s.kv_method) == ("baseline", "full", "none")


def test_cache_side_technique_only_changes_the_cache():
    s = parse_stack("kivi2")
    assert (s.model_variant, s.prompt_variant, s.kv_method) == ("baseline", "full", "kivi2")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("turbo", "unknown technique"),
        ("kivi4+kivi4", "twice"),
        ("kivi4+kivi2", "at most one KV-cache representation"),
        ("baseline+kivi4", "unknown technique"),
        ("gptq4+rtn4", "must be the last model-side technique"),
        ("gptq4+prune", "must be the last model-side technique"),
    ],
)
def test_invalid_stacks(name, message):
    with pytest.raises(StackError, match=message):
        parse_stack(name)


def test_levels_expand_to_every_compatible_pair_in_acting_order():
    from lcopt.stacks import expand_levels

    stacks = expand_levels(["kivi4", "lingua2", "prune", "kivi2"], [1, 2])
    assert stacks[:4] == ["kivi4", "lingua2", "prune", "kivi2"]
    assert set(stacks[4:]) == {"lingua2+kivi4", "prune+kivi4", "prune+lingua2", "lingua2+kivi2", "prune+kivi2"}
    assert "kivi4+kivi2" not in stacks and len(stacks) == 9


def test_config_expands_levels_into_stacks():
    from lcopt.config import validate

    cfg = validate(
        {
            "models": {"m": {"path": "lcopt-demo", "max_input_tokens": 100}},
            "datasets": {"d": {"synthetic": "passkey", "words": 100}},
            "techniques": ["prune", "kivi4"],
            "levels": [1, 2],
        }
    )
    assert cfg["stacks"] == ["baseline", "prune", "kivi4", "prune+kivi4"]


def test_weight_quantization_comes_last_and_alone_on_the_model_side():
    from lcopt.stacks import expand_levels

    s = parse_stack("prune+gptq4+kivi4")
    assert (s.model_variant, s.kv_method) == ("prune+gptq4", "kivi4")
    stacks = expand_levels(["gptq4", "rtn4", "prune", "kivi4"], [2])
    assert set(stacks) == {"prune+gptq4", "prune+rtn4", "gptq4+kivi4", "rtn4+kivi4", "prune+kivi4"}
