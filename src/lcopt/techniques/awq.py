"""`awq4`: AWQ 4-bit weights (Lin et al., 2024, arXiv 2306.00978) through GPTQModel.

AWQ protects the weights that matter most for the activations: on calibration text it searches, per
layer, a per-input-channel scale that shrinks the rounding error of the salient channels, folds it into
the previous operation, then rounds every linear layer but the LM head to 4 bits in groups of
`awq.group_size` input columns with a zero point (asymmetric, AWQ's default). GPTQModel (7.6.0) runs the
search and saves the standard AWQ checkpoint ("gemm" format), which transformers' `from_pretrained`
loads through GPTQModel's kernels, like `gptq4`'s variants.

On a CPU, GPTQModel refuses its default AWQ packer (the CUDA GEMM kernel), so lcopt asks for its
portable torch packer (`BACKEND.AWQ_TORCH`), whose checkpoint is the same "gemm" format; a GPU uses
GPTQModel's own choice. Calibration text is the same held-out text as `gptq4`'s
(`lcopt.data.held_out_calibration`); the GPTQModel glue (worker count, log folder, group-size check,
calibration examples) is `gptq4`'s.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import ClassVar

from lcopt.techniques import CHECKPOINTS_SCHEMA, ModelTechnique, register
from lcopt.techniques import gptq as glue

log = logging.getLogger(__name__)


def awq_config(options: dict):
    glue._cpu_workers()
    from gptqmodel.quantization.config import AWQConfig

    return AWQConfig(bits=4, group_size=options["group_size"], sym=False)


def quantize(
    source: str, out_dir: Path, options: dict, calibration: list[str], trust_remote_code: bool = False
) -> dict:
    """AWQ of the model in `source`, saved to `out_dir` (a fresh directory); returns a record."""
    glue._cpu_workers()
    import torch
    from gptqmodel import BACKEND, GPTQModel
    from transformers import AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    examples = glue.calibration_examples(tokenizer, calibration, options["calibration_tokens"])
    if not examples:
        raise ValueError("awq4 needs calibration text (awq.calibration_samples >= 1 of a non-empty dataset)")
    glue._log_dir(out_dir / "quantize_logs")
    start = time.perf_counter()
    model = GPTQModel.load(source, awq_config(options), device=device, trust_remote_code=trust_remote_code)
    try:
        glue.check_group_size(model.model, options["group_size"])
    except ValueError as exc:
        raise ValueError(str(exc).replace("gptq.group_size", "awq.group_size")) from None
    model.quantize(examples, batch_size=1, backend=BACKEND.AWQ_TORCH if device == "cpu" else BACKEND.AUTO)
    seconds = time.perf_counter() - start
    model.save(str(out_dir))
    tokenizer.save_pretrained(out_dir)
    log.info("AWQ 4-bit of %s on %s: %.1f s", source, device, seconds)
    return {
        "method": "awq",
        "bits": 4,
        "group_size": options["group_size"],
        "zero_point": True,
        "calibration_samples": len(examples),
        "calibration_tokens": sum(len(e["input_ids"]) for e in examples),
        "quantize_seconds": seconds,
        "device": device,
        "weight_bytes_before": glue._dir_bytes(source),
        "weight_bytes_after": glue._dir_bytes(out_dir),
        "quantizer": f"gptqmodel {glue._version('gptqmodel')}",
    }


class AWQ(ModelTechnique):
    summary = (
        "AWQ 4-bit weights through GPTQModel (activation-aware per-channel scales, zero points, groups of "
        "awq.group_size); quantizes on a CPU too"
    )
    packs_weights = True
    options_schema: ClassVar[dict] = {
        "description": "AWQ 4-bit weight quantization of every linear layer but the LM head (awq4)",
        "properties": {
            "group_size": {
                "type": "integer",
                "minimum": 8,
                "default": 128,
                "description": "input columns per scale and zero point",
            },
            "calibration_dataset": {
                "type": "string",
                "description": "a dataset of `datasets` (its unscored rows) or of `calibration_datasets` whose "
                "text calibrates AWQ (default: the first of `datasets` by name)",
            },
            "calibration_samples": {"type": "integer", "minimum": 1, "default": 128},
            "calibration_tokens": {"type": "integer", "minimum": 16, "default": 2048},
            "checkpoints": CHECKPOINTS_SCHEMA
            | {"description": "model name -> an already AWQ-quantized checkpoint used instead of quantizing"},
        },
    }

    def random_variant(self, options: dict, checkpoint: str | None) -> dict:
        """Random 4-bit weights at AWQ's group size, run by the same int4 kernel as GPTQ's (`lcopt.int4`)."""
        return {"int4_group_size": options["group_size"], "random": "4-bit codes and scales"}

    def make_variant(self, parent_json: Path, weights_dir: Path, options: dict, calibration: list[str]) -> dict:
        from lcopt.io import atomic_dir

        with atomic_dir(weights_dir) as tmp:
            trusted = glue._parent_trusted(parent_json)
            return quantize(glue._parent_weights(parent_json), tmp, options, calibration, trusted)


register(AWQ("awq4", options_key="awq"))
