"""Decode and prefill speed of lcopt's engines and `transformers`' own paths against the GPU's rooflines.

One run on one GPU, batch 1, random weights built from a model's config (no download): for each model
architecture and context length, the time to first token, the per-token decode time (median and
mean of the steady steps), peak memory, decode energy per token (NVML), and the rooflines they are
measured against:
- memory roofline of a decode step: bytes it must read (every parameter once, as the study's
  targets count them, plus the KV cache at its mean length during decode) over the HBM bandwidth (the
  datasheet's, and the device-to-device copy bandwidth measured in this run);
- compute roofline of the prefill: its FLOPs (2 per parameter and token outside the embedding, plus
  causal attention) over the bf16 matmul rate measured in this run.

Paths: `fast:<cache>` (lcopt's engine: CUDA graph, static cache, fused decode attention),
`reference:<cache>` (`generate` with a dynamic cache, lcopt's reference KIVI cache, or `quanto4`:
transformers' own `QuantizedCache` with optimum-quanto; such a row has no roofline: its cache bytes
are the library's),
`hf-static` (`generate` with transformers' static cache and its automatic compile), and the same with
4-bit weights (`gptq4`: random codes in tinygemm's layout, the kernel lcopt converts GPTQ checkpoints
to). Writes a JSON file and prints a Markdown table.

  python benchmarks/decode.py --model llama-3.1-8b=path/to/config_dir --contexts 4096 32768 131072 \\
      --paths fast:none fast:kivi4 reference:none hf-static gptq4:fast:none --out decode.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from itertools import pairwise
from pathlib import Path

import torch


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


def cache_options(kv: str) -> dict:
    """The cache method's options as a config that leaves them out gets them (its schema's defaults)."""
    from lcopt.techniques import default_options, get

    return {} if kv == "none" else default_options(get(kv))


def cache_bytes_per_token(model, kv: str) -> float | None:
    """Bytes per cached token in the fast engine's format; None for a method it does not run (quanto4)."""
    from lcopt.engine import has_static_cache, static_cache_factory

    return static_cache_factory(kv, model, cache_options(kv))(128).bytes_per_token() if has_static_cache(kv) else None


class Energy:
    def __init__(self, device):
        try:
            import pynvml

            pynvml.nvmlInit()
            uuid = f"GPU-{torch.cuda.get_device_properties(device).uuid}"
            self.handle, self.nvml = pynvml.nvmlDeviceGetHandleByUUID(uuid), pynvml
        except Exception:
            self.handle = None

    def read_j(self) -> float | None:
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3 if self.handle else None


def run_fast(model, kv, ids, new_tokens):
    """lcopt's engine; warmed up (graph captured, kernels compiled) before the timed call."""
    from lcopt.engine import FastEngine, static_cache_factory

    engine = FastEngine(model, static_cache_factory(kv, model, cache_options(kv)))
    engine.reserve(len(ids) + new_tokens)
    engine.generate(ids[-256:], 8, stop=set())

    def go() -> list[float]:
        stamps: list[float] = []
        engine.generate(ids, new_tokens, stop=set(), on_token=lambda: stamps.append(time.perf_counter()))
        return stamps

    return go


def run_reference(model, kv, ids, new_tokens):
    """`generate` with lcopt's reference cache for `kv` (none: transformers' DynamicCache)."""
    from lcopt.inference import ReferenceRunner

    runner = ReferenceRunner(model, kv, cache_options(kv), "cuda")
    runner.generate(ids[-256:], 8, pad_token_id=0)
    return lambda: runner.generate(ids, new_tokens, pad_token_id=0)[1]


def run_hf_static(model, kv, ids, new_tokens):
    """`generate` with transformers' static cache, which compiles its decode step; the untimed first
    call at the same shape pays for the compilation."""
    from lcopt.inference import TokenClock

    x = torch.tensor([ids], device="cuda")

    def go() -> list[float]:
        clock = TokenClock("cuda")
        model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens, do_sample=False,
            cache_implementation="static", streamer=clock, pad_token_id=0,
        )  # fmt: skip
        return clock.stamps

    go()
    return go


RUNNERS = {"fast": run_fast, "reference": run_reference, "hf-static": run_hf_static}


def measure(model, path: str, n: int, new_tokens: int, energy: Energy) -> dict:
    kind, _, kv = path.partition(":")
    ids = torch.randint(0, model.config.vocab_size, (n,), generator=torch.Generator().manual_seed(n)).tolist()
    go = RUNNERS[kind](model, kv or "none", ids, new_tokens)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    joules = energy.read_j()
    start = time.perf_counter()
    stamps = go()
    torch.cuda.synchronize()
    end = time.perf_counter()
    joules = None if joules is None else energy.read_j() - joules
    steps = [b - a for a, b in pairwise(stamps)][4:]  # steady state
    decode_share = (stamps[-1] - stamps[0]) / (end - start) if len(stamps) > 1 else None
    return {
        "ttft_s": stamps[0] - start if stamps else None,
        "tpot_median_s": statistics.median(steps) if steps else None,
        "tpot_mean_s": statistics.fmean(steps) if steps else None,
        "new_tokens": len(stamps),
        "peak_mem_bytes": torch.cuda.max_memory_allocated(),
        # NVML's energy counter over the whole call, apportioned to decode by its share of the time
        "decode_energy_j_per_token": joules * decode_share / (len(stamps) - 1) if joules and decode_share else None,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="name=config_dir (config.json)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 32768, 131072])
    parser.add_argument("--paths", nargs="+", default=["fast:none", "fast:kivi4", "fast:kivi2", "reference:none"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=math.inf, help="skip what would start after this")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from lcopt.io import write_json_atomic

    args.out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    began = time.perf_counter()
    meta = {
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "triton": __import__("triton").__version__,
        "command": " ".join(sys.argv),
        **ceilings(device),
    }
    from lcopt.roofline import DATASHEET

    meta["datasheet_bytes_per_s"] = DATASHEET.get(meta["gpu"], (None, None))[0]
    print(json.dumps(meta), flush=True)
    energy = Energy(device)
    rows = []
    for spec in args.model:
        name, _, config_dir = spec.partition("=")
        model = build(config_dir, device)
        quantized = False
        for path in sorted(args.paths, key=lambda p: p.startswith("gptq4:")):  # bf16 paths first
            if path.startswith("gptq4:") and not quantized:
                to_int4(model)
                quantized = True
            run_path = path.removeprefix("gptq4:")
            kv = run_path.partition(":")[2] or "none"
            for n in args.contexts:
                row = {"model": name, "path": path, "context": n}
                if time.perf_counter() - began > args.budget_s:
                    rows.append(row | {"status": "skipped: time budget"})
                    continue
                try:
                    row |= measure(model, run_path, n, args.new_tokens, energy) | {"status": "ok"}
                except torch.OutOfMemoryError as exc:
                    row |= {"status": f"oom: {str(exc).splitlines()[0]}"}
                except Exception as exc:  # a path that fails is a row of the table, not the end of the run
                    traceback.print_exc()
                    row |= {"status": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                torch.cuda.empty_cache()
                mean_len = n + args.new_tokens / 2
                from lcopt.roofline import prefill_flops, weight_bytes

                per_token = cache_bytes_per_token(model, kv)
                if per_token is not None:
                    read = weight_bytes(model) + per_token * mean_len
                    row["decode_bytes"] = read
                    for label, bw in (("datasheet", meta["datasheet_bytes_per_s"]), ("copy", meta["copy_bytes_per_s"])):
                        if bw:
                            row[f"roofline_decode_s_{label}"] = read / bw
                row["prefill_flops"] = prefill_flops(model, n)
                if row.get("tpot_median_s") and row.get("roofline_decode_s_datasheet"):
                    row["roofline_fraction_datasheet"] = row["roofline_decode_s_datasheet"] / row["tpot_median_s"]
                if row.get("ttft_s"):
                    row["prefill_flops_per_s"] = row["prefill_flops"] / row["ttft_s"]
                    row["prefill_fraction_of_matmul"] = row["prefill_flops_per_s"] / meta["bf16_matmul_flops"]
                rows.append(row)
                print(json.dumps(row), flush=True)
                # every row as it comes: a run stopped at its time limit keeps them
                write_json_atomic(args.out, {"meta": meta, "rows": rows})
        del model
        torch.cuda.empty_cache()
    write_json_atomic(args.out, {"meta": meta, "rows": rows})
    print(table(meta, rows))


def table(meta: dict, rows: list[dict]) -> str:
    def ms(x):
        return "–" if x is None else f"{x * 1e3:.2f}"

    lines = [
        f"{meta['gpu']}: copy {meta['copy_bytes_per_s'] / 1e12:.2f} TB/s, bf16 matmul "
        f"{meta['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s (measured); datasheet "
        f"{(meta['datasheet_bytes_per_s'] or 0) / 1e12:.1f} TB/s",
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


if __name__ == "__main__":
    main()
