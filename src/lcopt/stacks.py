"""Stacks: an ordered set of techniques, written `a+b+c`, split by where each technique acts.

Model-side techniques (pruning, weight quantization) make a model variant and compose in the order
given; prompt-side ones (prompt compression) make a prompt variant shared by every model; cache-side
ones pick the cache of the inference job: at most one per role, an eviction method (which tokens each
layer keeps after the prefill) before a representation (how the kept tokens are stored: KIVI, float8),
e.g. `snapkv+kivi4`. `baseline` is the empty stack. Each technique declares its side, its role and what
it composes with in its own module (`lcopt.techniques`); nothing here names one.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from lcopt.techniques import BASELINE, CACHE_ROLES, SIDES, ModelTechnique, Technique, default_options, get, registry

__all__ = [
    "BASELINE",
    "Stack",
    "StackError",
    "cache_options",
    "cache_parts",
    "canonical",
    "expand_levels",
    "options_key",
    "parse_stack",
]


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


def _role_rank(t: Technique) -> int:
    return CACHE_ROLES.index(t.role) if t.side == "cache" and t.role in CACHE_ROLES else len(CACHE_ROLES)


def _order(t: Technique) -> tuple[int, bool, int]:
    return SIDES.index(t.side), _packs_weights(t), _role_rank(t)


def canonical(parts) -> str:
    """A stack's name with its techniques in the order they act: model side (weight quantization last),
    prompt side, cache side (eviction, then the representation of what is kept)."""
    return "+".join(sorted(parts, key=lambda p: _order(get(p))))


def expand_levels(techniques: list[str], levels: list[int]) -> list[str]:
    """Level 1: each technique alone; level 2: every compatible pair (never two techniques of one role,
    e.g. two KV-cache representations or two eviction methods, nor two weight quantizations); an
    eviction method pairs with a representation (`snapkv+kivi4`)."""
    stacks = []
    for level in sorted(levels):
        for combo in combinations(techniques, level):
            try:
                stacks.append(parse_stack(canonical(combo)).name)
            except StackError:
                continue  # an incompatible combination, e.g. two KV-cache representations
    return stacks


ROLE_NOUN = {
    "representation": "KV-cache representation (how the cache stores its tokens: kivi4, fp8kv, ...)",
    "eviction": "KV-cache eviction method (which tokens the cache keeps)",
}


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
    roles: dict[str, list[str]] = {}
    for p in parts:
        if techniques[p].role is not None:
            roles.setdefault(techniques[p].role, []).append(p)
    for role, names in roles.items():
        if len(names) > 1:
            raise StackError(f"stack {name!r}: at most one {ROLE_NOUN.get(role, role)}, got {names}")
    cache = by_side["cache"]
    if list(cache) != sorted(cache, key=lambda p: _role_rank(techniques[p])):
        raise StackError(
            f"stack {name!r}: cache-side techniques act in the order {', '.join(CACHE_ROLES)} "
            f"(evict, then store what is kept): write {canonical(parts)!r}"
        )
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


def cache_parts(kv_method: str) -> dict[str, str]:
    """A stack's cache-side techniques by role: `snapkv+kivi4` -> {eviction: snapkv, representation:
    kivi4}; `none` -> {} (the model's dtype, nothing evicted)."""
    if kv_method == "none":
        return {}
    stack = parse_stack(kv_method)
    if stack.model or stack.prompt:
        raise StackError(f"{kv_method!r} is not made of cache-side techniques only")
    techniques = registry()
    return {techniques[p].role: p for p in stack.cache}


def cache_options(kv_method: str, given: dict[str, dict] | None = None) -> dict[str, dict]:
    """Options of each cache-side technique of `kv_method`, by name: its schema's defaults, updated by
    `given[name]` (an inference job's params: each technique's validated config block)."""
    given = given or {}
    parts = list(cache_parts(kv_method).values())
    extra = sorted(set(given) - set(parts))
    if extra:
        raise ValueError(f"options given for {extra}, which are not cache-side techniques of {kv_method!r}")
    return {name: default_options(get(name)) | dict(given.get(name, {})) for name in parts}
