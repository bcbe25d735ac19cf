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
        ("kivi4+kivi2", "at most one KV-cache method"),
        ("baseline+kivi4", "unknown technique"),
    ],
)
def test_invalid_stacks(name, message):
    with pytest.raises(StackError, match=message):
        parse_stack(name)
