"""Greedy generation over a prompt file, one JSONL row per sample, resumable and profiled.

Each finished sample is appended to `<out>.partial` and flushed, so a killed job loses at most the
sample in flight and a rerun continues from the next one (only if the job's inputs and settings are
the same: `<out>.partial.key`); the final file appears (atomically) only
when every sample is done. Timings come from a streamer that stamps every generated token: time to
first token (prefill), per-output-token time (decode), end to end. Memory: torch's peak allocation
and NVML's device usage on a GPU, the process's peak RSS on a CPU; the KV cache's real bytes are
summed from the cache object after generation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers.generation.streamers import BaseStreamer

from lcopt.io import read_jsonl, write_jsonl_atomic, write_text_atomic
from lcopt.prompts import COMPRESSION_FIELDS

log = logging.getLogger(__name__)


class InferenceError(RuntimeError):
    """An error that is not one sample running out of memory: the job stops, naming the sample."""


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, the CPU allocator's failure (a plain RuntimeError) or Python's MemoryError."""
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc)
    )


class TokenClock(BaseStreamer):
    """Stamps the wall time of each generated token (`generate` first puts the prompt, then tokens)."""

    def __init__(self, device: str):
        self.device = device
        self.stamps: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        if self._prompt_seen:
            self.stamps.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def make_cache(kv_method: str, model_config, options: dict | None = None):
    """A fresh cache of the cache-side technique `kv_method` for one `generate` call; `none` (and a
    technique's own None) is transformers' DynamicCache, which `generate` builds itself."""
    if kv_method == "none":
        return None
    from lcopt.techniques import CacheTechnique, get

    technique = get(kv_method)
    if not isinstance(technique, CacheTechnique):
        raise ValueError(f"{kv_method!r} is a {technique.side}-side technique, not a KV-cache method")
    return technique.reference_cache(model_config, dict(options or {}))


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


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class MemoryProbe:
    """Per-sample peak memory: torch + NVML on CUDA, process peak RSS on CPU."""

    def __init__(self, device: str):
        self.device = device
        self.nvml = None
        if device.startswith("cuda"):
            try:
                import pynvml

                pynvml.nvmlInit()
                index = torch.device(device).index or 0
                self.nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(index))
            except Exception as exc:  # NVML is optional; torch's numbers remain
                log.warning("NVML unavailable: %s", exc)

    def start(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict:
        if self.device.startswith("cuda"):
            out = {"peak_mem_bytes": torch.cuda.max_memory_allocated(self.device), "mem_source": "torch.cuda"}
            if self.nvml:
                pynvml, handle = self.nvml
                out["nvml_used_bytes"] = pynvml.nvmlDeviceGetMemoryInfo(handle).used
            return out
        return {"peak_mem_bytes": peak_rss_bytes(), "mem_source": "process peak RSS"}


def generate_one(
    model,
    tokenizer,
    prompt: dict,
    max_new_tokens: int,
    kv_method: str,
    device: str,
    probe: MemoryProbe,
    kv_options: dict | None = None,
) -> dict:
    enc = tokenizer(prompt["prompt"], add_special_tokens=prompt["add_special_tokens"], return_tensors="pt").to(device)
    n_in = enc["input_ids"].shape[1]
    cache = make_cache(kv_method, model.config, kv_options)
    clock = TokenClock(device)
    probe.start()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **enc,
            past_key_values=cache,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            streamer=clock,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            return_dict_in_generate=True,
        )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    end = time.perf_counter()
    new_tokens = out.sequences[0, n_in:]
    n_out = int(new_tokens.shape[0])
    stamps = clock.stamps
    ttft = stamps[0] - start if stamps else end - start
    tpot = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    return {
        "prediction": tokenizer.decode(new_tokens, skip_special_tokens=True),
        "n_input_tokens": n_in,
        "n_output_tokens": n_out,
        "ttft_s": ttft,
        "tpot_s": tpot,
        "e2e_s": end - start,
        "decode_tokens_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if tpot else None,
        "kv_cache_bytes": cache_bytes(out.past_key_values if cache is None else cache),
        **probe.read(),
    }


def _finished(partial: Path) -> list[dict]:
    """Rows a killed job finished; a last line cut off mid-write is dropped (and cut from the file)."""
    if not partial.exists():
        return []
    rows, good_bytes = [], 0
    with open(partial, "rb") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: dropping an incomplete last line (the job was killed while writing it)", partial)
                break
            good_bytes += len(line)
    with open(partial, "r+b") as f:
        f.truncate(good_bytes)
    return rows


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
) -> None:
    """Generate for every prompt not yet in `<out>.partial`, then publish `out_jsonl` atomically."""
    from lcopt.models import load_variant

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    torch.manual_seed(0)
    prompts = read_jsonl(prompts_jsonl)
    partial = Path(f"{out_jsonl}.partial")
    key = job_key(variant_json, prompts_jsonl, kv_method, device, dtype, max_new_tokens, kv_options)
    key_file = Path(f"{partial}.key")
    if partial.exists() and (not key_file.is_file() or key_file.read_text() != key):
        log.warning("%s: left by a job with other inputs or settings; starting over", partial)
        partial.unlink()
    write_text_atomic(key_file, key)
    done = {row["_id"] for row in _finished(partial)}
    if done:
        log.info("resuming %s: %d of %d samples already done", out_jsonl, len(done), len(prompts))
    model, tokenizer, _ = load_variant(variant_json, device, dtype)
    probe = MemoryProbe(device)
    todo = [p for p in prompts if p["_id"] not in done]
    with open(partial, "a", encoding="utf-8") as sink:
        for prompt in tqdm(todo, desc=f"{out_jsonl.parent.name}/{out_jsonl.stem}", unit="sample", mininterval=2):
            budget = max_new_tokens or prompt["max_new_tokens"]
            record = {
                "_id": prompt["_id"],
                "status": "ok",
                "truncated": prompt["truncated"],
                "chat_template": prompt["chat_template"],
                **{k: prompt[k] for k in COMPRESSION_FIELDS if k in prompt},
                "kv_method": kv_method,
                "device": device,
            }
            try:
                record |= generate_one(model, tokenizer, prompt, budget, kv_method, device, probe, kv_options)
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
    rows = {row["_id"]: row for row in _finished(partial)}
    ordered = [rows[p["_id"]] for p in prompts]
    write_jsonl_atomic(out_jsonl, ordered)
    partial.unlink()
    key_file.unlink()
