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
from typing import TYPE_CHECKING

from lcopt.io import atomic_dir, write_json_atomic
from lcopt.tokenization import has_chat_template, load_tokenizer, tokenizer_sha256

if TYPE_CHECKING:
    from lcopt.data import Calibration

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


def config_dict(source: str) -> dict | None:
    """A model's config.json as a dict, without running any code of its repository (a local directory,
    lcopt-demo, or a hub id through the hub's cache); None when it cannot be read here (a hub id offline)."""
    from transformers import PretrainedConfig

    if source == DEMO_MODEL:
        source = str(DEMO_CHECKPOINT)
    try:
        return PretrainedConfig.get_config_dict(source)[0]
    except (OSError, ValueError) as exc:
        log.debug("config of %s not readable here: %s", source, exc)
        return None


def custom_code(source: str) -> str | None:
    """Why loading `source` would run code from its own repository (config.json `auto_map`, or a
    `model_type` transformers does not know, as Nemotron-51B's `nemotron-nas`); None when it would not,
    or when its config cannot be read here (the job that loads it checks again)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    config = config_dict(source)
    if config is None:
        return None
    if config.get("auto_map"):
        return f"its config.json maps classes to the repository's own code (auto_map: {sorted(config['auto_map'])})"
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        return f"its model_type {model_type!r} is not an architecture of transformers, only of its own code"
    return None


def require_trusted(source: str, trusted: bool) -> None:
    """Stop, naming the config key, before loading a model whose own code would run without permission."""
    reason = None if trusted else custom_code(source)
    if reason:
        raise ModelError(
            f"{source}: {reason}. Running it means running that code: list {source!r} under the config's "
            "`trust_remote_code` to allow it"
        )


def context_positions(source: str) -> int | None:
    """The positions a model was built for (config.json `max_position_embeddings`), or None if unknown."""
    value = (config_dict(source) or {}).get("max_position_embeddings")
    return int(value) if value else None


def generation_config(source: str, trust_remote_code: bool = False):
    """`source`'s own generation config (its stop tokens: a base checkpoint stops at another EOS than its
    instruct parent), or one made from its config.json when it ships none."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(source)
    except OSError:
        return GenerationConfig.from_model_config(
            AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        )


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


def write_variant(
    model: str, stack: str, source: str, out: Path, init: str = "pretrained", trust_remote_code: bool = False
) -> None:
    """The baseline variant: a pointer to the source weights (model-side techniques add real ones); with
    `init: random`, to the architecture that is built with random weights when it is loaded."""
    resolved = resolve_source(source, weights=init != "random")
    require_trusted(resolved, trust_remote_code)
    record = {"model": model, "stack": stack, "weights": resolved, "techniques": []}
    record |= {"init": "random"} if init == "random" else {}
    write_json_atomic(out, record | ({"trust_remote_code": True} if trust_remote_code else {}))


def tokenizer_facts(source: str, trust_remote_code: bool = False) -> dict:
    """What decides how a model is prompted and when it stops: its tokenizer (`lcopt.tokenization.tokenizer_sha256`),
    chat template, stop tokens and context length. Reads config and tokenizer only, no weights."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    eos = generation_config(source, trust_remote_code).eos_token_id
    return {
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "vocabulary_size": len(tokenizer),
        "chat_template": has_chat_template(tokenizer),
        "eos_token_ids": sorted(eos if isinstance(eos, list) else [] if eos is None else [eos]),
        "max_position_embeddings": context_positions(source),
    }


def compare_checkpoint(checkpoint: str, base: str, trust_remote_code: bool = False) -> dict:
    """How a released checkpoint differs from the base model it stands for (config and tokenizer
    directories, or hub ids): the workflow builds its prompts from its own tokenizer whenever it is used
    (`lcopt.jobs.prompt_source`), and this record says what that changes."""
    mine, theirs = tokenizer_facts(checkpoint, trust_remote_code), tokenizer_facts(base)
    return {
        "checkpoint_facts": mine,
        "base_facts": theirs,
        "differs_from_base": sorted(k for k in mine if mine[k] != theirs[k]),
    }


def use_checkpoint(checkpoint: str, parent_json: Path, out_dir: Path, trust_remote_code: bool = False) -> dict:
    """A released checkpoint stands for the technique (the study's Minitron models, a GPTQ model from
    the hub): nothing is computed, the variant points at it. Its prompts are its own (tokenizer, chat
    template, context length) and so are its stop tokens; the record says how they differ from its base."""
    weights = resolve_source(checkpoint)
    require_trusted(weights, trust_remote_code)
    parent = json.loads(Path(parent_json).read_text())["weights"]
    record = {"checkpoint": checkpoint, "weights": weights, **compare_checkpoint(weights, parent, trust_remote_code)}
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
    calibration: Calibration | None = None,
    checkpoint: str | None = None,
    trust_remote_code: bool = False,
) -> None:
    """Apply the model-side `technique` to the parent variant, calibrated on `calibration` (held-out
    text, recorded with its ids), or point at a released `checkpoint` for it (only of a baseline: a
    checkpoint is the technique applied to the base model; `lcopt.jobs.checkpoint` picks it)."""
    from lcopt.techniques import get

    start = time.perf_counter()
    parent = json.loads(Path(parent_json).read_text())
    if checkpoint and parent["techniques"]:
        raise ModelError(
            f"{variant}: a released checkpoint stands for a technique of the base model, not {parent_json}"
        )
    trusted = bool(parent.get("trust_remote_code") or trust_remote_code)
    random = {}
    if parent.get("init") == "random":  # a system run: the technique's shapes and formats, no weights
        record = get(technique).random_variant(options, checkpoint)
        if record is None:
            raise ModelError(f"{technique} cannot be applied to a model with init: random (no weights to act on)")
        random = {"init": "random", **{k: record[k] for k in ("int4_group_size",) if k in record}}
        weights = record.get("weights", parent["weights"])
        require_trusted(weights, trusted)
        if checkpoint and weights != parent["weights"]:  # a released checkpoint's architecture, prompted as itself
            record |= compare_checkpoint(weights, parent["weights"], trusted)
        with atomic_dir(weights_dir) as tmp:  # the rule's output: no weights, the record of what stands in
            write_json_atomic(tmp / "random.json", record)
    elif checkpoint:
        record = use_checkpoint(checkpoint, parent_json, weights_dir, trusted)
        weights = record["weights"]
    else:
        texts = calibration.texts if calibration else []
        record = get(technique).make_variant(parent_json, weights_dir, options, texts)
        record |= {"calibration": calibration.record} if calibration else {}
        weights = str(Path(weights_dir).resolve())
    write_json_atomic(
        out,
        {
            "model": model,
            "stack": variant,
            "weights": weights,
            "techniques": [*parent["techniques"], technique],
            **random,
            **({"trust_remote_code": True} if trusted else {}),
            "seconds": time.perf_counter() - start,
            technique: record,
            # every technique's options along the stack, as it ran
            "options": parent.get("options", {}) | {technique: options},
        },
    )


def torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def build_random(
    config_dir: str,
    device: str,
    dtype,
    int4_group_size: int | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
):
    """A model of `config_dir`'s architecture with random weights, built on `device` (no download, no
    checkpoint): what memory and speed would be, not what quality. It stops at the directory's own
    stop tokens (`generation_config`). `int4_group_size`: every decoder linear layer as random 4-bit
    weights in the GPU kernel's layout, as a GPTQ model would run."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir, trust_remote_code=trust_remote_code)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    model.generation_config = generation_config(config_dir, trust_remote_code)
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
    straight onto the device, unless one of its techniques loads its own checkpoints
    (`ModelTechnique.load`: 4-bit GPTQ checkpoints on a GPU go straight into PyTorch's int4 kernel). A
    variant with `init: random` is built from its config with random weights. Custom model code runs
    only for a variant the config trusts (`trust_remote_code`)."""
    import torch
    from transformers import AutoModelForCausalLM

    variant = json.loads(Path(variant_json).read_text())
    weights = variant["weights"]
    trusted = bool(variant.get("trust_remote_code"))
    torch_type = torch_dtype(dtype, device)
    tokenizer = load_tokenizer(variant)
    if variant.get("init") == "random":
        model = build_random(weights, device, torch_type, variant.get("int4_group_size"), trust_remote_code=trusted)
        return model.eval(), tokenizer, variant
    from lcopt.techniques import get

    model = None
    for technique in map(get, variant["techniques"]):
        model = technique.load(weights, device, torch_type, trusted) if model is None else model
    if model is None:
        too_big_for_one_gpu = device.startswith("cuda") and torch.cuda.device_count() > 1
        model = AutoModelForCausalLM.from_pretrained(
            weights, dtype=torch_type, device_map="auto" if too_big_for_one_gpu else device, trust_remote_code=trusted
        )
    return model.eval(), tokenizer, variant
