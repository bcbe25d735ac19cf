"""Greedy generation over a prompt file, one JSONL row per sample, resumable and profiled.

Each finished sample is appended to `<out>.partial` and flushed, so a killed job loses at most the
sample in flight and a rerun continues from the next one (only if the job's inputs and settings are
the same: `<out>.partial.key`); the final file appears (atomically) only when every sample is done.

Two engines produce the same record: `reference` is `transformers`' own `generate` with the stack's
cache object (every device; the cross-check), `fast` is `lcopt.engine` (CUDA graphs, a preallocated
cache, fused decode attention; the default on a GPU for the architectures it runs). Every job first
runs one untimed warm-up generation, so library start-up, kernel compilation and graph capture stay
out of the timed samples. Per sample: time to first token (prefill + first token), per-token decode
time (mean and median), end to end; peak memory during the sample (torch's peak allocation summed over
the model's GPUs, or the process's peak RSS on a CPU: `lcopt.probe.MemoryProbe`) and its rise over the
memory held when the sample began, and apart the prefill's peak and what is held once the first token
is out (after an eviction method has dropped what it does not keep); the KV cache's bytes; on NVIDIA
GPUs the devices (name, UUID), their NVML memory and the decode energy per token. Every row also says
what it ran with: the prompt budget (a released checkpoint's own context can be shorter than its
base's), the stop tokens of the loaded model's generation config, and the commit of lcopt's code (with
its dirty flag).

The prompts must have been built with the tokenizer the variant runs with (`lcopt.prompts` records its
fingerprint); any other tokenizer is an error, found before the model is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lcopt.gpus import SHARED_BY_ENV
from lcopt.io import read_jsonl, write_jsonl_atomic, write_text_atomic
from lcopt.probe import MemoryProbe, TokenClock
from lcopt.prompts import COMPRESSION_FIELDS
from lcopt.provenance import git_state
from lcopt.tokenization import tokenizer_sha256

log = logging.getLogger(__name__)

ENGINES = ("auto", "reference", "fast")
WARMUP_PROMPT_TOKENS = 512
WARMUP_NEW_TOKENS = 8


class InferenceError(RuntimeError):
    """An error that is not one sample running out of memory: the job stops, naming the sample."""


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, the CPU allocator's failure (a plain RuntimeError) or Python's MemoryError."""
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)
    )


def make_cache(kv_method: str, model_config, options: dict[str, dict] | None = None):
    """A fresh cache of the cache-side techniques `kv_method` (`kivi4`, `snapkv+kivi4`) for one `generate`
    call, each technique with its options (`options[name]`; its defaults for what is left out): the
    representation's cache (None, `none`: transformers' DynamicCache, which `generate` builds itself),
    behind the eviction method's selection when the stack has one (`lcopt.techniques._eviction`)."""
    if kv_method == "none":
        return None
    from lcopt.stacks import StackError, cache_options, cache_parts
    from lcopt.techniques import get

    try:
        parts = cache_parts(kv_method)
    except StackError as exc:
        raise ValueError(f"{kv_method!r} is not a KV-cache method: {exc}") from None
    options = cache_options(kv_method, options)
    representation = parts.get("representation")
    cache = get(representation).reference_cache(model_config, options[representation]) if representation else None
    if "eviction" in parts:
        eviction = parts["eviction"]
        cache = get(eviction).reference_cache(model_config, options[eviction], inner=cache)
    return cache


def cache_bytes(cache) -> int:
    """Bytes held by every tensor of a transformers cache (quantized caches included).

    A wrapper tensor subclass (optimum-quanto's packed tensors) reports the shape and dtype it stands
    for, not what it stores, so its inner tensors are counted instead (`__tensor_flatten__`); a dict
    (HQQ's scales and zeros) is searched like an object."""
    if cache is None:
        return 0
    total, seen = 0, set()

    def visit(obj, depth=0):
        nonlocal total
        if depth > 4:
            return
        if isinstance(obj, torch.Tensor):
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if hasattr(obj, "__tensor_flatten__"):
                for name in obj.__tensor_flatten__()[0]:
                    visit(getattr(obj, name), depth + 1)
            else:
                total += obj.numel() * obj.element_size()
        elif isinstance(obj, list | tuple):
            for item in obj:
                visit(item, depth + 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                visit(item, depth + 1)
        elif hasattr(obj, "__dict__"):
            for item in vars(obj).values():
                visit(item, depth + 1)

    for layer in getattr(cache, "layers", []):
        visit(layer)
    return total


def model_devices(model) -> list[torch.device]:
    return sorted({p.device for p in model.parameters()}, key=str)


def weight_kernels(model) -> list[str]:
    """What does the decoder layers' matrix products: `nn.Linear` (cuBLAS / the CPU's BLAS), or the class
    (and kernel) of a quantized layer."""
    names = set()
    for module in model.model.layers.modules() if hasattr(model, "model") else model.modules():
        if hasattr(module, "KERNEL"):
            names.add(module.KERNEL)
        elif isinstance(module, torch.nn.Linear) or hasattr(module, "qweight"):
            names.add(type(module).__name__)
    return sorted(names)


class ReferenceRunner:
    """`transformers`' own `generate`, with the stack's cache object (None: its DynamicCache)."""

    name = "reference"

    def __init__(self, model, kv_method: str, kv_options: dict, device: str):
        self.model, self.kv_method, self.kv_options, self.device = model, kv_method, kv_options, device
        self.cache = None

    def generate(self, ids: list[int], max_new_tokens: int, pad_token_id: int, clock: TokenClock | None = None):
        """The new tokens; `clock` stamps each (`generate`'s streamer)."""
        self.cache = make_cache(self.kv_method, self.model.config, self.kv_options)
        # a cache that must see the model's forward (an eviction method's window queries) hooks it here
        watch = getattr(self.cache, "watch", None)
        with torch.inference_mode(), watch(self.model) if watch else contextlib.nullcontext():
            out = self.model.generate(
                torch.tensor([ids], device=self.device),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                past_key_values=self.cache,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                streamer=clock,
                pad_token_id=pad_token_id,
                return_dict_in_generate=True,
            )
        if self.cache is None:
            self.cache = out.past_key_values
        return out.sequences[0, len(ids) :].tolist()

    def kv_cache_bytes(self, tokens: int) -> int:
        return cache_bytes(self.cache)


class FastRunner:
    """`lcopt.engine.FastEngine` with the stack's static cache, reserved for the job's longest sample."""

    name = "fast"

    def __init__(self, model, kv_method: str, kv_options: dict, max_len: int, new_tokens: int = 0):
        from lcopt.engine import FastEngine, static_cache_factory

        self.model = model
        self.engine = FastEngine(model, static_cache_factory(kv_method, model, kv_options))
        self.device = str(self.engine.device)
        self.engine.reserve(max_len, new_tokens)

    def generate(self, ids: list[int], max_new_tokens: int, pad_token_id: int, clock: TokenClock | None = None):
        """The new tokens; `clock` stamps each (the engine's `on_token`)."""
        return self.engine.generate(ids, max_new_tokens, on_token=clock)

    def kv_cache_bytes(self, tokens: int) -> int:
        return self.engine.bytes_for(tokens)


def choose_engine(engine: str, model, device: str, kv_method: str = "none") -> str:
    """`auto`: the fast engine on a GPU where it runs the architecture, else the reference."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; allowed: {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    from lcopt.engine import unsupported_reason

    if not device.startswith("cuda"):
        return "reference"
    reason = unsupported_reason(model, kv_method)
    if reason:
        log.info("reference engine: the fast engine does not run %s", reason)
        return "reference"
    return "fast"


def prompt_ids(tokenizer, prompt: dict) -> list[int]:
    return tokenizer(prompt["prompt"], add_special_tokens=prompt["add_special_tokens"])["input_ids"]


READINGS = frozenset(
    {"ttft_s", "tpot_s", "tpot_median_s", "e2e_s", "decode_tokens_per_s", "decode_energy_j_per_token"}
    | {"peak_mem_bytes", "peak_mem_above_start_bytes", "nvml_used_bytes"}
    | {"prefill_peak_mem_bytes", "mem_after_prefill_bytes"}
)
"""Fields of a prediction that are this run's clock, memory and energy readings: they differ between two
runs of the same job, every other field does not."""


def generate_one(runner, tokenizer, prompt: dict, max_new_tokens: int, probe: MemoryProbe) -> dict:
    ids = prompt_ids(tokenizer, prompt)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    probe.start()
    try:
        clock = TokenClock(runner.device, on_first=probe.mark_decode)
        new_tokens = runner.generate(ids, max_new_tokens, pad, clock)
        clock.stop()
    finally:
        memory = probe.read()
    times = clock.readings()
    steps = len(clock.stamps) - 1
    energy = probe.decode_energy_j()
    cached = len(ids) + len(new_tokens) - 1  # every prompt token and every generated token but the last
    kv_bytes = runner.kv_cache_bytes(cached)
    roofline = {}
    if memory.get("gpus"):
        from lcopt.roofline import rooflines

        roofline = rooflines(runner.model, memory["gpus"][0]["name"], len(ids), len(new_tokens), kv_bytes / cached)
    return {
        "prediction": tokenizer.decode(new_tokens, skip_special_tokens=True),
        "n_input_tokens": len(ids),
        "n_output_tokens": len(new_tokens),
        **times,
        "decode_energy_j_per_token": energy / steps if energy is not None and steps > 0 else None,
        "kv_cache_bytes": kv_bytes,
        **roofline,
        **memory,
    }


def warm_up(runner, tokenizer, prompt: dict, pad_token_id: int) -> float:
    """One untimed generation (the prompt's last tokens) before the timed samples; returns its seconds."""
    start = time.perf_counter()
    ids = prompt_ids(tokenizer, prompt)[-WARMUP_PROMPT_TOKENS:]
    runner.generate(ids, WARMUP_NEW_TOKENS, pad_token_id)
    return time.perf_counter() - start


# What every record `run_datasets` writes has: a line without them is not a finished sample.
FINISHED_FIELDS = ("_id", "status", "prediction")


def _finished(partial: Path) -> list[dict]:
    """Rows a killed job finished. A last line cut off mid-write is dropped (and cut from the file), and so
    is any line that is not a finished sample (not a JSON object with `FINISHED_FIELDS`, e.g. an edit by
    hand): the file is rewritten with the rows kept, and the warning says how many."""
    if not partial.exists():
        return []
    rows, kept, dropped, cut = [], [], [], False
    with open(partial, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: dropping an incomplete last line (the job was killed while writing it)", partial)
                cut = True
                break
            if isinstance(row, dict) and all(k in row for k in FINISHED_FIELDS):
                rows.append(row)
                kept.append(line)
            else:
                dropped.append(line.decode("utf-8", "replace").strip())
    if dropped:
        log.warning(
            "%s: dropping %d line(s) that are not finished samples (no %s; the first: %.120s); kept %d rows",
            partial,
            len(dropped),
            ", ".join(FINISHED_FIELDS),
            dropped[0],
            len(rows),
        )
    if dropped or cut:
        with open(partial, "wb") as f:
            f.writelines(kept)
    return rows


def check_tokenizer(prompts: list[dict], tokenizer, prompts_jsonl: Path, variant_json: Path) -> None:
    """The prompts' ids are the ones this variant's tokenizer makes, or the job stops (a released
    checkpoint prompted with its base's tokenizer, chat template or stop tokens would be measured wrong)."""
    built_with = {p.get("tokenizer_sha256") for p in prompts}
    mine = tokenizer_sha256(tokenizer)
    if built_with != {mine}:
        sources = sorted({str(p.get("tokenizer_source")) for p in prompts})
        raise InferenceError(
            f"{prompts_jsonl} was built with the tokenizer of {', '.join(sources)} (fingerprint "
            f"{', '.join(sorted(map(str, built_with)))[:80]}), but {variant_json} runs with another ({mine[:16]}...): "
            "a variant whose tokenizer, chat template or stop tokens differ from its base's needs its own prompts"
        )


def eos_token_ids(model) -> list[int]:
    """The stop tokens generation uses: the loaded model's own generation config (the fast engine's too)."""
    from lcopt.engine import eos_ids

    return sorted(eos_ids(model))


def job_key(variant_json: Path, prompts_jsonl: Path, *settings) -> str:
    """What a job's predictions depend on: a `.partial` left by a job with another key is not resumed."""
    digest = hashlib.sha256()
    for path in (variant_json, prompts_jsonl):
        digest.update(Path(path).read_bytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def run(
    variant_json: Path,
    prompts_jsonl: Path,
    out_jsonl: Path,
    kv_method: str = "none",
    device: str = "auto",
    dtype: str = "auto",
    max_new_tokens: int | None = None,
    kv_options: dict | None = None,
    engine: str = "auto",
) -> None:
    """Generate for every prompt not yet in `<out>.partial`, then publish `out_jsonl` atomically."""
    run_datasets(
        variant_json, [(prompts_jsonl, out_jsonl)], kv_method, device, dtype, max_new_tokens, kv_options, engine
    )


def run_datasets(
    variant_json: Path,
    files: list[tuple[Path, Path]],
    kv_method: str = "none",
    device: str = "auto",
    dtype: str = "auto",
    max_new_tokens: int | None = None,
    kv_options: dict | None = None,
    engine: str = "auto",
) -> None:
    """`run` for several (prompts, predictions) files of one stack, with the model loaded and warmed up once:
    a job's start-up (imports, model load, warm-up: about 5 s on a CPU) is paid once per stack, not once
    per dataset. Every file resumes from its own `.partial`; all are published together at the end, so
    a job killed in its third dataset keeps the first two's samples for its rerun."""
    from lcopt.models import load_variant
    from lcopt.tokenization import load_tokenizer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    kv_options = kv_options or {}
    torch.manual_seed(0)
    pending = []  # (prompts file, output, its prompts, its partial, the prompts it still has to run)
    for prompts_jsonl, out_jsonl in files:
        prompts = read_jsonl(prompts_jsonl)
        partial = Path(f"{out_jsonl}.partial")
        key = job_key(variant_json, prompts_jsonl, kv_method, device, dtype, max_new_tokens, kv_options, engine)
        key_file = Path(f"{partial}.key")
        if partial.exists() and (not key_file.is_file() or key_file.read_text() != key):
            log.warning("%s: left by a job with other inputs or settings; starting over", partial)
            partial.unlink()
        write_text_atomic(key_file, key)
        done = {row["_id"] for row in _finished(partial)}
        if done:
            log.info("resuming %s: %d of %d samples already done", out_jsonl, len(done), len(prompts))
        todo = [p for p in prompts if p["_id"] not in done]
        pending.append((Path(prompts_jsonl), Path(out_jsonl), prompts, partial, todo))
    if any(todo for *_, todo in pending):
        tokenizer = load_tokenizer(json.loads(Path(variant_json).read_text()))
        for prompts_jsonl, _, prompts, _, todo in pending:
            if todo:
                check_tokenizer(prompts, tokenizer, prompts_jsonl, variant_json)
        model, tokenizer, variant = load_variant(variant_json, device, dtype)
        init = variant.get("init", "pretrained")  # random: a system run, its predictions are not scored
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        chosen = choose_engine(engine, model, device, kv_method)
        every_todo = [p for *_, todo in pending for p in todo]
        runner = None
        if chosen == "fast":
            from lcopt.engine import EngineUnsupported

            answer = max(max_new_tokens or p["max_new_tokens"] for p in every_todo)
            longest = max(p["n_tokens"] for p in every_todo) + answer
            try:
                runner = FastRunner(model, kv_method, kv_options, longest, answer)
            except EngineUnsupported as exc:
                if engine == "fast":
                    raise
                log.info("reference engine: %s", exc)
                chosen = "reference"
        if runner is None:
            runner = ReferenceRunner(model, kv_method, kv_options, device)
        log.info("engine %s; warm-up took %.2f s", chosen, warm_up(runner, tokenizer, every_todo[0], pad))
        probe = MemoryProbe(model_devices(model))
        kernels = weight_kernels(model)
        stop_tokens = eos_token_ids(model)
        code = git_state()
    for _, out_jsonl, _, partial, todo in pending:
        with open(partial, "a", encoding="utf-8") as sink:
            for prompt in tqdm(todo, desc=f"{out_jsonl.parent.name}/{out_jsonl.stem}", unit="sample", mininterval=2):
                budget = max_new_tokens or prompt["max_new_tokens"]
                record = {
                    "_id": prompt["_id"],
                    "status": "ok",
                    "truncated": prompt["truncated"],
                    "chat_template": prompt["chat_template"],
                    "max_input_tokens": prompt["max_input_tokens"],
                    "eos_token_ids": stop_tokens,
                    **{k: prompt[k] for k in COMPRESSION_FIELDS if k in prompt},
                    "kv_method": kv_method,
                    "device": device,
                    "engine": chosen,
                    "init": init,
                    "weight_kernels": kernels,
                    # jobs sharing this GPU (LCOPT_JOBS_PER_GPU): above 1, times are throughput, not latency
                    "gpu_shared_by": int(os.environ.get(SHARED_BY_ENV, "1")),
                    **code,
                }
                try:
                    record |= generate_one(runner, tokenizer, prompt, budget, probe)
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise InferenceError(
                            f"{out_jsonl}: sample {prompt['_id']!r} failed with {type(exc).__name__}: {exc}\n"
                            "Only running out of memory is recorded per sample; any other error stops the job. "
                            f"Finished samples stay in {partial}, and a rerun continues after them."
                        ) from exc
                    # recorded, not fatal: the next sample may fit
                    record |= {"status": "oom", "prediction": "", "error": str(exc).strip().splitlines()[0]}
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
    for _, out_jsonl, prompts, partial, _ in pending:
        rows = {row["_id"]: row for row in _finished(partial)}
        write_jsonl_atomic(out_jsonl, [rows[p["_id"]] for p in prompts])
    for *_, partial, _ in pending:
        partial.unlink()
        Path(f"{partial}.key").unlink()
