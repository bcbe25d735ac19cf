"""Stacks: an ordered set of techniques, written `a+b+c`, split by where each technique acts.

Model-side techniques (pruning, weight quantization) make a model variant and compose in the order
given; prompt-side ones (prompt compression) make a prompt variant shared by every model; cache-side
ones (KV-cache quantization) pick the cache of the inference job. `baseline` is the empty stack. Each
technique declares its side and what it composes with in its own module (`lcopt.techniques`); nothing
here names one.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from lcopt.techniques import BASELINE, SIDES, ModelTechnique, Technique, get, registry

__all__ = ["BASELINE", "Stack", "StackError", "canonical", "expand_levels", "options_key", "parse_stack"]


def options_key(technique: str) -> str:
    """The config block that holds a technique's options (gptq4 and rtn4 share `gptq`)."""
    return get(technique).options_key


class StackError(ValueError):
    pass


@dataclass(frozen=True)
class Stack:
    name: str
    model: tuple[str, ...]
    prompt: tuple[str, ...]
    cache: tuple[str, ...]

    @property
    def model_variant(self) -> str:
        return "+".join(self.model) or BASELINE

    @property
    def prompt_variant(self) -> str:
        return "+".join(self.prompt) or "full"

    @property
    def kv_method(self) -> str:
        return "+".join(self.cache) or "none"


def _packs_weights(t: Technique) -> bool:
    return isinstance(t, ModelTechnique) and t.packs_weights


def canonical(parts) -> str:
    """A stack's name with its techniques in the order they act: model side (weight quantization last),
    prompt side, cache side."""
    return "+".join(sorted(parts, key=lambda p: (SIDES.index(get(p).side), _packs_weights(get(p)))))


def expand_levels(techniques: list[str], levels: list[int]) -> list[str]:
    """Level 1: each technique alone; level 2: every compatible pair (never two KV-cache methods or two
    weight quantizations)."""
    stacks = []
    for level in sorted(levels):
        for combo in combinations(techniques, level):
            try:
                stacks.append(parse_stack(canonical(combo)).name)
            except StackError:
                continue  # an incompatible combination, e.g. two KV-cache methods
    return stacks


SIDE_NOUN = {"model": "model-side technique", "prompt": "prompt-side technique", "cache": "KV-cache method"}


def parse_stack(name: str) -> Stack:
    if name == BASELINE:
        return Stack(name, (), (), ())
    techniques = registry()
    parts = name.split("+")
    unknown = [p for p in parts if p not in techniques]
    if unknown:
        allowed = ", ".join([BASELINE, *sorted(techniques)])
        raise StackError(f"stack {name!r}: unknown technique(s) {unknown}; allowed: {allowed}")
    if len(set(parts)) != len(parts):
        raise StackError(f"stack {name!r} names a technique twice")
    by_side = {side: tuple(p for p in parts if techniques[p].side == side) for side in SIDES}
    for side, names in by_side.items():
        single = [p for p in names if techniques[p].one_per_stack]
        if single and len(names) > 1:
            raise StackError(f"stack {name!r}: at most one {SIDE_NOUN[side]}, got {list(names)}")
    packed = [p for p in by_side["model"] if _packs_weights(techniques[p])]
    if packed and (len(packed) > 1 or by_side["model"][-1] != packed[0]):
        raise StackError(
            f"stack {name!r}: a weight quantization ({packed[0]}) must be the last model-side technique, "
            "and only one (nothing acts on packed integer weights)"
        )
    for a, b in combinations(parts, 2):
        reason = techniques[a].incompatibility(techniques[b]) or techniques[b].incompatibility(techniques[a])
        if reason:
            raise StackError(f"stack {name!r}: {a} and {b} do not compose ({reason})")
    return Stack(name, by_side["model"], by_side["prompt"], by_side["cache"])
