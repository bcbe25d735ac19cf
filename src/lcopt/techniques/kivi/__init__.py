"""`kivi4`, `kivi2`: KIVI KV-cache quantization (Liu et al., 2024, arXiv 2402.02750).

One technique, three rooms: `reference` is the `transformers` Cache that `generate` uses anywhere (pure
PyTorch); `static` is the fast engine's preallocated cache; `kernels` holds its Triton kernels (the
append and the fused decode attention). The quantization helpers they share live in `lcopt.quant`.
"""

from __future__ import annotations

from typing import ClassVar

from lcopt.techniques import CacheTechnique, OptionError, register
from lcopt.techniques.kivi.reference import KIVICache


class KIVI(CacheTechnique):
    options_schema: ClassVar[dict] = {
        "description": "KIVI cache options (kivi4, kivi2); KIVI's defaults",
        "properties": {
            "group_size": {"type": "integer", "minimum": 1, "default": 32},
            "residual_length": {
                "type": "integer",
                "minimum": 1,
                "default": 128,
                "description": "newest tokens kept in full precision; a multiple of group_size",
            },
        },
    }

    def __init__(self, name: str, bits: int):
        super().__init__(name, options_key="kivi")
        self.bits = bits
        self.summary = (
            f"KIVI KV-cache quantization to {bits} bits: keys per channel, values per token, the newest "
            "tokens exact (pure-PyTorch reference cache)"
        )

    def check_options(self, options: dict) -> None:
        if options["residual_length"] % options["group_size"]:
            raise OptionError(
                "residual_length",
                f"{options['residual_length']} is not a multiple of kivi.group_size {options['group_size']} "
                "(KIVI quantizes keys in whole groups of tokens)",
            )

    def reference_cache(self, model_config, options: dict) -> KIVICache:
        return KIVICache(model_config, bits=self.bits, **options)

    def static_cache(self, model_config, options: dict, **engine_args):
        """The fast engine's KIVI cache (`lcopt.techniques.kivi.static.KIVIStaticCache`): the same codes,
        scales and quantization points in preallocated buffers, read by a fused Triton decode kernel.
        Imported here, not above: Triton loads only when a fast engine is built."""
        from lcopt.techniques.kivi.static import KIVIStaticCache

        options = {"group_size": 32, "residual_length": 128} | options  # KIVI's defaults, as KIVICache's
        return KIVIStaticCache(**engine_args, bits=self.bits, **options)


register(KIVI("kivi4", bits=4), KIVI("kivi2", bits=2))
