"""Model sources and variant directories.

A model in the config is a Hugging Face hub id, a local directory, lcopt's built-in demo model
(`lcopt-demo`), or a GGUF file inside an installed Python package that is imported once into a normal
HF directory. A *variant* is a model after the model-side techniques of a stack (pruning,
quantization); it lives in `results/models/<model>/<stack>/` with a `variant.json` that says where
its weights are. The baseline variant points at the source and copies nothing.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

from lcopt.gptq import apply_gptq4, apply_rtn4
from lcopt.io import atomic_dir, write_json_atomic

log = logging.getLogger(__name__)

DEMO_MODEL = "lcopt-demo"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


class ModelError(ValueError):
    """A model source that cannot be used; the message names the path and what is missing."""


def demo_checkpoint() -> Path:
    from lcopt.demo_model import CHECKPOINT_DIR

    return CHECKPOINT_DIR


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"Python package {package!r} is not installed (it should carry the GGUF file)")
    return Path(next(iter(spec.submodule_search_locations)))


def check_local_model(path: Path) -> None:
    """Fail early, and clearly, on a directory that cannot hold a loadable model and its tokenizer."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path}: no config.json; not a Hugging Face model directory")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise ModelError(f"{config}: not a JSON object ({exc})") from exc
    if not model_type:
        raise ModelError(f"{config}: no 'model_type'; not a transformers model config")
    if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        raise ModelError(f"{path}: config.json but no weights ({', '.join(WEIGHT_PATTERNS)})")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"{path}: no tokenizer ({', '.join(TOKENIZER_FILES)})")


def resolve_source(path: str) -> str:
    """A `from_pretrained` argument: a checked local directory, or a hub id passed through."""
    if path == DEMO_MODEL:
        path = str(demo_checkpoint())
    local = Path(path)
    if local.exists():
        check_local_model(local)
        return str(local.resolve())
    if path.startswith((".", "/")) or path.count("/") > 1:
        raise ModelError(f"{path}: no such directory (and not a hub id of the form owner/name)")
    return path


def import_gguf(package: str, file: str, out_dir: Path) -> None:
    """Dequantize a GGUF file into a normal HF model + tokenizer directory (done once per model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = package_dir(package)
    if not (source / file).is_file():
        found = ", ".join(p.name for p in source.glob("*.gguf")) or "none"
        raise ModelError(f"{source / file}: no such GGUF file; the package has: {found}")
    log.info("importing %s from %s", file, source)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=file)
    # transformers dequantizes GGUF to float tensors on load but keeps the GGUF quantizer attached,
    # which refuses to save; the weights are plain floats, so detach it and save a normal model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "lcopt_source.json", {"package": package, "file": file})


def write_variant(model: str, stack: str, source: str, out: Path) -> None:
    """The baseline variant: a pointer to the source weights (model-side techniques add real ones)."""
    resolved = resolve_source(source)
    write_json_atomic(out, {"model": model, "stack": stack, "weights": resolved, "techniques": []})


def apply_prune(parent_json: Path, out_dir: Path, options: dict, calibration: list[str]) -> dict:
    """Minitron-style width pruning of the parent variant, saved as a standard HF model in `out_dir`."""
    from lcopt.prune import PruneTarget, calibration_batches, importance, prune

    model, tokenizer, _ = load_variant(parent_json, "cpu", "float32")
    target = PruneTarget(options["hidden"], options["intermediate"], options["heads"], options.get("multiple_of", 1))
    scores = importance(model, calibration_batches(tokenizer, calibration, options["calibration_tokens"], "cpu"))
    before = sum(p.numel() for p in model.parameters())
    prune(model, scores, target)
    after = sum(p.numel() for p in model.parameters())
    log.info("pruned %s: %d -> %d parameters (%s)", parent_json, before, after, target)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return {"parameters_before": before, "parameters_after": after, "target": vars(target)}


# model-side techniques: name -> apply(parent variant.json, weights dir, options, calibration texts)
MODEL_TECHNIQUES = {"prune": apply_prune, "gptq4": apply_gptq4, "rtn4": apply_rtn4}


def same_tokenizer(a: str, b: str) -> bool:
    """Whether two models tokenize alike (same vocabulary and special tokens)."""
    from transformers import AutoTokenizer

    ta, tb = AutoTokenizer.from_pretrained(a), AutoTokenizer.from_pretrained(b)
    return ta.get_vocab() == tb.get_vocab() and ta.all_special_tokens == tb.all_special_tokens


def use_checkpoint(checkpoint: str, parent_json: Path, out_dir: Path) -> dict:
    """A released checkpoint stands for the technique (the study's Minitron models, a GPTQ model from
    the hub): nothing is computed, the variant points at it. Prompts are built once per model with the
    base model's tokenizer, so the checkpoint must tokenize like its base; this is checked and recorded."""
    weights = resolve_source(checkpoint)
    parent = json.loads(Path(parent_json).read_text())["weights"]
    same = same_tokenizer(parent, weights)
    if not same:
        log.warning("%s does not tokenize like %s: its prompts are built with the latter's tokenizer", weights, parent)
    record = {"checkpoint": checkpoint, "weights": weights, "same_tokenizer_as_source": same}
    with atomic_dir(out_dir) as tmp:
        write_json_atomic(tmp / "checkpoint.json", record)
    return record


def write_technique_variant(
    model: str,
    variant: str,
    technique: str,
    parent_json: Path,
    weights_dir: Path,
    out: Path,
    options: dict,
    calibration: list[str],
) -> None:
    """Apply `technique` to the parent variant, or point at a released checkpoint for it
    (`options["checkpoints"][model]`, used only when the parent is the baseline: a checkpoint is the
    technique applied to the base model)."""
    start = time.perf_counter()
    parent = json.loads(Path(parent_json).read_text())
    checkpoint = options.get("checkpoints", {}).get(model) if not parent["techniques"] else None
    if checkpoint:
        record = use_checkpoint(checkpoint, parent_json, weights_dir)
        weights = record["weights"]
    else:
        record = MODEL_TECHNIQUES[technique](parent_json, weights_dir, options, calibration)
        weights = str(Path(weights_dir).resolve())
    write_json_atomic(
        out,
        {
            "model": model,
            "stack": variant,
            "weights": weights,
            "techniques": [*parent["techniques"], technique],
            "seconds": time.perf_counter() - start,
            technique: record,
        },
    )


def torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def is_gptq_checkpoint(weights: str) -> bool:
    config = Path(weights) / "config.json"
    if not config.is_file():
        return False
    quant = json.loads(config.read_text()).get("quantization_config") or {}
    return quant.get("quant_method") == "gptq" or quant.get("checkpoint_format", "").startswith("gptq")


def build_random(config_dir: str, device: str, dtype, int4_group_size: int | None = None, seed: int = 0):
    """A model of `config_dir`'s architecture with random weights, built on `device` (no download, no
    checkpoint): what memory and speed would be, not what quality. `int4_group_size`: every decoder
    linear layer as random 4-bit weights in the GPU kernel's layout, as a GPTQ model would run."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if int4_group_size:
        from lcopt.int4 import random_tinygemm

        for parent in list(model.model.layers.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    layer = random_tinygemm(child.in_features, child.out_features, int4_group_size, device, dtype)
                    setattr(parent, name, layer)
    return model


def load_variant(variant_json: Path, device: str, dtype: str = "auto"):
    """(model, tokenizer, variant record) of a variant, through `from_pretrained` like any hub model,
    straight onto the device. A GPTQ checkpoint on a GPU is loaded with GPTQModel's CPU layers and
    converted to PyTorch's own int4 kernel (`lcopt.int4`), never a kernel that builds or downloads at
    first use. A variant with `init: random` is built from its config with random weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    variant = json.loads(Path(variant_json).read_text())
    weights = variant["weights"]
    torch_type = torch_dtype(dtype, device)
    if variant.get("init") == "random":
        model = build_random(weights, device, torch_type, variant.get("int4_group_size"))
        tokenizer = AutoTokenizer.from_pretrained(variant.get("tokenizer") or weights)
        return model.eval(), tokenizer, variant
    tokenizer = AutoTokenizer.from_pretrained(weights)
    if device.startswith("cuda") and torch.cuda.device_count() > 1:  # a model too big for one GPU
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch_type, device_map="auto")
    elif device.startswith("cuda") and is_gptq_checkpoint(weights):
        from lcopt.int4 import convert_gptq

        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch_type, device_map="cpu")
        converted = convert_gptq(model, device, torch_type)
        log.info("%s: %d GPTQ layers on tinygemm (aten._weight_int4pack_mm)", weights, converted)
        model = model.to(device)
    else:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch_type, device_map=device)
    return model.eval(), tokenizer, variant
