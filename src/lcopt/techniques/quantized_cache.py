"""`quanto4`: transformers' own `QuantizedCache`, the library baseline KIVI is compared with.

`transformers.QuantizedCache` (5.23) keeps the newest `residual_length` tokens in full precision and,
whenever that window fills, re-quantizes the whole cache (old codes dequantized, window appended) to
`nbits` in groups of `group_size`; every read dequantizes everything. Unlike KIVI, keys and values are
grouped the same way: `quanto4` is optimum-quanto's int4 (min-max scale and shift), `axis=0` for keys
and values (transformers' default). optimum-quanto builds a small C++ unpacking extension with ninja on
its first use on a CPU (in its own package folder, so that folder must be writable once). The prefill
attends to its exact states, as with KIVI.

The HQQ backend (`hqq4`) was here and was removed: with `hqq` installed, `transformers.cache_utils`
imports it on every import of transformers' models, and HQQ's module-level `torch.compile` pulls in
TorchDynamo and torchao, 2.4-4.8 s added to every job of every run (measured with `python -X importtime`),
for a technique that is not in the default matrix. Add it back as one module if you need it.
"""

from __future__ import annotations

from typing import ClassVar

from lcopt.techniques import CacheTechnique, register


class TransformersQuantizedCache(CacheTechnique):
    options_schema: ClassVar[dict] = {
        "description": "transformers' QuantizedCache (quanto4); transformers' defaults",
        "properties": {
            "group_size": {"type": "integer", "minimum": 1, "default": 64, "description": "values per scale"},
            "residual_length": {
                "type": "integer",
                "minimum": 1,
                "default": 128,
                "description": "newest tokens kept in full precision before the cache is re-quantized",
            },
        },
    }

    def __init__(self, name: str, backend: str, axis: int, bits: int = 4):
        super().__init__(name, options_key="quantized_cache")
        self.backend, self.axis, self.bits = backend, axis, bits
        library = {"quanto": "optimum-quanto"}[backend]
        self.summary = (
            f"transformers' QuantizedCache with the {library} backend, {bits}-bit, keys and values grouped along "
            f"axis {axis} (the library baseline for KIVI)"
        )

    def reference_cache(self, model_config, options: dict):
        from transformers import QuantizedCache

        return QuantizedCache(
            self.backend,
            model_config,
            nbits=self.bits,
            axis_key=self.axis,
            axis_value=self.axis,
            q_group_size=options["group_size"],
            residual_length=options["residual_length"],
        )


register(TransformersQuantizedCache("quanto4", "quanto", axis=0))
