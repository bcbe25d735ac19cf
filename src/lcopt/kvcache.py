"""KV-cache methods: a name in a stack maps to the `transformers` cache object `generate` fills.

`none` is transformers' own DynamicCache (full precision). Quantized caches plug in here as further
entries, each a function of the model config that returns a fresh cache for one generation.
"""

from __future__ import annotations

from collections.abc import Callable

from lcopt.kivi import KIVICache

CacheFactory = Callable[[object], object | None]

KV_METHODS: dict[str, CacheFactory] = {
    "none": lambda config: None,  # generate() builds a DynamicCache
    # KIVI defaults from its paper's code: group size 32, 128 full-precision recent tokens
    "kivi4": lambda config: KIVICache(config, bits=4, group_size=32, residual_length=128),
    "kivi2": lambda config: KIVICache(config, bits=2, group_size=32, residual_length=128),
}


def make_cache(method: str, config) -> object | None:
    try:
        factory = KV_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown KV-cache method {method!r}; allowed: {', '.join(KV_METHODS)}") from None
    return factory(config)
