"""CUDA kernels per decode step of lcopt's fast engine: torch.profiler over one step run without a CUDA graph
(a captured graph replays exactly these kernels), on random weights built from a model's config.

  PYTHONPATH=src python benchmarks/count_kernels.py --model llama-3.1-8b=<config dir> --context 4096 \\
      --paths fast:none fast:kivi4 int4:fast:none --out kernels.json

Prints, per path, the kernels (and memory copies/sets) of one step, per layer, their summed GPU time, and
each kernel's name, count and time. It uses only what the engine has had since issue 12 (`FastEngine(...,
graphs=False)`, `generate`, `segments`, `_segment_step`, `lcopt.int4.random_tinygemm`), so the same script
counts an older checkout's engine: `PYTHONPATH=<old checkout>/src python benchmarks/count_kernels.py ...`.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch


def build(config_dir: str, layers: int | None):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir)
    config._attn_implementation = "sdpa"
    if layers:
        config.num_hidden_layers = layers
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = None
    return model.eval()


def to_int4(model, group_size: int = 128) -> None:
    from lcopt.int4 import random_tinygemm

    for layer in model.model.layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    layer_ = random_tinygemm(child.in_features, child.out_features, group_size, child.weight.device)
                    setattr(parent, name, layer_)


def count(model, kv: str, context: int) -> dict:
    """The GPU activities of one decode step after a prompt of `context` tokens."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from lcopt.engine import FastEngine, static_cache_factory

    try:  # the benchmark's reading of a path's cache (`snapkv+kivi4@2048`): options by technique, since issue 23
        from lcopt.decode_benchmark import cache_options

        kv, options = cache_options(kv)
    except ModuleNotFoundError as exc:  # an older checkout (before issue 22): flat options of one cache technique
        if exc.name != "lcopt.decode_benchmark":
            raise
        from lcopt.techniques import default_options, get

        options = {} if kv == "none" else default_options(get(kv))
    engine = FastEngine(model, static_cache_factory(kv, model, options), graphs=False)
    engine.reserve(context + 16)
    ids = torch.randint(0, model.config.vocab_size, (context,), generator=torch.Generator().manual_seed(0)).tolist()
    engine.generate(ids, 4, stop=set())  # prefill, and the step's kernels compiled
    torch.cuda.synchronize()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for seg in engine.segments:
            engine._segment_step(seg)
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    counts, times = Counter(), Counter()
    for e in events:
        counts[e.name] += 1
        times[e.name] += e.time_range.end - e.time_range.start
    layers = model.config.num_hidden_layers
    copies = sum(n for name, n in counts.items() if name.startswith(("Memcpy", "Memset")))
    return {
        "gpu_activities_per_step": len(events),
        "kernels_per_step": len(events) - copies,
        "memcpy_memset_per_step": copies,
        "kernels_per_layer": (len(events) - copies) / layers,
        "gpu_time_us_per_step": sum(times.values()),
        "layers": layers,
        "by_name": [{"name": name, "count": n, "us": round(times[name], 1)} for name, n in counts.most_common()],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="name=config_dir (config.json)")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--paths", nargs="+", default=["fast:none", "int4:fast:none"])
    parser.add_argument("--layers", type=int, help="build only this many decoder layers (counts are per layer)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for path in args.paths:
        parts = path.split(":")
        if len(parts) not in (2, 3) or parts[-2] != "fast" or (len(parts) == 3 and parts[0] != "int4"):
            parser.error(f"path {path!r}: expected fast:<cache> or int4:fast:<cache>")
    name, _, config_dir = args.model.partition("=")
    model = build(config_dir, args.layers)
    rows = []
    for path in sorted(args.paths, key=lambda p: p.startswith("int4:")):  # bf16 weights first
        if path.startswith("int4:") and not any(type(m).__name__ == "TinyGemmLinear" for m in model.modules()):
            to_int4(model)
        row = {"model": name, "path": path, "context": args.context} | count(model, path.split(":")[-1], args.context)
        rows.append(row)
        print(
            f"\n{path}: {row['kernels_per_step']} kernels per step ({row['kernels_per_layer']:.1f} per layer), "
            f"{row['memcpy_memset_per_step']} copies/sets, {row['gpu_time_us_per_step']:.0f} us of GPU time"
        )
        for k in row["by_name"]:
            print(f"  {k['count']:5d}  {k['us']:9.1f} us  {k['name'][:110]}")
    if args.out:
        args.out.write_text(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "rows": rows}))


if __name__ == "__main__":
    main()
