"""KV-cache methods: a name in a stack maps to the `transformers` cache object `generate` fills.

`none` is transformers' own DynamicCache (full precision). Quantized caches plug in here as further
entries, each a function of the model config that returns a fresh cache for one generation.
"""

from __future__ import annotations

from collections.abc import Callable

from lcopt.kivi import KIVICache

CacheFactory = Callable[..., object | None]

KV_METHODS: dict[str, CacheFactory] = {
    "none": lambda config, **options: None,  # generate() builds a DynamicCache
    "kivi4": lambda config, **options: KIVICache(config, bits=4, **options),
    "kivi2": lambda config, **options: KIVICache(config, bits=2, **options),
}


def make_cache(method: str, config, **options) -> object | None:
    try:
        factory = KV_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown KV-cache method {method!r}; allowed: {', '.join(KV_METHODS)}") from None
    return factory(config, **options)
