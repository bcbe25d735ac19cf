"""KV-cache methods: a name in a stack maps to the `transformers` cache object `generate` fills.

`none` is transformers' own DynamicCache (full precision). Quantized caches plug in here as further
entries, each a function of the model config that returns a fresh cache for one generation.
"""

from __future__ import annotations

from collections.abc import Callable

CacheFactory = Callable[[object], object | None]

KV_METHODS: dict[str, CacheFactory] = {
    "none": lambda config: None,  # generate() builds a DynamicCache
}


def make_cache(method: str, config) -> object | None:
    try:
        factory = KV_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown KV-cache method {method!r}; allowed: {', '.join(KV_METHODS)}") from None
    return factory(config)
