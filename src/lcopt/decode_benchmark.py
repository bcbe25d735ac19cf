"""Decode and prefill speed of lcopt's engines, `transformers`' own paths and torchao's int4 against the GPU's
rooflines (`benchmarks/decode.py` is its command line; the workflow's `decode_benchmark` rule runs it).

One run on one GPU, batch 1, random weights built from a model's config (no download): for each model
architecture and context length, the time to first token, the per-token decode time (median and mean of
the steady steps), peak memory, decode energy per token (NVML), and the rooflines they are measured
against:
- memory roofline of a decode step: the bytes it must read (`lcopt.roofline.decode_bytes`: every decoder
  and LM-head weight once, one row of the embedding table, the KV cache at its mean length during decode)
  over the HBM bandwidth (the datasheet's, by the GPU's name, and the device-to-device copy bandwidth
  measured in this run);
- compute roofline of the prefill: its FLOPs (2 per parameter and token outside the embedding, plus
  causal attention) over the bf16 matmul rate measured in this run.

A path is `[weights:]runner[:cache]`. Runners: `fast` (lcopt's engine: CUDA graph, static cache, fused
decode attention), `reference` (`generate` with a dynamic cache, lcopt's reference KIVI cache, or
`quanto4`: transformers' own `QuantizedCache` with optimum-quanto; such a row has no roofline: its cache
bytes are the library's), `hf-static` (`generate` with transformers' static cache and its automatic
compile) and `hf-compiled` (the whole decode step compiled, in a plain loop over transformers' static
cache, the way torchao's and gpt-fast's own benchmarks decode). Weights: bf16 (no prefix), `int4`
(random codes in tinygemm's layout, the kernel lcopt converts GPTQ checkpoints to: what gptq4 runs) or
`torchao4` (torchao's `Int4WeightOnlyConfig`, tinygemm layout, group 128, on the decoder's linear layers
as for gptq4). A cache may be an eviction method before a representation with a budget in tokens per
layer: `fast:snapkv+kivi4@2048` keeps 2,048 of each layer's prompt tokens, and its roofline counts the
kept cache (each layer's kept tokens on average, plus the answer). Every row has the prefill's peak
memory and what is held once the first token is out (after eviction) beside the whole call's peak.
Writes a JSON file and prints a Markdown table.

  python benchmarks/decode.py --model llama-3.1-8b=path/to/config_dir --contexts 4096 32768 131072 \\
      --paths fast:none fast:kivi4 hf-static int4:fast:none torchao4:hf-compiled --out decode.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import traceback
from pathlib import Path

import torch
import torch._inductor.config

# In the order a run takes them: bf16 weights are lost on conversion, so torchao4 (which quantizes bf16 linear
# layers) gets a fresh bf16 model; the peer comes last, so a time limit cuts its rows, not lcopt's
WEIGHTS = ("bf16", "int4", "torchao4")
RUNNERS = ("fast", "reference", "hf-static", "hf-compiled")
STEADY_AFTER = 4  # decode steps dropped before the per-token times (the steady state)


def parse_path(path: str) -> tuple[str, str, str]:
    """(weights, runner, cache) of a path such as `int4:fast:kivi2`; an error names the allowed values."""
    parts = path.split(":")
    weights = parts.pop(0) if parts[0] in WEIGHTS[1:] else "bf16"
    if not parts or parts[0] not in RUNNERS or len(parts) > 2:
        raise ValueError(
            f"path {path!r}: expected [weights:]runner[:cache] with weights one of {', '.join(WEIGHTS[1:])} "
            f"and runner one of {', '.join(RUNNERS)}"
        )
    kv = parts[1] if len(parts) == 2 else "none"
    if parts[0].startswith("hf-") and kv != "none":
        raise ValueError(f"path {path!r}: {parts[0]} runs transformers' own static cache (no :cache)")
    return weights, parts[0], kv


def ceilings(device) -> dict:
    """Device-to-device copy bandwidth (bytes read + written) and bf16 matmul rate, measured now."""
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize()
    copy = 2 * x.numel() * 10 / (start.elapsed_time(end) / 1e3)
    del x, y
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    flops = 2 * 8192**3 * 10 / (start.elapsed_time(end) / 1e3)
    return {"copy_bytes_per_s": copy, "bf16_matmul_flops": flops}


def build(config_dir: str, device):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = None  # always the full number of new tokens
    return model.eval()


def to_int4(model, group_size: int = 128) -> None:
    """Every linear layer of the decoder (not the LM head) as random 4-bit tinygemm weights."""
    from lcopt.int4 import random_tinygemm

    for layer in model.model.layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    device = child.weight.device
                    setattr(parent, name, random_tinygemm(child.in_features, child.out_features, group_size, device))
                    del child
    torch.cuda.empty_cache()


def require_torchao() -> str:
    """torchao's version, imported only for a `torchao4` path: torchao is not one of lcopt's dependencies
    (once installed, transformers imports it on every model load: pyproject.toml), only the `peers` extra."""
    try:
        import torchao
    except ImportError as exc:
        raise RuntimeError(
            f"the benchmark's torchao4 paths need torchao, which is not installed ({exc}); it is not a "
            "dependency of lcopt: install the benchmark's peers with `pip install -e '.[peers]'` "
            "(torchao==0.18.0), or leave the torchao4 paths out of --paths (benchmark.paths in the config)"
        ) from None
    return torchao.__version__


def to_torchao_int4(model, group_size: int = 128) -> None:
    """The decoder's linear layers (not the LM head, as for gptq4) through torchao's int4 weight-only config
    in tinygemm's layout (`int4_packing_format="tile_packed_to_4d"`: the same `aten._weight_int4pack_mm`;
    torchao's default packing needs the fbgemm/mslk kernels). Its default `set_inductor_config` sets the
    compiler options torchao's own benchmark runs with (coordinate-descent tuning among them)."""
    require_torchao()
    from torchao.quantization import Int4WeightOnlyConfig, quantize_

    quantize_(model.model.layers, Int4WeightOnlyConfig(group_size=group_size, int4_packing_format="tile_packed_to_4d"))
    torch.cuda.empty_cache()


def cache_options(kv: str) -> tuple[str, dict]:
    """(the cache-side techniques, their options as a config that leaves them out gets them: each schema's
    defaults) of a path's cache; `snapkv+kivi4@2048` is snapkv at a budget of 2,048 tokens per layer, then
    kivi4."""
    from lcopt.stacks import cache_options as defaults
    from lcopt.stacks import cache_parts

    method, _, budget = kv.partition("@")
    options = defaults(method)
    if budget:
        if "eviction" not in cache_parts(method):
            raise ValueError(f"cache {kv!r}: a budget (@{budget}) needs an eviction method")
        options[cache_parts(method)["eviction"]]["budget"] = int(budget)
    return method, options


def cache_bytes_per_token(model, kv: str) -> float | None:
    """Bytes per cached token in the fast engine's format (transformers' static cache holds the same bf16
    states); None for a method it does not run (quanto4)."""
    from lcopt.engine import has_static_cache, static_cache_factory

    method, options = cache_options(kv)
    return static_cache_factory(method, model, options)(128).bytes_per_token() if has_static_cache(method) else None


def cached_prompt_tokens(model, kv: str, n: int) -> float:
    """Prompt tokens the cache holds per layer, on average: all `n`, or what the eviction method keeps."""
    from lcopt.engine import cache_geometry
    from lcopt.stacks import cache_parts
    from lcopt.techniques import get

    method, options = cache_options(kv)
    eviction = cache_parts(method).get("eviction")
    if eviction is None:
        return n
    kept = get(eviction).kept_counts(n, cache_geometry(model.config)["layers"], options[eviction])
    return sum(kept) / len(kept)


def run_fast(model, kv, ids, new_tokens, options):
    """lcopt's engine (each layer's cache sized for what it keeps of the prompt, plus the answer); warmed up
    (graph captured, kernels compiled) before the timed call."""
    from lcopt.inference import FastRunner

    runner = FastRunner(model, *cache_options(kv), len(ids) + new_tokens, new_tokens)
    runner.generate(ids[-256:], 8, 0)
    return lambda clock: runner.generate(ids, new_tokens, 0, clock)


def run_reference(model, kv, ids, new_tokens, options):
    """`generate` with lcopt's reference cache for `kv` (none: transformers' DynamicCache)."""
    from lcopt.inference import ReferenceRunner

    runner = ReferenceRunner(model, *cache_options(kv), "cuda")
    runner.generate(ids[-256:], 8, 0)
    return lambda clock: runner.generate(ids, new_tokens, 0, clock)


def run_hf_static(model, kv, ids, new_tokens, options):
    """`generate` with transformers' static cache, which compiles its decode step. The cache is sized for
    the timed call, so the untimed warm-up on the prompt's last 256 tokens compiles the same step (a
    128K prompt is prefilled once, in the timed call)."""
    from transformers import StaticCache

    torch._dynamo.reset()
    cache = StaticCache(config=model.config, max_cache_len=len(ids) + new_tokens)

    def generate(prompt: list[int], n: int, clock=None) -> list[int]:
        cache.reset()
        x = torch.tensor([prompt], device=model.device)
        out = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, past_key_values=cache,
            streamer=clock, pad_token_id=0,
        )  # fmt: skip
        return out[0, len(prompt) :].tolist()

    generate(ids[-256:], 8)
    return lambda clock: generate(ids, new_tokens, clock)


def run_hf_compiled(model, kv, ids, new_tokens, options):
    """The decode step compiled whole (`fullgraph`) and called in a plain loop over transformers' static
    cache, the prefill eager: how torchao's benchmark (`torchao/_models/llama/generate.py`, `decode_one_token`)
    and gpt-fast decode, here over the `transformers` model. The warm-up compiles the step for the timed
    call's cache."""
    from transformers import StaticCache

    torch._dynamo.reset()
    cache = StaticCache(config=model.config, max_cache_len=len(ids) + new_tokens)

    def forward(token: torch.Tensor) -> torch.Tensor:  # [1, 1] -> the next [1, 1]; the cache keeps the position
        logits = model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        return logits[:, -1].argmax(-1, keepdim=True)

    step = torch.compile(forward, mode=options["compile_mode"], fullgraph=True)

    @torch.no_grad()
    def generate(prompt: list[int], n: int, clock=None) -> list[int]:
        cache.reset()
        token = forward(torch.tensor([prompt], device=model.device))
        out = [int(token)]
        if clock:
            clock()
        while len(out) < n:
            token = step(token).clone()  # the step's output buffer is its graph's own
            out.append(int(token))
            if clock:
                clock()
        return out

    generate(ids[-256:], 8)
    return lambda clock: generate(ids, new_tokens, clock)


RUN = {"fast": run_fast, "reference": run_reference, "hf-static": run_hf_static, "hf-compiled": run_hf_compiled}


def measure(model, path: str, n: int, new_tokens: int, probe, options: dict) -> dict:
    from lcopt.probe import TokenClock

    _, runner, kv = parse_path(path)
    ids = torch.randint(0, model.config.vocab_size, (n,), generator=torch.Generator().manual_seed(n)).tolist()
    go = RUN[runner](model, kv, ids, new_tokens, options)
    try:
        torch.cuda.synchronize()
        probe.start()
        clock = TokenClock("cuda", on_first=probe.mark_decode)
        go(clock)
        clock.stop()
        memory = probe.read()
        energy = probe.decode_energy_j()
    finally:
        del go
        gc.collect()
        if runner.startswith("hf-"):  # its compiled graphs hold the static cache: free it for the next rows
            torch._dynamo.reset()
    steps = len(clock.stamps) - 1
    return clock.readings(skip=STEADY_AFTER) | {
        "new_tokens": len(clock.stamps),
        "peak_mem_bytes": memory["peak_mem_bytes"],
        # the prefill's peak, and what it leaves (the cache after eviction): `MemoryProbe.mark_decode`
        **{k: memory[k] for k in ("prefill_peak_mem_bytes", "mem_after_prefill_bytes") if k in memory},
        # NVML's energy counter from the first token to the end (it updates coarsely: short decodes read 0)
        "decode_energy_j_per_token": energy / steps if energy and steps > 0 else None,
    }


def convert(model, weights: str, current: str) -> None:
    """Bring the model's decoder weights from `current` to `weights` (in `WEIGHTS` order)."""
    if weights == current:
        return
    if weights == "torchao4":
        to_torchao_int4(model)
    elif weights == "int4":
        to_int4(model)


def roofline_fields(model, kv: str, n: int, new_tokens: int, meta: dict, row: dict) -> dict:
    from lcopt.roofline import decode_bytes, prefill_flops

    out = {"prefill_flops": prefill_flops(model, n)}
    per_token = cache_bytes_per_token(model, kv)
    if per_token is not None:
        out["decode_bytes"] = decode_bytes(model, per_token, cached_prompt_tokens(model, kv, n), new_tokens)
        for label, bw in (("datasheet", meta["datasheet_bytes_per_s"]), ("copy", meta["copy_bytes_per_s"])):
            if bw:
                out[f"roofline_decode_s_{label}"] = out["decode_bytes"] / bw
    if row.get("tpot_median_s") and out.get("roofline_decode_s_datasheet"):
        out["roofline_fraction_datasheet"] = out["roofline_decode_s_datasheet"] / row["tpot_median_s"]
    if row.get("ttft_s"):
        out["prefill_flops_per_s"] = out["prefill_flops"] / row["ttft_s"]
        out["prefill_fraction_of_matmul"] = out["prefill_flops_per_s"] / meta["bf16_matmul_flops"]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="name=config_dir (config.json)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 32768, 131072])
    parser.add_argument("--paths", nargs="+", default=["fast:none", "fast:kivi4", "fast:kivi2", "reference:none"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=math.inf, help="skip what would start after this")
    parser.add_argument("--compile-mode", default="reduce-overhead", help="torch.compile mode of hf-compiled")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        paths = sorted(args.paths, key=lambda p: WEIGHTS.index(parse_path(p)[0]))  # bf16 weights first
    except ValueError as exc:
        parser.error(str(exc))
    torchao = None
    if any(parse_path(p)[0] == "torchao4" for p in paths):
        try:  # before any work: a missing torchao stops the run at once, not after the other paths
            torchao = require_torchao()
        except RuntimeError as exc:
            parser.error(str(exc))
    from lcopt.io import write_json_atomic
    from lcopt.probe import MemoryProbe
    from lcopt.roofline import datasheet

    args.out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    began = time.perf_counter()
    meta = {
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "triton": __import__("triton").__version__,
        "command": " ".join(sys.argv),
        "compile_mode_hf_compiled": args.compile_mode,
        **ceilings(device),
    }
    if torchao:
        meta["torchao"] = torchao
    meta["datasheet_bytes_per_s"] = datasheet(meta["gpu"])[0]
    print(json.dumps(meta), flush=True)
    probe = MemoryProbe([device])
    inductor = torch._inductor.config.save_config()
    rows = []
    for spec in args.model:
        name, _, config_dir = spec.partition("=")
        model = build(config_dir, device)
        weights = "bf16"
        torch._inductor.config.load_config(inductor)  # not the compiler settings a torchao4 path set (the last)
        for path in paths:
            for n in args.contexts:
                row = {"model": name, "path": path, "context": n}
                if time.perf_counter() - began > args.budget_s:
                    rows.append(row | {"status": "skipped: time budget"})
                    continue
                try:
                    if parse_path(path)[0] == "torchao4" and weights != "bf16":  # it quantizes bf16 layers
                        model = None
                        torch.cuda.empty_cache()
                        model, weights = build(config_dir, device), "bf16"
                    convert(model, parse_path(path)[0], weights)
                    weights = parse_path(path)[0]
                    row |= measure(model, path, n, args.new_tokens, probe, vars(args)) | {"status": "ok"}
                except torch.OutOfMemoryError as exc:
                    row |= {"status": f"oom: {str(exc).splitlines()[0]}"}
                except Exception as exc:  # a path that fails is a row of the table, not the end of the run
                    traceback.print_exc()
                    row |= {"status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                torch.cuda.empty_cache()
                if weights == parse_path(path)[0]:
                    row |= roofline_fields(model, parse_path(path)[2], n, args.new_tokens, meta, row)
                rows.append(row)
                print(json.dumps(row), flush=True)
                # every row as it comes: a run stopped at its time limit keeps them
                write_json_atomic(args.out, {"meta": meta, "rows": rows})
        del model
        torch.cuda.empty_cache()
    torch._inductor.config.load_config(inductor)
    write_json_atomic(args.out, {"meta": meta, "rows": rows})
    print(table(meta, rows))


def table(meta: dict, rows: list[dict]) -> str:
    def ms(x):
        return "–" if x is None else f"{x * 1e3:.2f}"

    lines = [
        f"{meta['gpu']}: copy {meta['copy_bytes_per_s'] / 1e12:.2f} TB/s, bf16 matmul "
        f"{meta['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s (measured); datasheet "
        f"{(meta['datasheet_bytes_per_s'] or 0) / 1e12:.2f} TB/s",
        "",
        "| model | path | context | TTFT s | decode ms/token (median) | roofline ms | of roofline | prefill TFLOP/s "
        "| peak GiB | J/token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['model']} | {r['path']} | {r['context']} | {r.get('status')} | | | | | | |")
            continue
        frac = r.get("roofline_fraction_datasheet")
        joules = r.get("decode_energy_j_per_token")
        lines.append(
            f"| {r['model']} | {r['path']} | {r['context']} | {r['ttft_s']:.2f} | {ms(r['tpot_median_s'])} "
            f"| {ms(r.get('roofline_decode_s_datasheet'))} | {'–' if frac is None else f'{frac:.0%}'} "
            f"| {r.get('prefill_flops_per_s', 0) / 1e12:.0f} | {r['peak_mem_bytes'] / 2**30:.1f} "
            f"| {'–' if joules is None else f'{joules:.2f}'} |"
        )
    return "\n".join(lines)
