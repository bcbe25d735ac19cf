"""KIVI's decode kernel compiled for sm_90 on a host without a GPU: registers, shared memory, spills and
the SASS of its hot loop, counted per token and KV head.

The host code of `kernels.KIVIAttention` runs as the engine runs it (Llama-3.1-8B's attention, bf16, on
"meta" tensors), but each Triton launch is compiled for an H100/H200 (`GPUTarget("cuda", 90, 128)`,
Triton's own ptxas) with the arguments' real specialization (16-byte divisibility, constant 1s) instead
of being run. The hot loop is the first innermost backward branch (the branch-free loop over quantized
tiles precedes the general path's); its instructions times the warps, over the tokens an iteration
reads, is the kernel's static count of warp-instructions per token and KV head (what
`docs/benchmarks/kivi_kernel_notes.md` tabulates). "spills" are the bytes of local memory and stack a
thread uses (cuobjdump's LOCAL + STACK); "stall cycles" sums the control codes' stall counts over the
loop (one warp's issue latency, a lower bound on its cycles per iteration when no other warp hides
them). With `--sass DIR`, writes each variant's SASS there. The variants are `benchmarks/kivi_kernel.py`'s.

  PYTHONPATH=src python benchmarks/kivi_sass.py [--variants engine run9-default ...] [--bits 4 2] [--opcodes]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import inspect
import re
from pathlib import Path

import torch

LAYERS, KV_HEADS, Q_HEADS, HEAD_DIM = 1, 8, 32, 128


@contextlib.contextmanager
def compile_instead_of_launch(compiled: list):
    """Every `kernel[grid](...)` compiles for sm_90 (appended to `compiled` with its grid) and returns."""
    import triton
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.runtime.jit import JITFunction

    target = GPUTarget("cuda", 90, 128)

    def run(self, *args, grid, warmup, **kwargs):
        options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages", "maxnreg") if k in kwargs}
        bound = inspect.signature(self.fn).bind(*args, **kwargs).arguments
        signature, constexprs, attrs = {}, {}, {}
        for i, param in enumerate(self.params):
            value = bound[param.name]
            if param.is_constexpr:
                signature[param.name], constexprs[(i,)] = "constexpr", value
                continue
            kind, attr = native_specialize_impl(
                BaseBackend, value, False, not param.do_not_specialize, not param.do_not_specialize_on_alignment
            )
            signature[param.name] = kind
            if kind == "constexpr":
                constexprs[(i,)] = attr
            elif attr:
                attrs[(i,)] = BaseBackend.parse_attr(attr)
        source = triton.compiler.ASTSource(self, signature, constexprs, attrs)
        compiled.append((self.fn.__name__, grid, triton.compile(source, target=target, options=options)))

    saved = JITFunction.run
    JITFunction.run = run
    try:
        yield
    finally:
        JITFunction.run = saved


_INSTRUCTION = re.compile(r"^([0-9a-fA-F-]{2}:[^\t]*)\t(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)[^;]*;")
_LABEL = re.compile(r"^(\w+):\s*$")


def instructions(sass: str) -> list[tuple[int, str, int, str | None]]:
    """(index, opcode, stall cycles, branch target) of each instruction of Triton's SASS listing (a control
    field `wait:read:write:yield:stall` before each instruction, labels on their own lines)."""
    out = []
    for line in sass.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            target = re.search(r"\bBRA\s+(\w+)", line) if m.group(3).startswith("BRA") else None
            out.append((len(out), m.group(3), int(m.group(1).split(":")[-1], 16), target and target.group(1)))
    return out


def labels(sass: str) -> dict[str, int]:
    """Each label's first instruction index."""
    out, index = {}, 0
    for line in sass.splitlines():
        label = _LABEL.match(line)
        if label:
            out[label.group(1)] = index
        elif _INSTRUCTION.match(line):
            index += 1
    return out


def loops(sass: str) -> list[tuple[int, int]]:
    """(first, last) instruction indices of each backward branch's body."""
    where = labels(sass)
    return [(where[t], i) for i, op, _, t in instructions(sass) if t in where and where[t] <= i]


def hot_loop(sass: str) -> tuple[int, int]:
    """The first innermost loop (the quantized tiles' loop precedes the windows' path)."""
    spans = loops(sass)
    innermost = [s for s in spans if not any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]
    return min(innermost)


def classify(opcode: str) -> str:
    base = opcode.split(".")[0]
    groups = {
        "tensor": ("HMMA", "IMMA", "HGMMA"),
        "fp32": ("FFMA", "FADD", "FMUL", "FMNMX", "FSEL", "FSETP", "FCHK", "FSWZADD"),
        "fp16": ("HADD2", "HMUL2", "HFMA2", "HMNMX2", "HSETP2"),
        "mufu": ("MUFU",),
        "convert": ("F2F", "F2FP", "I2F", "F2I", "I2FP", "F2IP"),
        "int/logic": ("LOP3", "IADD3", "IMAD", "SHF", "LEA", "PRMT", "ISETP", "SEL", "IABS", "IMNMX", "VIADD",
                      "BMSK", "SGXT", "LOP", "IADD", "ISCADD", "POPC", "FLO"),
        "move": ("MOV", "UMOV", "MOVM", "CS2R", "S2R", "S2UR", "SHFL", "R2UR", "P2R", "R2P"),
        "global": ("LDG", "STG", "LDGSTS", "LDGDEPBAR", "UBLKCP", "UTMALDG"),
        "shared": ("LDS", "STS", "LDSM", "ATOMS"),
        "sync": ("BAR", "DEPBAR", "WARPSYNC", "BSSY", "BSYNC", "SYNCS", "NOP", "YIELD"),
    }  # fmt: skip
    for group, opcodes in groups.items():
        if base in opcodes or (group == "int/logic" and base.startswith("U")):
            return group
    return "other"


def resources(cubin: bytes) -> dict[str, int]:
    """REG, LOCAL (spilled bytes a thread), ... of the kernel, as `cuobjdump -res-usage` reports them."""
    import os
    import subprocess
    import tempfile

    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    line = next(x for x in out.splitlines() if "REG:" in x)
    return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)}


def analyse(kernel) -> dict:
    sass = kernel.asm["sass"]
    usage = resources(kernel.asm["cubin"])
    first, last = hot_loop(sass)
    body = [(op, stall) for i, op, stall, _ in instructions(sass) if first <= i <= last]
    return {
        "regs": usage["REG"],
        "spills": usage["LOCAL"] + usage.get("STACK", 0),
        "smem": kernel.metadata.shared,
        "loop": len(body),
        "stalls": sum(stall for _, stall in body),
        "by_group": dict(collections.Counter(classify(op) for op, _ in body).most_common()),
        "by_opcode": dict(collections.Counter(op for op, _ in body).most_common()),
        "sass": sass,
    }


def compile_variant(bits: int, fields: dict, max_len: int = 131072) -> dict:
    """One launch of the engine's decode kernel (`kernels.LAUNCHES[bits]` with `fields` replaced) compiled
    for sm_90, analysed."""
    from lcopt.techniques.kivi import kernels
    from lcopt.techniques.kivi.static import KIVIStaticCache

    launch = dataclasses.replace(kernels.LAUNCHES[bits], **fields)
    cache = KIVIStaticCache(LAYERS, KV_HEADS, HEAD_DIM, max_len, Q_HEADS, "meta", torch.bfloat16, fused=False,
                            bits=bits, launch=launch)  # fmt: skip
    attention = kernels.KIVIAttention(
        Q_HEADS, KV_HEADS, HEAD_DIM, cache.max_len, "meta", torch.bfloat16, bits=bits, group_size=cache.group_size,
        value_group=cache.value_group, residual=cache.residual, launch=launch, gpu=True,
    )  # fmt: skip
    compiled = []
    q = torch.empty(Q_HEADS, HEAD_DIM, device="meta", dtype=torch.bfloat16)
    n = torch.empty(1, device="meta", dtype=torch.int32)
    with compile_instead_of_launch(compiled):
        attention(q, n, *cache.layer_buffers(0))
    name, grid, kernel = compiled[0]
    info = analyse(kernel)
    info["tokens_per_iteration"] = attention.block_n
    info["num_warps"] = kernel.metadata.num_warps
    info["per_token_head"] = info["loop"] * info["num_warps"] / info["tokens_per_iteration"]
    info["kernel"], info["grid"] = name, grid
    return info


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--variants", nargs="+", help="names from benchmarks/kivi_kernel.py's variants()")
    parser.add_argument("--sass", type=Path, help="write each variant's SASS to this folder")
    parser.add_argument("--opcodes", action="store_true", help="print the hot loop's opcode counts")
    args = parser.parse_args(argv)
    import kivi_kernel  # benchmarks/ is this script's folder: its variants are the ones timed

    print("| cache | variant | kernel | regs | spills | smem KB | hot loop instr. (stall cycles) | tokens/iter "
          "| warp-instr./token-head | by group |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for bits in args.bits:
        for name, fields in kivi_kernel.variants():
            if args.variants and name not in args.variants:
                continue
            try:
                info = compile_variant(bits, fields)
            except Exception as e:  # a variant that does not compile is a result
                print(f"| kivi{bits} | {name} | failed: {type(e).__name__}: {str(e).splitlines()[0][:150]} |")
                continue
            groups = ", ".join(f"{k} {v}" for k, v in info["by_group"].items())
            print(f"| kivi{bits} | {name} | {info['kernel']} | {info['regs']} | {info['spills']} "
                  f"| {info['smem'] / 1024:.0f} | {info['loop']} ({info['stalls']}) | {info['tokens_per_iteration']} "
                  f"| {info['per_token_head']:.1f} | {groups} |", flush=True)  # fmt: skip
            if args.opcodes:
                print("   ", ", ".join(f"{k} {v}" for k, v in info["by_opcode"].items()))
            if args.sass:
                args.sass.mkdir(parents=True, exist_ok=True)
                (args.sass / f"kivi{bits}_{name}.sass").write_text(info["sass"])


if __name__ == "__main__":
    main()
