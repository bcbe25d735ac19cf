"""KIVI's decode attention kernel alone, beside the dense bf16 kernel, in bytes per second.

Llama-3.1-8B's attention (32 layers, 8 KV heads of 128 channels, 32 query heads, bf16), batch 1, caches
filled with random codes, scales and states (no model). For each length (32K and 128K by default), each
cache (bf16; KIVI at 4 and 2 bits) and each launch variant of the KIVI kernel (`variants()`: the engine's
launch, then its neighbours in programs per layer, pipeline stages, register cap, inline-PTX or plain
unpacking), the time of one decode step's attention over all layers (split kernel and merge, per layer; the median of
`triton.testing.do_bench_cudagraph`: replayed from a CUDA graph, as the engine does), and the bytes of
the cache it reads per second: packed codes, scales and minimums of every layer at that length (the
windows aside). Each variant is checked against attention over the dequantized cache in float32
(layer 0, relative L2 error of the bf16 output). A variant that fails to compile or run is reported
and skipped; variants stop being started once `--budget-s` has passed. Prints a Markdown table and the
fastest correct variant of each cache as the `Launch(...)` to put in `kernels.LAUNCHES`; writes JSON.

  PYTHONPATH=src python benchmarks/kivi_kernel.py --out docs/benchmarks/h200_kivi_kernel.json
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import traceback

import torch

LAYERS, KV_HEADS, Q_HEADS, HEAD_DIM = 32, 8, 32, 128


def variants() -> list[tuple[str, dict]]:
    """(name, fields of `Launch` that differ from the engine's launch, `kernels.LAUNCHES`: since run 9, ptxas's
    register choice and 528 programs, i.e. one wave of 4 CTAs an SM on 132 SMs)."""
    return [
        ("engine", {}),
        ("run9-default", {"programs": 792, "maxnreg": 168}),  # the engine's before: 6 CTAs an SM, one wave
        ("programs1056", {"programs": 1056}),
        ("stages3", {"num_stages": 3}),
        ("regs128-1056", {"maxnreg": 128, "programs": 1056}),  # 8 CTAs an SM: one wave at 1056
        ("warps4-streams8", {"num_warps": 4, "streams": 8, "programs": 396, "maxnreg": 168}),  # 3 CTAs an SM
        ("shift", {"asm": False}),
    ]


def timed(fn) -> float:
    """Median milliseconds of `fn` replayed from a CUDA graph (plain launches if capture fails)."""
    import triton.testing

    try:
        return float(triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median"))
    except Exception:  # some setups cannot capture: time plain launches
        traceback.print_exc()
        return float(triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median"))


def fill_kivi(cache, length: int, generator: torch.Generator) -> None:
    """Random codes and windows; scales and minimums in a range like real states' (bf16)."""
    for codes in (cache.k_codes, cache.v_codes):
        codes.copy_(torch.randint(0, 256, codes.shape, dtype=torch.uint8, device=codes.device, generator=generator))
    for scale, low, high in ((cache.k_scale, 0.02, 0.3), (cache.v_scale, 0.01, 0.1)):
        scale.uniform_(low, high, generator=generator)
    for minimum in (cache.k_min, cache.v_min):
        minimum.uniform_(-2.0, -0.5, generator=generator)
    for window in (cache.k_window, cache.v_window):
        window.normal_(generator=generator)


def kivi_bytes(cache, length: int) -> int:
    """Packed bytes of every layer's quantized cache at `length` tokens: codes, scales and minimums."""
    return cache.bytes_per_token() * length


def relative_error(got: torch.Tensor, exact: torch.Tensor) -> float:
    return ((got.float() - exact).norm() / exact.norm()).item()


def bench_dense(length: int, q: torch.Tensor, generator: torch.Generator) -> dict:
    from lcopt.decode_attention import attend_reference
    from lcopt.static_cache import DenseCache

    cache = DenseCache(LAYERS, KV_HEADS, HEAD_DIM, length, Q_HEADS, q.device, torch.bfloat16, fused=True)
    cache.k.normal_(generator=generator)
    cache.v.normal_(generator=generator)
    n = torch.tensor([length], dtype=torch.int32, device=q.device)

    def step():
        for layer in range(LAYERS):
            cache.attend(layer, q, n)

    exact = attend_reference(q.float(), *(x.float() for x in cache.read(0, length)))
    error = relative_error(cache.attend(0, q, n), exact)
    read = cache.bytes_per_token() * length
    row = {"cache": "bf16", "variant": "engine", "length": length, "bytes": read, "relative_error": error,
           "status": "ok" if error < 1e-2 else "wrong"}  # fmt: skip
    if q.device.type == "cuda":
        row["ms"] = timed(step)
        row["gb_per_s"] = read / row["ms"] / 1e6
    return row


def bench_kivi(bits: int, length: int, q: torch.Tensor, generator: torch.Generator, deadline: float,
               names: set[str] | None = None) -> list[dict]:  # fmt: skip
    from lcopt.decode_attention import attend_reference
    from lcopt.techniques.kivi import kernels
    from lcopt.techniques.kivi.static import KIVIStaticCache

    cache = KIVIStaticCache(LAYERS, KV_HEADS, HEAD_DIM, length, Q_HEADS, q.device, torch.bfloat16, fused=True,
                            bits=bits)  # fmt: skip
    fill_kivi(cache, length, generator)
    n = torch.tensor([length], dtype=torch.int32, device=q.device)
    exact = attend_reference(q.float(), *cache.read(0, length, torch.float32))
    read = kivi_bytes(cache, length)
    rows = []
    for name, fields in variants():
        if names and name not in names:
            continue
        launch = dataclasses.replace(kernels.LAUNCHES[bits], **fields)
        row = {"cache": f"kivi{bits}", "variant": name, "launch": dataclasses.asdict(launch), "length": length,
               "bytes": read}  # fmt: skip
        rows.append(row)
        if time.monotonic() > deadline:
            row["status"] = "skipped (time budget)"
            continue
        try:
            attention = kernels.KIVIAttention(
                Q_HEADS, KV_HEADS, HEAD_DIM, cache.max_len, q.device, torch.bfloat16, bits=bits,
                group_size=cache.group_size, value_group=cache.value_group, residual=cache.residual, launch=launch,
            )  # fmt: skip
            buffers = [cache.layer_buffers(i) for i in range(LAYERS)]
            row["relative_error"] = relative_error(attention(q, n, *buffers[0]), exact)

            def step(attention=attention, buffers=buffers):
                for layer in buffers:
                    attention(q, n, *layer)

            if q.device.type == "cuda":  # the interpreter's smoke run checks the error only
                row["ms"] = timed(step)
                row["gb_per_s"] = read / row["ms"] / 1e6
            row["status"] = "ok" if row["relative_error"] < 1e-2 else "wrong"
        except Exception as e:  # a variant that does not compile is a result, not the end
            row["status"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            traceback.print_exc()
        print(table_row(row), flush=True)
    del cache
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def table_row(r: dict) -> str:
    ms = f"{r['ms']:.3f}" if "ms" in r else "–"
    per_layer = f"{r['ms'] * 1e3 / LAYERS:.1f}" if "ms" in r else "–"
    rate = f"{r['gb_per_s']:.0f}" if "gb_per_s" in r else "–"
    error = f"{r['relative_error']:.1e}" if "relative_error" in r else "–"
    length = f"{r['length'] // 1024}K" if r["length"] % 1024 == 0 else str(r["length"])
    return (f"| {r['cache']} | {r['variant']} | {length} | {ms} | {per_layer} | {r['bytes'] / 1e9:.2f} "
            f"| {rate} | {error} | {r['status']} |")  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--budget-s", type=float, default=170.0, help="start no variant after this many seconds")
    parser.add_argument("--variants", nargs="+", help=f"only these ({', '.join(n for n, _ in variants())})")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run in Triton's interpreter (no timing)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import triton

    from lcopt.io import write_json_atomic

    start = time.monotonic()
    deadline = start + args.budget_s
    generator = torch.Generator(device=args.device).manual_seed(0)
    q = torch.randn(Q_HEADS, HEAD_DIM, device=args.device, generator=generator).bfloat16()
    device = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    meta = {"device": device, "torch": torch.__version__, "triton": triton.__version__,
            "layers": LAYERS, "kv_heads": KV_HEADS, "q_heads": Q_HEADS, "head_dim": HEAD_DIM, "dtype": "bfloat16",
            "timing": "do_bench_cudagraph median: one decode step's attention, all layers"}  # fmt: skip
    print("| cache | variant | length | ms / step | µs / layer | GB read | GB/s | rel. error | status |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for length in args.lengths:
        try:
            rows.append(bench_dense(length, q, generator))
        except Exception as e:
            rows.append({"cache": "bf16", "variant": "engine", "length": length, "bytes": 0,
                         "status": f"failed: {type(e).__name__}: {e}"})  # fmt: skip
            traceback.print_exc()
        print(table_row(rows[-1]), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        for bits in args.bits:
            rows += bench_kivi(bits, length, q, generator, deadline, set(args.variants or []))
            write_json_atomic(args.out, {"meta": meta, "rows": rows})
    meta["seconds"] = time.monotonic() - start
    write_json_atomic(args.out, {"meta": meta, "rows": rows})
    print()
    for cache in sorted({r["cache"] for r in rows} - {"bf16"}):
        ok = [r for r in rows if r["cache"] == cache and r["status"] == "ok"]
        if not ok:
            print(f"{cache}: no correct variant")
            continue
        by_variant = {}
        for r in ok:
            by_variant.setdefault(r["variant"], []).append(r)
        by_variant = {v: rs for v, rs in by_variant.items() if all("ms" in r for r in rs)}
        if not by_variant:
            print(f"{cache}: not timed")
            continue
        complete = {v: rs for v, rs in by_variant.items() if len(rs) == len(args.lengths)}
        best = min(complete or by_variant, key=lambda v: sum(r["ms"] for r in by_variant[v]))
        launch = by_variant[best][0]["launch"]
        print(f"{cache}: fastest over all lengths {best}: Launch({', '.join(f'{k}={v!r}' for k, v in launch.items())})")


if __name__ == "__main__":
    main()
