"""KIVI's Triton kernels for the fast engine's cache (`lcopt.techniques.kivi.static`): the append of one
token and the decode attention, written to be bound by the bytes of the packed cache rather than by
unpacking.

Layout (`lcopt.quant.pack_planes`): byte j of a token holds channel j + p * DB at bits p * bits (DB =
D * bits / 8 bytes a token; plane p = channels [p * DB, (p + 1) * DB)). Keys: codes [S, DB] per head,
scale and minimum per channel over groups of `group_size` (GK) tokens, [S / GK, D]. Values: codes
interleaved by `VALUE_INTERLEAVE` (VI) tokens, [S / VI, DB, VI] (the VI tokens of one byte column are
contiguous: a tensor-core operand with tokens along K reads 4 of them as one word); scale and minimum
per token over groups of GV channels, stored by group, [D / GV, S]. The newest keys and values sit in
full-precision windows: keys at positions >= ((len - 1) // R) * R in slot pos % R, values at positions
>= max(len - 1 - R, 0) in slot pos % (R + 1) (KIVI's official order: a step attends before it
quantizes, `reference.py`).

The decode attention is flash-decoding: a program per (KV head, split of the sequence), then
`decode_attention._decode_combine` merges the splits. The kernel (v2; the `_v2_*` functions): a
tile is `streams` key groups of GK tokens, each its own stream with its own running softmax (merged at
the end of the program), spread over the warps (two a warp by default). Tokens are the M dimension of
the score dot (scores^T = K . q^T, the G query heads padded to 8 as N) and the K dimension of the value
dot (out^T = V^T . p), so a token costs 8 softmax values, not 16 rows. Codes become exact integers in
the cache's dtype by bit tricks in inline PTX on 4 bytes at once (`prmt` spreads two bytes over a
register's halves, `shr` brings a plane down, `lop3` keeps its bits and ORs the exponent of 128 (bf16)
or 1024 (fp16), `sub` takes that away), then the dequantization is one packed fma a pair (c * scale +
minimum) on the tensor-core operand in registers: keys with their group's channel scales, values with
their tokens' scales. No scale is folded into the query or the probabilities, so both dots reuse one
operand (q for every tile, p for the value chunks) and p's is the only layout conversion through shared
memory. Scales and minimums are loaded by cp.async (pipelined) straight into the operand layout: that
takes 4 bytes a thread, i.e. two streams a warp. With `asm=False` (Triton's interpreter, which cannot
run inline PTX) plain shifts, masks and conversions give the same codes; the interpreter also computes
a bf16 cache in float32 (its bf16 arithmetic is wrong). `docs/benchmarks/kivi_kernel_notes.md` has the
versions (v1, deleted after run 9 measured it slower) and their counts.
Tiles below both windows take a branch-free loop (pipelined by Triton); the last tiles of a sequence
(at most about 2R tokens) take a general path that reads the windows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from lcopt.decode_attention import DecodeAttention, triton


@dataclass(frozen=True)
class Launch:
    """Launch parameters of the decode kernel: `LAUNCHES` holds the engine's; `benchmarks/kivi_kernel.py`
    times others and prints the fastest as a `Launch(...)` to put there."""

    streams: int = 4  # key groups a tile, each its own stream, spread over the warps (a multiple of num_warps)
    num_warps: int = 2
    num_stages: int = 2
    # (KV head, split) programs per layer and registers a thread (ptxas's cap; None: its own choice, up to
    # 255): one wave of 4 CTAs of 2 warps an SM at 255 registers on 132 SMs. Until run 9 the engine ran 792
    # programs at 168 registers (6 CTAs an SM; `run9-default` in benchmarks/kivi_kernel.py).
    programs: int = 528
    asm: bool = True  # inline PTX to unpack codes (False: plain Triton ops, as the interpreter runs)
    maxnreg: int | None = None


# The engine's, by bits: the defaults, `regs-free-528` of run 9 (docs/benchmarks/run9/kivi-kernel-run9.log,
# H100, all 32 layers of Llama-3.1-8B's attention, ms a step), the fastest summed over 32K and 128K for both
# widths: kivi4 128K 3.597 against 4.366 for programs=792, maxnreg=168 (32K 1.929 against 1.931); kivi2 128K
# 2.919 against 3.126 (32K 1.625 against 1.528: 0.1 ms slower there). 4 CTAs an SM at ptxas's 255 registers
# spill less (static counts in the notes).
LAUNCHES = {4: Launch(), 2: Launch()}
VALUE_INTERLEAVE = 16  # value codes: tokens a byte column holds contiguously


def tile_tokens(launch: Launch, group_size: int) -> int:
    """Tokens one iteration of the decode kernel reads (a split is a multiple of it)."""
    return launch.streams * group_size


def chunk_width(head_dim: int, bits: int, value_group: int) -> int:
    """Channels of one value chunk: one byte column block of one plane, within one value group."""
    return min(head_dim * bits // 8, value_group)


def unfused_reason(head_dim: int, bits: int, group_size: int, value_group: int, residual: int) -> str | None:
    """Why the fused kernels cannot take this geometry (torch then reads the cache), or None."""

    def pow2(x: int) -> bool:
        return x > 0 and x & (x - 1) == 0

    cw = chunk_width(head_dim, bits, value_group)
    if not all(map(pow2, (head_dim, group_size, residual, cw))):
        return "head_dim, group_size, residual_length and the value chunk must be powers of 2"
    if cw < 16 or head_dim // cw not in (2, 4):
        return f"a value chunk of {cw} channels ({head_dim // cw} a head): the kernel takes 2 or 4 of >= 16"
    if value_group % cw:
        return f"value groups of {value_group} channels are not whole chunks of {cw}"
    return None


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _pick(P: tl.constexpr, x0, x1, x2, x3):
        if P == 0:  # noqa: SIM116 (Triton resolves a chain of constexpr branches at compile time)
            return x0
        elif P == 1:
            return x1
        elif P == 2:
            return x2
        else:
            return x3

    def _exact_asm(ct, bits: int, plane: int) -> str:
        """PTX for 4 bytes -> 4 exact codes (two registers) of bit plane `plane` in the dtype `ct` (bf16 or
        fp16): `prmt` puts bytes 0, 1 (2, 3) in a register's halves, `shr` brings the plane down, `lop3`
        keeps its bits and ORs the exponent of 128 (bf16) or 1024 (fp16), `sub` takes that away. The order
        of the bytes is kept: element i of the four is byte i's code, whatever the layout."""
        magic, sub = (0x64006400, "sub.f16x2") if ct == tl.float16 else (0x43004300, "sub.rn.bf16x2")
        mask = ((1 << bits) - 1) * 0x00010001
        shift = [f"shr.b32 t0, t0, {bits * plane};", f"shr.b32 t1, t1, {bits * plane};"] if plane else []
        return "\n".join([
            "{", ".reg .b32 t0, t1, magic;", f"mov.b32 magic, {magic:#010x};",
            "prmt.b32 t0, $2, 0, 0x4140;", "prmt.b32 t1, $2, 0, 0x4342;", *shift,
            f"lop3.b32 $0, t0, {mask:#010x}, magic, 0xea;", f"lop3.b32 $1, t1, {mask:#010x}, magic, 0xea;",
            f"{sub} $0, $0, magic;", f"{sub} $1, $1, magic;", "}",
        ])  # fmt: skip

    @triton.jit
    def _mma(a, b, acc, IEEE: tl.constexpr):
        if IEEE:  # float32 models: no tf32 rounding
            return tl.dot(a, b, acc, input_precision="ieee")
        else:
            return tl.dot(a, b, acc)

    @triton.jit
    def _asm_half(x, asm: tl.constexpr, FP16: tl.constexpr):
        """Pure inline PTX for 4 bytes -> 4 half-precision values (fp16 or bf16)."""
        if FP16:
            return tl.inline_asm_elementwise(asm, "=r,=r,r", [x], dtype=tl.float16, is_pure=True, pack=4)
        else:
            return tl.inline_asm_elementwise(asm, "=r,=r,r", [x], dtype=tl.bfloat16, is_pure=True, pack=4)

    @triton.jit
    def _load(pointers, live, QUANT: tl.constexpr):
        """A plain load in the quantized tiles (every token is there), masked in the general path."""
        if QUANT:
            return tl.load(pointers)
        else:
            return tl.load(pointers, mask=live, other=0)

    @triton.jit
    def _exact(b, P: tl.constexpr, BITS: tl.constexpr, CT: tl.constexpr, ASM: tl.constexpr, U0: tl.constexpr,
               U1: tl.constexpr, U2: tl.constexpr, U3: tl.constexpr):  # fmt: skip
        """The codes of bit plane P of every byte of `b`, exact integers in CT (Ui: plane i's PTX)."""
        if not ASM:
            return ((b >> (BITS * P)) & ((1 << BITS) - 1)).to(CT)
        elif P == 0:
            return _asm_half(b, U0, tl.float16 == CT)
        elif P == 1:
            return _asm_half(b, U1, tl.float16 == CT)
        elif P == 2:
            return _asm_half(b, U2, tl.float16 == CT)
        else:
            return _asm_half(b, U3, tl.float16 == CT)

    @triton.jit
    def _v2_chunk(
        acc, J: tl.constexpr, vb, p16, alpha, tok, vq, length, VS, VM, VR, h,
        stride_vsh, stride_vsg, stride_vrh, stride_vrn,
        D: tl.constexpr, BITS: tl.constexpr, GV: tl.constexpr, R: tl.constexpr, CW: tl.constexpr,
        CT: tl.constexpr, IEEE: tl.constexpr, ASM: tl.constexpr, QUANT: tl.constexpr,
        U0: tl.constexpr, U1: tl.constexpr, U2: tl.constexpr, U3: tl.constexpr,
    ):  # fmt: skip
        """Channels [J * CW, (J + 1) * CW) of every stream's values of a tile (bytes `vb` [W, CW, GK]) into
        their accumulator [W, CW, HP]: dequantized with their tokens' scales, times p."""
        NBB: tl.constexpr = D * BITS // 8 // CW
        stats = h * stride_vsh + (J * CW // GV) * stride_vsg + tok[:, None, :]  # [W, 1, GK]
        live = (tok < length)[:, None, :]
        scale = _load(VS + stats, live, QUANT).to(CT)
        minimum = _load(VM + stats, live, QUANT).to(CT)
        v = _exact(vb, J // NBB, BITS, CT, ASM, U0, U1, U2, U3) * scale + minimum  # [W, CW, GK]
        if not QUANT:  # dequantized below vq, the exact window from vq on
            window = (tok >= vq) & (tok < length)
            offs_c = tl.arange(0, CW)
            exact = tl.load(VR + h * stride_vrh + (tok % (R + 1))[:, None, :] * stride_vrn
                            + (J * CW + offs_c)[None, :, None], mask=window[:, None, :], other=0.0).to(CT)  # fmt: skip
            v = tl.where((tok >= vq)[:, None, :], exact, v)
        return _mma(v, p16, acc * alpha[:, None, :], IEEE)

    @triton.jit
    def _v2_tile(
        n0, end, length, kq, vq, qk_scale, q0, q1, q2, q3, acc0, acc1, acc2, acc3, m_i, l_i,
        KC, VC, KS, KM, VS, VM, KR, VR, h,
        stride_kch, stride_kcn, stride_vch, stride_vcq, stride_ksh, stride_ksg, stride_vsh, stride_vsg,
        stride_krh, stride_krn, stride_vrh, stride_vrn,
        W: tl.constexpr, HP: tl.constexpr, D: tl.constexpr, BITS: tl.constexpr, GK: tl.constexpr,
        GV: tl.constexpr, R: tl.constexpr, CW: tl.constexpr, VI: tl.constexpr, CT: tl.constexpr,
        IEEE: tl.constexpr, ASM: tl.constexpr, QUANT: tl.constexpr,
        U0: tl.constexpr, U1: tl.constexpr, U2: tl.constexpr, U3: tl.constexpr,
    ):  # fmt: skip
        """W streams of GK tokens from n0 (stream w: tokens n0 + w * GK + t, one key group): scores, each
        stream's online softmax, the values. QUANT: every key and value of the tile is quantized."""
        NBB: tl.constexpr = D * BITS // 8 // CW
        NCH: tl.constexpr = D // CW
        offs_w = tl.arange(0, W)
        offs_c = tl.arange(0, CW)
        tok = n0 + offs_w[:, None] * GK + tl.arange(0, GK)[None, :]  # [W, GK]
        # keys chunk by chunk, as the values: chunk J is channels [J * CW, (J + 1) * CW), bit plane J // NBB
        # of byte columns [(J % NBB) * CW, +CW)
        live = tok < length  # the general path reads nothing past the sequence (nor past the cache)
        kcol = KC + h * stride_kch + tok[:, :, None] * stride_kcn
        kb0 = _load(kcol + offs_c[None, None, :], live[:, :, None], QUANT)  # [W, GK, CW]
        kb1 = kb0
        if NBB == 2:
            kb1 = _load(kcol + (CW + offs_c)[None, None, :], live[:, :, None], QUANT)
        group = h * stride_ksh + (n0 // GK + offs_w)[:, None, None] * stride_ksg  # each stream's key group
        group_live = (n0 + offs_w * GK < length)[:, None, None]
        scores = tl.zeros([W, GK, HP], tl.float32)
        for J in tl.static_range(NCH):
            channels = J * CW + offs_c[None, None, :]
            codes = _exact(_pick(J % NBB, kb0, kb1, kb1, kb1), J // NBB, BITS, CT, ASM, U0, U1, U2, U3)
            scale = _load(KS + group + channels, group_live, QUANT).to(CT)
            k = codes * scale + _load(KM + group + channels, group_live, QUANT).to(CT)
            if not QUANT:  # keys from kq on (whole groups: kq is a multiple of GK) are the exact window
                window = (tok >= kq) & (tok < length)
                exact = tl.load(KR + h * stride_krh + (tok % R)[:, :, None] * stride_krn + channels,
                                mask=window[:, :, None], other=0.0).to(CT)  # fmt: skip
                k = tl.where((tok >= kq)[:, :, None], exact, k)
            scores = _mma(k, _pick(J, q0, q1, q2, q3), scores, IEEE)
        if QUANT:  # base-2 softmax of scores * qk_scale (> 0: the maximum commutes with the scale)
            m_new = tl.maximum(m_i, tl.max(scores, 1) * qk_scale)
            p = tl.exp2(scores * qk_scale - m_new[:, None, :])
            alpha = tl.exp2(m_i - m_new)
        else:
            scores = tl.where((tok < end)[:, :, None], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1) * qk_scale)
            m_use = tl.where(m_new > float("-inf"), m_new, 0.0)  # a stream with nothing yet: no NaN
            p = tl.exp2(scores * qk_scale - m_use[:, None, :])
            alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        p16 = p.to(CT)
        vrow = VC + h * stride_vch + (tok // VI)[:, None, :] * stride_vcq + (tok % VI)[:, None, :]  # [W, 1, GK]
        vb0 = _load(vrow + offs_c[None, :, None] * VI, live[:, None, :], QUANT)  # byte columns [0, CW): [W, CW, GK]
        vb1 = vb0
        if NBB == 2:
            vb1 = _load(vrow + (CW + offs_c)[None, :, None] * VI, live[:, None, :], QUANT)
        acc0 = _v2_chunk(acc0, 0, vb0, p16, alpha, tok, vq, length, VS, VM, VR, h, stride_vsh, stride_vsg, stride_vrh,
                         stride_vrn, D, BITS, GV, R, CW, CT, IEEE, ASM, QUANT, U0, U1, U2, U3)  # fmt: skip
        acc1 = _v2_chunk(acc1, 1, _pick(1 % NBB, vb0, vb1, vb1, vb1), p16, alpha, tok, vq, length, VS, VM, VR, h,
                         stride_vsh, stride_vsg, stride_vrh, stride_vrn, D, BITS, GV, R, CW, CT, IEEE, ASM, QUANT,
                         U0, U1, U2, U3)  # fmt: skip
        if NCH == 4:
            acc2 = _v2_chunk(acc2, 2, vb0, p16, alpha, tok, vq, length, VS, VM, VR, h, stride_vsh, stride_vsg,
                             stride_vrh, stride_vrn, D, BITS, GV, R, CW, CT, IEEE, ASM, QUANT,
                             U0, U1, U2, U3)  # fmt: skip
            acc3 = _v2_chunk(acc3, 3, _pick(3 % NBB, vb0, vb1, vb1, vb1), p16, alpha, tok, vq, length, VS, VM, VR, h,
                             stride_vsh, stride_vsg, stride_vrh, stride_vrn, D, BITS, GV, R, CW, CT, IEEE, ASM, QUANT,
                             U0, U1, U2, U3)  # fmt: skip
        return acc0, acc1, acc2, acc3, m_new, l_i

    @triton.jit
    def _v2_store(acc, J: tl.constexpr, wgt, l_safe, OUT, h, s, stride_oh, stride_os, G: tl.constexpr,
                  HP: tl.constexpr, CW: tl.constexpr):  # fmt: skip
        """Merge the streams of one chunk (weights [W, HP]) and store it, normalized."""
        out = tl.sum(acc * wgt[:, None, :], 0) / l_safe[None, :]  # [CW, HP]
        heads = tl.arange(0, HP)
        tl.store(OUT + (h * G + heads)[None, :] * stride_oh + s * stride_os + (J * CW + tl.arange(0, CW))[:, None],
                 out, mask=(heads < G)[None, :])  # fmt: skip

    @triton.jit
    def _q_chunk(Q, J: tl.constexpr, h, heads, stride_qh, G: tl.constexpr, W: tl.constexpr, HP: tl.constexpr,
                 CW: tl.constexpr, CT: tl.constexpr):  # fmt: skip
        """The query heads of KV head h, channels [J * CW, (J + 1) * CW), as the operand [W, CW, HP] of every
        stream's score dot (heads past G are zero; the softmax scale multiplies the scores)."""
        q = tl.load(Q + (h * G + heads)[None, :] * stride_qh + (J * CW + tl.arange(0, CW))[:, None],
                    mask=(heads < G)[None, :], other=0.0)  # fmt: skip
        return tl.broadcast_to(q.to(CT)[None, :, :], (W, CW, HP))

    @triton.jit
    def _v2_partial(
        Q, KC, VC, KS, KM, VS, VM, KR, VR, LEN, OUT, LSE,
        stride_qh, stride_kch, stride_kcn, stride_vch, stride_vcq, stride_ksh, stride_ksg, stride_vsh, stride_vsg,
        stride_krh, stride_krn, stride_vrh, stride_vrn, stride_oh, stride_os,
        qk_scale, SPLIT,
        G: tl.constexpr, W: tl.constexpr, HP: tl.constexpr, D: tl.constexpr, BITS: tl.constexpr,
        GK: tl.constexpr, GV: tl.constexpr, R: tl.constexpr, CW: tl.constexpr, VI: tl.constexpr,
        CT: tl.constexpr, IEEE: tl.constexpr, ASM: tl.constexpr,
        U0: tl.constexpr, U1: tl.constexpr, U2: tl.constexpr, U3: tl.constexpr,
    ):  # fmt: skip
        """One (KV head, split of SPLIT tokens, a multiple of the tile W * GK): its normalized output per
        query head and its log-sum-exp (natural). SPLIT is not a constant: one kernel serves every length."""
        h = tl.program_id(0)
        s = tl.program_id(1)
        NCH: tl.constexpr = D // CW
        TILE: tl.constexpr = W * GK
        length = tl.load(LEN).to(tl.int32)
        start = s * SPLIT
        end = tl.minimum(start + SPLIT, length)
        kq = ((length - 1) // R) * R  # keys below are quantized
        vq = tl.maximum(length - 1 - R, 0)  # values below are quantized (vq < kq, or both 0)
        both = tl.minimum((vq // TILE) * TILE, end)
        heads = tl.arange(0, HP)
        q0 = _q_chunk(Q, 0, h, heads, stride_qh, G, W, HP, CW, CT)  # q^T of channels [0, CW)
        q1 = _q_chunk(Q, 1, h, heads, stride_qh, G, W, HP, CW, CT)
        q2 = q0
        q3 = q0
        if NCH == 4:
            q2 = _q_chunk(Q, 2, h, heads, stride_qh, G, W, HP, CW, CT)
            q3 = _q_chunk(Q, 3, h, heads, stride_qh, G, W, HP, CW, CT)
        acc0 = tl.zeros([W, CW, HP], tl.float32)
        acc1 = tl.zeros([W, CW, HP], tl.float32)
        acc2 = tl.zeros([W, CW, HP], tl.float32)
        acc3 = tl.zeros([W, CW, HP], tl.float32)
        m_i = tl.full([W, HP], float("-inf"), tl.float32)
        l_i = tl.zeros([W, HP], tl.float32)
        for n0 in range(start, both, TILE):
            acc0, acc1, acc2, acc3, m_i, l_i = _v2_tile(
                n0, end, length, kq, vq, qk_scale, q0, q1, q2, q3, acc0, acc1, acc2, acc3, m_i, l_i,
                KC, VC, KS, KM, VS, VM, KR, VR, h,
                stride_kch, stride_kcn, stride_vch, stride_vcq, stride_ksh, stride_ksg, stride_vsh, stride_vsg,
                stride_krh, stride_krn, stride_vrh, stride_vrn,
                W, HP, D, BITS, GK, GV, R, CW, VI, CT, IEEE, ASM, True, U0, U1, U2, U3,
            )  # fmt: skip
        for n0 in tl.range(tl.maximum(start, both), end, TILE, num_stages=1):  # at most ~2R tokens: not pipelined
            acc0, acc1, acc2, acc3, m_i, l_i = _v2_tile(
                n0, end, length, kq, vq, qk_scale, q0, q1, q2, q3, acc0, acc1, acc2, acc3, m_i, l_i,
                KC, VC, KS, KM, VS, VM, KR, VR, h,
                stride_kch, stride_kcn, stride_vch, stride_vcq, stride_ksh, stride_ksg, stride_vsh, stride_vsg,
                stride_krh, stride_krn, stride_vrh, stride_vrn,
                W, HP, D, BITS, GK, GV, R, CW, VI, CT, IEEE, ASM, False, U0, U1, U2, U3,
            )  # fmt: skip
        # merge the W streams of each query head: weights relative to their largest running maximum
        top = tl.max(m_i, 0)
        top_use = tl.where(top > float("-inf"), top, 0.0)
        wgt = tl.exp2(m_i - top_use[None, :])  # [W, HP]
        total = tl.sum(wgt * l_i, 0)
        l_safe = tl.where(total > 0, total, 1.0)
        _v2_store(acc0, 0, wgt, l_safe, OUT, h, s, stride_oh, stride_os, G, HP, CW)
        _v2_store(acc1, 1, wgt, l_safe, OUT, h, s, stride_oh, stride_os, G, HP, CW)
        if D // CW == 4:
            _v2_store(acc2, 2, wgt, l_safe, OUT, h, s, stride_oh, stride_os, G, HP, CW)
            _v2_store(acc3, 3, wgt, l_safe, OUT, h, s, stride_oh, stride_os, G, HP, CW)
        lse = tl.where(total > 0, (top_use + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
        tl.store(LSE + (h * G + heads) * tl.num_programs(1) + s, lse, mask=heads < G)

    @triton.jit
    def _codes(x, mn, sc, QMAX: tl.constexpr):
        """torch.round((x - mn) / sc) clamped to [0, QMAX], halves to even (as `lcopt.quant.quantize_groups`)."""
        u = tl.math.div_rn(x - mn, sc)
        r = tl.floor(u + 0.5)
        r = tl.where(((r - u) == 0.5) & ((r.to(tl.int32) % 2) == 1), r - 1.0, r)
        return tl.minimum(tl.maximum(r, 0.0), QMAX).to(tl.int32)

    @triton.jit
    def _kivi_append(
        KN, VN, KC, KS, KM, VC, VS, VM, KR, VR, INDEX,
        stride_ch, stride_cn, stride_vch, stride_vcq, stride_ksh, stride_ksg, stride_ksd, stride_vsh, stride_vsg,
        stride_vsn, stride_krh, stride_krn, stride_vrh, stride_vrn,
        D: tl.constexpr, BITS: tl.constexpr, GK: tl.constexpr, GV: tl.constexpr, R: tl.constexpr, VI: tl.constexpr,
    ):  # fmt: skip
        """One token into one layer at cache index p (a program per KV head), in KIVI's official order
        deferred by one step: first what the previous step's attention left to quantize (the key block
        [p - R, p) when p is a multiple of R, the value p - 1 - R), then the new key into slot p % R and
        the new value into slot p % (R + 1)."""
        h = tl.program_id(0)
        p = tl.load(INDEX).to(tl.int32)
        PB: tl.constexpr = 8 // BITS
        DB: tl.constexpr = D // PB
        QMAX: tl.constexpr = (1 << BITS) - 1
        offs_d = tl.arange(0, D)
        offs_b = tl.arange(0, DB)
        shifts = tl.arange(0, PB) * BITS  # plane p of a byte: channels p * DB + j
        k_new = tl.load(KN + h * D + offs_d)
        v_new = tl.load(VN + h * D + offs_d)
        vslot = p % (R + 1)
        if p > R:  # the value p - 1 - R leaves the window: per token, groups of GV channels
            old = tl.load(VR + h * stride_vrh + vslot * stride_vrn + offs_d).to(tl.float32)
            old = tl.reshape(old, (D // GV, GV))
            mn = tl.min(old, 1)
            sc = (tl.max(old, 1) - mn) / QMAX
            sc = tl.where(sc > 0, sc, 1.0)
            codes = tl.reshape(_codes(old, mn[:, None], sc[:, None], QMAX), (PB, DB))
            row = p - 1 - R
            packed = tl.sum(codes << shifts[:, None], 0).to(tl.uint8)
            tl.store(VC + h * stride_vch + (row // VI) * stride_vcq + offs_b * VI + row % VI, packed)
            offs_gv = tl.arange(0, D // GV)
            tl.store(VS + h * stride_vsh + offs_gv * stride_vsg + row * stride_vsn, sc.to(VS.dtype.element_ty))
            tl.store(VM + h * stride_vsh + offs_gv * stride_vsg + row * stride_vsn, mn.to(VM.dtype.element_ty))
        if (p >= R) & (p % R == 0):  # the window's R keys [p - R, p) become one block: per channel, groups of GK
            offs_r = tl.arange(0, R)
            blk = tl.load(KR + h * stride_krh + offs_r[:, None] * stride_krn + offs_d[None, :]).to(tl.float32)
            grp = tl.reshape(blk, (R // GK, GK, D))
            mn = tl.min(grp, 1)
            sc = (tl.max(grp, 1) - mn) / QMAX
            sc = tl.where(sc > 0, sc, 1.0)
            codes = tl.reshape(_codes(grp, mn[:, None, :], sc[:, None, :], QMAX), (R, PB, DB))
            packed = tl.sum(codes << shifts[None, :, None], 1).to(tl.uint8)
            first = p - R
            tl.store(KC + h * stride_ch + (first + offs_r)[:, None] * stride_cn + offs_b[None, :], packed)
            rows = first // GK + tl.arange(0, R // GK)
            kstats = h * stride_ksh + rows[:, None] * stride_ksg + offs_d[None, :] * stride_ksd
            tl.store(KS + kstats, sc.to(KS.dtype.element_ty))
            tl.store(KM + kstats, mn.to(KM.dtype.element_ty))
        tl.debug_barrier()  # the slots just read are written below
        tl.store(KR + h * stride_krh + (p % R) * stride_krn + offs_d, k_new)
        tl.store(VR + h * stride_vrh + vslot * stride_vrn + offs_d, v_new)


class KIVIAttention(DecodeAttention):
    """The split buffers (`DecodeAttention`'s) and launch parameters of KIVI's decode kernel for one cache."""

    def __init__(self, q_heads: int, kv_heads: int, head_dim: int, max_len: int, device, dtype, *, bits: int,
                 group_size: int, value_group: int, residual: int, launch: Launch,
                 gpu: bool | None = None):  # fmt: skip
        """`gpu`: compile for a GPU (inline PTX, half-precision arithmetic); default: whether `device` is one
        (`benchmarks/kivi_sass.py` compiles for one on a host without)."""
        gpu = torch.device(device).type == "cuda" if gpu is None else gpu
        # float32 models (the cross-checks): IEEE dots on CUDA cores need many registers: a stream a warp
        # (its float32 scales need no pairs), one stage, ptxas's register choice (still ~3 KB spilled a thread)
        if dtype == torch.float32:
            launch = dataclasses.replace(launch, num_warps=launch.streams, num_stages=1, maxnreg=None)
        tile = tile_tokens(launch, group_size)
        super().__init__(q_heads, kv_heads, head_dim, max_len, device, dtype, tile, launch.programs)
        self.config = launch
        # the interpreter runs no PTX; a float32 model dequantizes in float32 (no half-precision bit tricks)
        self.asm = launch.asm and gpu and dtype != torch.float32
        # the dtype the kernel dequantizes and multiplies in: the model's (Triton's interpreter gets bf16
        # arithmetic wrong, so on a CPU a bf16 cache computes in float32)
        ct = {torch.float32: tl.float32, torch.float16: tl.float16}.get(dtype, tl.bfloat16)
        if not gpu and ct == tl.bfloat16:
            ct = tl.float32
        unpack = [_exact_asm(ct, bits, p) if p < 8 // bits else "" for p in range(4)]
        self.kivi_launch = {
            "G": self.group, "W": launch.streams, "HP": max(8, triton.next_power_of_2(self.group)), "D": head_dim,
            "BITS": bits, "GK": group_size, "GV": value_group, "R": residual,
            "CW": chunk_width(head_dim, bits, value_group), "VI": VALUE_INTERLEAVE, "CT": ct, "IEEE": self.ieee,
            "ASM": self.asm, "U0": unpack[0], "U1": unpack[1], "U2": unpack[2], "U3": unpack[3],
        }  # fmt: skip
        self.options = {"num_warps": launch.num_warps, "num_stages": launch.num_stages}
        if launch.maxnreg is not None and gpu:
            self.options["maxnreg"] = launch.maxnreg
        self.qk_scale = self.sm_scale * math.log2(math.e)  # the kernel's softmax is in base 2

    def __call__(self, q, length, kc, vc, ks, km, vs, vm, kr, vr) -> torch.Tensor:
        """q [Hq, D] over one layer's codes (keys [Hkv, S, DB], values [Hkv, S / VI, DB, VI]), scales and
        minimums (keys [Hkv, S / GK, D], values [Hkv, D / GV, S]: views of (scale, minimum) pairs) and
        windows -> [Hq, D]."""
        grid = (self.kv_heads, self.nsplit)
        _v2_partial[grid](
            q, kc, vc, ks, km, vs, vm, kr, vr, length, self.partial, self.lse,
            q.stride(0), kc.stride(0), kc.stride(1), vc.stride(0), vc.stride(1), ks.stride(0), ks.stride(1),
            vs.stride(0), vs.stride(1), kr.stride(0), kr.stride(1), vr.stride(0), vr.stride(1),
            self.partial.stride(0), self.partial.stride(1), self.qk_scale, self.split, **self.kivi_launch,
            **self.options,
        )  # fmt: skip
        return self._combine(q)


def append(key, value, index, kc, ks, km, vc, vs, vm, kr, vr, bits: int, group_size: int, value_group: int,
           residual: int) -> None:  # fmt: skip
    """One token of one layer (views [Hkv, ...]) at the device cache index `index` ([1])."""
    _kivi_append[(kc.shape[0],)](
        key.contiguous(), value.contiguous(), kc, ks, km, vc, vs, vm, kr, vr, index,
        kc.stride(0), kc.stride(1), vc.stride(0), vc.stride(1), ks.stride(0), ks.stride(1), ks.stride(2),
        vs.stride(0), vs.stride(1), vs.stride(2), kr.stride(0), kr.stride(1), vr.stride(0), vr.stride(1),
        D=kc.shape[-1] * 8 // bits, BITS=bits, GK=group_size, GV=value_group, R=residual, VI=VALUE_INTERLEAVE,
        num_warps=4,
    )  # fmt: skip
