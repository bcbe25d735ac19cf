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

from lcopt.io import atomic_dir, write_json_atomic

log = logging.getLogger(__name__)

DEMO_MODEL = "lcopt-demo"
DEMO_CHECKPOINT = Path(__file__).parent / "data" / "demo-model"  # the shipped checkpoint (lcopt.demo_model trains it)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


class ModelError(ValueError):
    """A model source that cannot be used; the message names the path and what is missing."""


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"Python package {package!r} is not installed (it should carry the GGUF file)")
    return Path(next(iter(spec.submodule_search_locations)))


def check_local_model(path: Path, weights: bool = True) -> None:
    """Fail early, and clearly, on a directory that cannot hold a loadable model and its tokenizer
    (`weights=False`: an architecture to build with random weights, config and tokenizer only)."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path}: no config.json; not a Hugging Face model directory")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise ModelError(f"{config}: not a JSON object ({exc})") from exc
    if not model_type:
        raise ModelError(f"{config}: no 'model_type'; not a transformers model config")
    if weights and not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        raise ModelError(f"{path}: config.json but no weights ({', '.join(WEIGHT_PATTERNS)})")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"{path}: no tokenizer ({', '.join(TOKENIZER_FILES)})")


def resolve_source(path: str, weights: bool = True) -> str:
    """A `from_pretrained` argument: a checked local directory, or a hub id passed through."""
    if path == DEMO_MODEL:
        path = str(DEMO_CHECKPOINT)
    local = Path(path)
    if local.exists():
        check_local_model(local, weights)
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


def write_variant(model: str, stack: str, source: str, out: Path, init: str = "pretrained") -> None:
    """The baseline variant: a pointer to the source weights (model-side techniques add real ones); with
    `init: random`, to the architecture that is built with random weights when it is loaded."""
    resolved = resolve_source(source, weights=init != "random")
    record = {"model": model, "stack": stack, "weights": resolved, "techniques": []}
    write_json_atomic(out, record | ({"init": "random"} if init == "random" else {}))


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
    """Apply the model-side `technique` to the parent variant, or point at a released checkpoint for it
    (`options["checkpoints"][model]`, used only when the parent is the baseline: a checkpoint is the
    technique applied to the base model)."""
    from lcopt.techniques import get

    start = time.perf_counter()
    parent = json.loads(Path(parent_json).read_text())
    checkpoint = options.get("checkpoints", {}).get(model) if not parent["techniques"] else None
    random = {}
    if parent.get("init") == "random":  # a system run: the technique's shapes and formats, no weights
        record = get(technique).random_variant(options, checkpoint)
        if record is None:
            raise ModelError(f"{technique} cannot be applied to a model with init: random (no weights to act on)")
        random = {"init": "random", **{k: record[k] for k in ("int4_group_size",) if k in record}}
        weights = record.get("weights", parent["weights"])
        with atomic_dir(weights_dir) as tmp:  # the rule's output: no weights, the record of what stands in
            write_json_atomic(tmp / "random.json", record)
    elif checkpoint:
        record = use_checkpoint(checkpoint, parent_json, weights_dir)
        weights = record["weights"]
    else:
        record = get(technique).make_variant(parent_json, weights_dir, options, calibration)
        weights = str(Path(weights_dir).resolve())
    write_json_atomic(
        out,
        {
            "model": model,
            "stack": variant,
            "weights": weights,
            "techniques": [*parent["techniques"], technique],
            **random,
            "seconds": time.perf_counter() - start,
            technique: record,
            # what each technique's load hook gets (`ModelTechnique.prepare_loaded`)
            "options": parent.get("options", {}) | {technique: options},
        },
    )


def torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


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
    straight onto the device unless one of its techniques asks to load elsewhere first
    (`ModelTechnique.load_device`: 4-bit checkpoints load on the CPU and are converted to a GPU kernel
    by the technique's `prepare_loaded`). A variant with `init: random` is built from its config with
    random weights."""
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
    from lcopt.techniques import get

    techniques = [get(t) for t in variant["techniques"]]
    load_on = device
    for technique in techniques:
        load_on = technique.load_device(load_on)
    if load_on.startswith("cuda") and torch.cuda.device_count() > 1:  # a model too big for one GPU
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch_type, device_map="auto")
    else:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch_type, device_map=load_on)
    for technique in techniques:
        technique.prepare_loaded(model, device, variant.get("options", {}).get(technique.name, {}))
    if load_on != device:
        model = model.to(device)
    return model.eval(), tokenizer, variant
