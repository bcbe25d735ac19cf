"""`gptq4`, `rtn4`: 4-bit weight quantization of every linear layer except the LM head: GPTQ (`gptq4`) and plain
round-to-nearest (`rtn4`) at the same bits and group size, so that tables show what GPTQ's
error-compensating updates buy over rounding.

Both run through GPTQModel (the maintained AutoGPTQ successor; the study used AutoGPTQ) and save the
standard GPTQ checkpoint format (`quantization_config` in config.json, packed int32 weights). On a CPU
a variant loads with transformers' `from_pretrained` and GPTQModel's torch kernel, like a quantized
model from the hub. On a GPU lcopt reads the checkpoint itself into PyTorch's own int4 kernel
(`load_gptq_checkpoint` below, `lcopt.int4`), so the GPU machine needs no GPTQModel and no kernel build.

GPTQ is calibrated on held-out text (`lcopt.data.held_out_calibration`), as `prune` is; `desc_act`
is AutoGPTQ's act-order (columns quantized by decreasing Hessian diagonal). GPTQModel's own
extension, group-aware reordering, is switched off so that `desc_act` is the only ordering choice, as
in AutoGPTQ.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from lcopt.techniques import CHECKPOINTS_SCHEMA, ModelTechnique, register

log = logging.getLogger(__name__)


def _cpu_workers() -> None:
    # GPTQModel sizes its CPU worker pool on its own; size it to the cores this process may use
    # (snakemake's share on a small machine), unless the user set it. At least 2: GPTQModel 7.6's model
    # loader asks for 2 and stops on a 1-core machine otherwise. The pool's size does not change the
    # weights (2 and 4 workers gave identical files); torch's thread count does (`quantize`).
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, len(os.sched_getaffinity(0)))))


def _log_dir(path: Path) -> None:
    """GPTQModel 7.6.0 writes its per-layer logs to ./logs of the working directory (the repository,
    in a workflow run); keep them with the weights they describe instead."""
    from gptqmodel.looper import loop_processor

    loop_processor._PROJECT_LOG_DIR = path


def _dir_bytes(path: str | Path) -> int | None:
    path = Path(path)
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) if path.is_dir() else None


def quantize_config(method: str, bits: int, options: dict):
    """GPTQModel's config for `method` ("gptq" or "rtn"): symmetric, `group_size` columns per scale."""
    _cpu_workers()
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization.config import RTNConfig

    if method == "rtn":
        return RTNConfig(bits=bits, group_size=options["group_size"], sym=True)
    return QuantizeConfig(
        bits=bits,
        group_size=options["group_size"],
        desc_act=options["desc_act"],
        act_group_aware=False,
        sym=True,
    )


def check_group_size(model, group_size: int) -> None:
    """Every layer to quantize must have an input size that is a multiple of the group size: the CPU
    int4 kernel (and Marlin) refuse others at the first forward pass, long after quantizing."""
    import torch

    bad = [
        f"{name} ({m.in_features})"
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head") and m.in_features % group_size
    ]
    if bad:
        raise ValueError(
            f"gptq.group_size {group_size} does not divide the input size of {', '.join(bad[:4])}"
            f"{' ...' if len(bad) > 4 else ''}; choose a group size that does "
            "(or prune.multiple_of, for a pruned model)"
        )


def calibration_examples(tokenizer, texts: list[str], max_tokens: int) -> list[dict]:
    """The calibration texts as GPTQModel takes them: one example per text, cut to `max_tokens`."""
    from lcopt.data import calibration_batches

    return [
        {"input_ids": b["input_ids"][0].tolist(), "attention_mask": b["attention_mask"][0].tolist()}
        for b in calibration_batches(tokenizer, texts, max_tokens, "cpu")
    ]


def quantize(
    source: str,
    out_dir: Path,
    method: str,
    bits: int,
    options: dict,
    calibration: list[str],
    trust_remote_code: bool = False,
) -> dict:
    """Quantize the model in `source` and save it to `out_dir` (a fresh directory); returns a record.
    `trust_remote_code`: the model is one whose own code the config allows (e.g. Nemotron-51B).

    On a CPU the weights are the same on every run with the same torch thread count, and differ between
    counts (GPTQ's Hessian and error updates are sums that threads split): the record keeps the count,
    and the workflow runs this with one thread."""
    _cpu_workers()
    import torch
    from gptqmodel import GPTQModel
    from transformers import AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    qconfig = quantize_config(method, bits, options)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    examples = calibration_examples(tokenizer, calibration, options["calibration_tokens"]) if method == "gptq" else None
    _log_dir(out_dir / "quantize_logs")
    start = time.perf_counter()
    model = GPTQModel.load(source, qconfig, device=device, trust_remote_code=trust_remote_code)
    check_group_size(model.model, options["group_size"])
    model.quantize(examples, batch_size=1)
    seconds = time.perf_counter() - start
    model.save(str(out_dir))
    tokenizer.save_pretrained(out_dir)
    log.info("%s %d-bit of %s on %s: %.1f s", method, bits, source, device, seconds)
    return {
        "method": method,
        "bits": bits,
        "group_size": options["group_size"],
        "desc_act": bool(options["desc_act"]) if method == "gptq" else False,
        "calibration_samples": len(examples or []),
        "calibration_tokens": sum(len(e["input_ids"]) for e in examples or []),
        "quantize_seconds": seconds,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "weight_bytes_before": _dir_bytes(source),
        "weight_bytes_after": _dir_bytes(out_dir),
        "quantizer": f"gptqmodel {_version('gptqmodel')}",
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _parent_weights(parent_json: Path) -> str:
    return json.loads(Path(parent_json).read_text())["weights"]


def _parent_trusted(parent_json: Path) -> bool:
    """Whether the config allows the parent's own model code (`trust_remote_code`, kept in its variant.json)."""
    return bool(json.loads(Path(parent_json).read_text()).get("trust_remote_code"))


def gptq_format(config) -> tuple[int, bool]:
    """(group size, v1 zeros) of a 4-bit GPTQ checkpoint's `quantization_config` (format gptq or
    gptq_v2); an error for anything else (AWQ, 8-bit, other packings), naming what was found."""
    q = config.quantization_config
    q = q if isinstance(q, dict) else q.to_dict()
    method, bits = q.get("quant_method"), q.get("bits")
    fmt = q.get("checkpoint_format") or q.get("format") or "gptq"
    if method != "gptq" or bits != 4 or fmt not in ("gptq", "gptq_v2"):
        raise ValueError(
            f"{config.name_or_path}: tinygemm loads 4-bit GPTQ checkpoints (quant_method gptq, bits 4, format gptq or "
            f"gptq_v2); this one is quant_method {method!r}, bits {bits!r}, format {fmt!r}"
        )
    return q.get("group_size", -1), fmt == "gptq"


def load_gptq_checkpoint(weights: str, device, dtype, trust_remote_code: bool = False):
    """A GPTQ checkpoint directory as a model on `device` whose 4-bit layers are `TinyGemmLinear`s.

    The model is built from its config with its linear layers on the meta device (no memory, no random
    init), every layer the checkpoint holds as `qweight` becomes a `TinyGemmLinear` built from its
    tensors on `device`, and the other weights (embeddings, norms, an LM head) load as they are."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from lcopt.int4 import TinyGemmLinear, gptq_parts

    config = AutoConfig.from_pretrained(weights, trust_remote_code=trust_remote_code)
    group_size, v1 = gptq_format(config)
    del config.quantization_config
    files = sorted(Path(weights).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{weights}: no *.safetensors files")
    state = {}
    for file in files:
        state |= load_file(file, device=str(device))
    with _linear_layers_on_meta(), torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    for prefix in [k.removesuffix(".qweight") for k in state if k.endswith(".qweight")]:
        tensors = [state.pop(f"{prefix}.{n}") for n in ("qweight", "qzeros", "scales", "g_idx")]
        codes, scales, zeros, perm = gptq_parts(*tensors, group_size, v1)
        group = group_size if group_size > 0 else codes.shape[1]
        layer = TinyGemmLinear.from_codes(codes, scales, zeros, group, perm, state.pop(f"{prefix}.bias", None), dtype)
        parent, _, name = prefix.rpartition(".")
        setattr(model.get_submodule(parent), name, layer)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    _, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unexpected or missing:
        raise ValueError(f"{weights}: tensors the model does not have {unexpected[:5]}, weights missing {missing[:5]}")
    if (Path(weights) / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(weights)
    return model.eval()


@contextmanager
def _linear_layers_on_meta():
    """Every `nn.Linear` built inside allocates its weights on the meta device (they are replaced or
    assigned from the checkpoint); other modules, and buffers computed at build time such as rotary
    frequencies, are built on the current device."""
    from torch import nn

    init = nn.Linear.__init__

    def on_meta(self, *args, **kwargs):
        init(self, *args, **(kwargs | {"device": "meta"}))

    nn.Linear.__init__ = on_meta
    try:
        yield
    finally:
        nn.Linear.__init__ = init


class WeightQuantization(ModelTechnique):
    """4-bit weights through GPTQModel, `method` "gptq" (error-compensating) or "rtn" (rounding)."""

    packs_weights = True
    options_schema: ClassVar[dict] = {
        "description": "4-bit weight quantization of every linear layer but the LM head "
        "(gptq4 = GPTQ, rtn4 = round-to-nearest)",
        "properties": {
            "group_size": {
                "type": "integer",
                "minimum": 8,
                "default": 128,
                "description": "input columns per scale and zero point",
            },
            "desc_act": {"type": "boolean", "default": False, "description": "act-order (GPTQ only)"},
            "calibration_dataset": {
                "type": "string",
                "description": "a dataset of `datasets` (its unscored rows) or of `calibration_datasets` whose "
                "text calibrates GPTQ (default: the first of `datasets` by name)",
            },
            "calibration_samples": {"type": "integer", "minimum": 1, "default": 128},
            "calibration_tokens": {"type": "integer", "minimum": 16, "default": 2048},
            "checkpoints": CHECKPOINTS_SCHEMA
            | {
                "description": "model name -> an already GPTQ-quantized checkpoint used for gptq4 instead of quantizing"
            },
        },
    }

    def __init__(self, name: str, method: str, bits: int = 4):
        super().__init__(name, options_key="gptq")
        self.method, self.bits = method, bits
        self.summary = (
            "GPTQ 4-bit weights through GPTQModel (groups of gptq.group_size, act-order optional)"
            if method == "gptq"
            else "round-to-nearest 4-bit weights through GPTQModel, at GPTQ's bits and group size (the control)"
        )

    def load(self, weights: str, device: str, dtype, trust_remote_code: bool):
        """On a GPU, the checkpoint's 4-bit layers go straight into PyTorch's own int4 kernel
        (`load_gptq_checkpoint`, `lcopt.int4.TinyGemmLinear`), without GPTQModel: through it, a model
        loaded onto a GPU gets Machete (which downloads CUTLASS at first use) or Marlin (a JIT build of
        minutes), and one loaded on the CPU and moved keeps its CPU kernel. On a CPU, `from_pretrained`
        with GPTQModel's torch kernel."""
        if not device.startswith("cuda"):
            return None
        from lcopt.int4 import TinyGemmLinear

        model = load_gptq_checkpoint(weights, device, dtype, trust_remote_code)
        count = sum(isinstance(m, TinyGemmLinear) for m in model.modules())
        log.info("%d 4-bit layers on %s", count, TinyGemmLinear.KERNEL)
        return model

    def random_variant(self, options: dict, checkpoint: str | None) -> dict:
        """4-bit weights in the GPU kernel's layout (`lcopt.int4`), random: what a GPTQ model costs to run."""
        return {"int4_group_size": options["group_size"], "random": "4-bit codes and scales"}

    def make_variant(self, parent_json: Path, weights_dir: Path, options: dict, calibration: list[str]) -> dict:
        """Quantize the parent variant into `weights_dir` (a GPTQ checkpoint that `from_pretrained` loads)."""
        from lcopt.io import atomic_dir

        with atomic_dir(weights_dir) as tmp:
            source, trusted = _parent_weights(parent_json), _parent_trusted(parent_json)
            return quantize(source, tmp, self.method, self.bits, options, calibration, trusted)


register(WeightQuantization("gptq4", "gptq"), WeightQuantization("rtn4", "rtn"))
