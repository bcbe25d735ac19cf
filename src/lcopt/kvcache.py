"""KV-cache methods: a name in a stack maps to the `transformers` cache object `generate` fills.

`none` is transformers' own DynamicCache (full precision). Quantized caches plug in here as further
entries, each a function of the model config that returns a fresh cache for one generation.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from lcopt import static_cache
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


# The same methods in the fast engine's preallocated formats (`lcopt.static_cache`).
STATIC_CACHES: dict[str, Callable[..., static_cache.StaticCache]] = {
    "none": static_cache.DenseCache,
    "kivi4": partial(static_cache.KIVICache, bits=4),
    "kivi2": partial(static_cache.KIVICache, bits=2),
    "fp8kv": static_cache.FP8Cache,
}


def make_static_cache(method: str, model, options: dict) -> Callable[..., static_cache.StaticCache]:
    """A factory `(max_len, layers, device) -> empty cache` of `method` for the fast engine, in the model's
    dtype and attention shape."""
    from lcopt.engine import cache_geometry

    try:
        cls = STATIC_CACHES[method]
    except KeyError:
        allowed = ", ".join(STATIC_CACHES)
        raise ValueError(f"KV-cache method {method!r} has no fast-engine cache; allowed: {allowed}") from None
    dtype = model.get_input_embeddings().weight.dtype
    geometry = cache_geometry(model.config)

    def make(max_len: int, layers: int | None = None, device=None) -> static_cache.StaticCache:
        device = model.get_input_embeddings().weight.device if device is None else device
        return cls(**geometry | {"layers": layers or geometry["layers"]}, max_len=max_len, device=device, dtype=dtype,
                   **options)  # fmt: skip

    return make
