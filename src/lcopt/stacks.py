"""Stacks: an ordered set of techniques, written `a+b+c`, split by where each technique acts.

Model-side techniques (pruning, weight quantization) make a model variant and compose in the order
given; prompt-side ones (prompt compression) make a prompt variant shared by every model; cache-side
ones (KV-cache quantization) pick the cache of the inference job. `baseline` is the empty stack. A
technique is registered once in `TECHNIQUES` with its side; nothing else special-cases it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Side = Literal["model", "prompt", "cache"]

# name -> side; the baseline needs none.
TECHNIQUES: dict[str, Side] = {
    "prune": "model",
    "gptq4": "model",
    "rtn4": "model",
    "lingua2": "prompt",
    "kivi4": "cache",
    "kivi2": "cache",
}
BASELINE = "baseline"
# model-side techniques that pack the weights into integers: nothing can act on the weights after them,
# so one of them, if any, is the last model-side technique (prune+gptq4 is GPTQ of the pruned model).
QUANTIZED_WEIGHTS = frozenset({"gptq4", "rtn4"})
# the config block that holds a technique's options, where it is not the technique's own name
OPTIONS_KEY = {"gptq4": "gptq", "rtn4": "gptq", "kivi4": "kivi", "kivi2": "kivi"}


def options_key(technique: str) -> str:
    return OPTIONS_KEY.get(technique, technique)


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


SIDE_ORDER = ("model", "prompt", "cache")


def canonical(parts) -> str:
    """A stack's name with its techniques in the order they act: model side (weight quantization last),
    prompt side, cache side."""
    return "+".join(sorted(parts, key=lambda p: (SIDE_ORDER.index(TECHNIQUES[p]), p in QUANTIZED_WEIGHTS)))


def expand_levels(techniques: list[str], levels: list[int]) -> list[str]:
    """Level 1: each technique alone; level 2: every compatible pair (never two KV-cache methods or two
    weight quantizations)."""
    from itertools import combinations

    stacks = []
    for level in sorted(levels):
        for combo in combinations(techniques, level):
            try:
                stacks.append(parse_stack(canonical(combo)).name)
            except StackError:
                continue  # an incompatible combination, e.g. two KV-cache methods
    return stacks


def parse_stack(name: str) -> Stack:
    if name == BASELINE:
        return Stack(name, (), (), ())
    parts = name.split("+")
    unknown = [p for p in parts if p not in TECHNIQUES]
    if unknown:
        allowed = ", ".join([BASELINE, *sorted(TECHNIQUES)])
        raise StackError(f"stack {name!r}: unknown technique(s) {unknown}; allowed: {allowed}")
    if len(set(parts)) != len(parts):
        raise StackError(f"stack {name!r} names a technique twice")
    by_side = {side: tuple(p for p in parts if TECHNIQUES[p] == side) for side in ("model", "prompt", "cache")}
    if len(by_side["cache"]) > 1:
        raise StackError(f"stack {name!r}: at most one KV-cache method, got {list(by_side['cache'])}")
    quantized = [p for p in by_side["model"] if p in QUANTIZED_WEIGHTS]
    if quantized and (len(quantized) > 1 or by_side["model"][-1] != quantized[0]):
        raise StackError(
            f"stack {name!r}: a weight quantization ({quantized[0]}) must be the last model-side technique, "
            "and only one (nothing acts on packed integer weights)"
        )
    return Stack(name, by_side["model"], by_side["prompt"], by_side["cache"])
