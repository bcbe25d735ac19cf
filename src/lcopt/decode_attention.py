"""Attention of one new token over a static KV cache, fused with the cache's dequantization.

One Triton kernel serves every cache format of the fast engine (`lcopt.static_cache`): plain
(bf16/fp16/fp32), float8 with a scale per KV head, and KIVI's packed 2/4-bit codes with their
full-precision residual windows. It is flash-decoding: the cached tokens are cut into `splits`
chunks, one program per (KV head, chunk) reads its chunk once, dequantizes in registers and keeps an
online softmax for all the query heads that share the KV head (GQA); a second kernel merges the
chunks by their log-sum-exp. The valid length is read from device memory, so one CUDA graph serves
every decode step. `attend_reference` is the same computation in plain torch (CPU path, tests).

KIVI layout (`static_cache.KIVICache`): codes packed along the channels in planes, byte j of a token
holding channel j + p * D / planes at bits p * bits (`static_cache.pack_planes`), so that each plane
is a contiguous slice of the channels and one matmul; keys grouped per channel over `group_size`
consecutive tokens (scale and minimum [groups, D]; a tile is one group), values per token over
`group_size` consecutive channels (scale and minimum [S, D // group_size]). Keys at positions >=
`(len // R) * R` and values at positions >= `len - R` are read from the bf16 residual buffers at
slot `pos % R`.
"""

from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU install has no Triton: only the torch reference runs there
    triton = None


if triton is not None:

    @triton.jit
    def _dot(a, b, IEEE: tl.constexpr):
        if IEEE:  # float32 models: no tf32 rounding
            return tl.dot(a, b, input_precision="ieee")
        else:
            return tl.dot(a, b)

    @triton.jit
    def _finish(acc, l_i, has, v_scale, OUT, rows, gmask, col, stride_oh, stride_os, s):
        """Store one split's normalized output for the channels `col`."""
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        out = tl.where(has, acc / safe_l[:, None] * v_scale, 0.0)
        tl.store(OUT + rows[:, None] * stride_oh + s * stride_os + col[None, :], out, mask=gmask[:, None])

    @triton.jit
    def _decode_partial(
        Q, K, V, KS, VS, LEN, OUT, LSE,
        stride_qh, stride_kh, stride_kn, stride_vh, stride_vn, stride_oh, stride_os,
        sm_scale,
        G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
        FP8: tl.constexpr, IEEE: tl.constexpr,
    ):  # fmt: skip
        """Dense caches: the model's dtype, or float8 with a scale per KV head (folded into the scores and
        the output, so each element is only converted)."""
        h = tl.program_id(0)
        s = tl.program_id(1)
        length = tl.load(LEN).to(tl.int32)
        start = s * SPLIT
        end = tl.minimum(start + SPLIT, length)
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, D)
        gmask = offs_g < G
        q = tl.load(Q + (h * G + offs_g)[:, None] * stride_qh + offs_d[None, :], mask=gmask[:, None], other=0.0)
        scale = sm_scale
        v_scale = 1.0
        if FP8:
            scale = sm_scale * tl.load(KS + h)
            v_scale = tl.load(VS + h)
        m_i = tl.full([G_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, D], tl.float32)
        for n0 in range(start, end, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            nmask = offs_n < end
            k = tl.load(K + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :], mask=nmask[:, None])
            v = tl.load(V + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :], mask=nmask[:, None])
            # e4m3 -> fp16 is one instruction per pair on Hopper (-> bf16 goes through fp32): a half-precision
            # model multiplies float8 states in fp16; a float32 model in float32
            if FP8 and not IEEE:
                scores = _dot(q.to(tl.float16), tl.trans(k.to(tl.float16)), IEEE)
            else:
                scores = _dot(q, tl.trans(k.to(q.dtype)), IEEE)
            scores = tl.where(nmask[None, :], scores * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            if FP8 and not IEEE:
                acc = acc * alpha[:, None] + _dot(p.to(tl.float16), v.to(tl.float16), IEEE)
            else:
                acc = acc * alpha[:, None] + _dot(p.to(q.dtype), v.to(q.dtype), IEEE)
            m_i = m_new
        has = start < length
        rows = h * G + offs_g
        _finish(acc, l_i, has, v_scale, OUT, rows, gmask, offs_d, stride_oh, stride_os, s)
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        tl.store(LSE + rows * tl.num_programs(1) + s, tl.where(has, m_i + tl.log(safe_l), float("-inf")), mask=gmask)

    @triton.jit
    def _kivi_keys(KC, KS, KM, KR, h, n0, offs_n, nmask, kq, offs_c, plane: tl.constexpr,
                   stride_ch, stride_cn, stride_ksh, stride_ksg, stride_rh, stride_rn,
                   BITS: tl.constexpr, GK: tl.constexpr, R: tl.constexpr, DP: tl.constexpr,
                   dtype: tl.constexpr, QUANT: tl.constexpr):  # fmt: skip
        """One plane of a tile of GK keys: codes x the group's scale + minimum, or the bf16 residual.
        QUANT: the caller knows the tile is quantized (no branch: the loop can be pipelined)."""
        if QUANT or n0 + GK <= kq:  # tiles are key groups and never straddle the quantized length
            b = tl.load(KC + h * stride_ch + offs_n[:, None] * stride_cn + offs_c[None, :])
            codes = ((b >> (BITS * plane)) & ((1 << BITS) - 1)).to(tl.float32)
            row = h * stride_ksh + (n0 // GK) * stride_ksg + plane * DP + offs_c
            k = codes * tl.load(KS + row).to(tl.float32)[None, :] + tl.load(KM + row).to(tl.float32)[None, :]
            k = k.to(dtype)
        else:
            k = tl.load(KR + h * stride_rh + (offs_n % R)[:, None] * stride_rn + (plane * DP + offs_c)[None, :],
                        mask=nmask[:, None], other=0.0).to(dtype)  # fmt: skip
        return k

    @triton.jit
    def _kivi_values(VC, VS, VM, VR, h, n0, offs_n, nmask, vq, offs_c, plane: tl.constexpr,
                     stride_ch, stride_cn, stride_vsh, stride_vsn, stride_rh, stride_rn,
                     BITS: tl.constexpr, GK: tl.constexpr, GV: tl.constexpr, R: tl.constexpr, DP: tl.constexpr,
                     dtype: tl.constexpr, QUANT: tl.constexpr):  # fmt: skip
        """One plane of a tile of values: per-token codes x scale + minimum below `vq`, residual above."""
        if QUANT:
            b = tl.load(VC + h * stride_ch + offs_n[:, None] * stride_cn + offs_c[None, :])
            codes = ((b >> (BITS * plane)) & ((1 << BITS) - 1)).to(tl.float32)
            group = offs_n[:, None] * stride_vsn + ((plane * DP + offs_c) // GV)[None, :]
            sc = tl.load(VS + h * stride_vsh + group).to(tl.float32)
            mn = tl.load(VM + h * stride_vsh + group).to(tl.float32)
            return (codes * sc + mn).to(dtype)
        quant = offs_n < vq
        res = (offs_n >= vq) & nmask
        if n0 + GK <= vq:
            b = tl.load(VC + h * stride_ch + offs_n[:, None] * stride_cn + offs_c[None, :])
        else:
            b = tl.load(VC + h * stride_ch + offs_n[:, None] * stride_cn + offs_c[None, :],
                        mask=quant[:, None], other=0)  # fmt: skip
        codes = ((b >> (BITS * plane)) & ((1 << BITS) - 1)).to(tl.float32)
        group = offs_n[:, None] * stride_vsn + ((plane * DP + offs_c) // GV)[None, :]
        sc = tl.load(VS + h * stride_vsh + group, mask=quant[:, None], other=0.0).to(tl.float32)
        mn = tl.load(VM + h * stride_vsh + group, mask=quant[:, None], other=0.0).to(tl.float32)
        v = (codes * sc + mn).to(dtype)
        if n0 + GK > vq:
            r = tl.load(VR + h * stride_rh + (offs_n % R)[:, None] * stride_rn + (plane * DP + offs_c)[None, :],
                        mask=res[:, None], other=0.0).to(dtype)  # fmt: skip
            v = tl.where(quant[:, None], v, r)
        return v

    @triton.jit
    def _kivi_step(q0, q1, q2, q3, acc0, acc1, acc2, acc3, m_i, l_i, n0, end, kq, vq, sm_scale,
                   KC, VC, KS, KM, VS, VM, KR, VR, h, offs_c,
                   stride_ch, stride_cn, stride_ksh, stride_ksg, stride_vsh, stride_vsn, stride_rh, stride_rn,
                   PB: tl.constexpr, BITS: tl.constexpr, GK: tl.constexpr, GV: tl.constexpr, R: tl.constexpr,
                   DP: tl.constexpr, dtype: tl.constexpr, IEEE: tl.constexpr, QUANT: tl.constexpr):  # fmt: skip
        """One tile of GK tokens: scores over the key planes, online softmax, the value planes."""
        offs_n = n0 + tl.arange(0, GK)
        nmask = offs_n < end
        k0 = _kivi_keys(
            KC, KS, KM, KR, h, n0, offs_n, nmask, kq, offs_c, 0,
            stride_ch, stride_cn, stride_ksh, stride_ksg, stride_rh, stride_rn, BITS,
            GK, R, DP, dtype, QUANT,
        )  # fmt: skip
        k1 = _kivi_keys(
            KC, KS, KM, KR, h, n0, offs_n, nmask, kq, offs_c, 1,
            stride_ch, stride_cn, stride_ksh, stride_ksg, stride_rh, stride_rn, BITS,
            GK, R, DP, dtype, QUANT,
        )  # fmt: skip
        scores = _dot(q0, tl.trans(k0), IEEE) + _dot(q1, tl.trans(k1), IEEE)
        if PB == 4:
            k2 = _kivi_keys(
                KC, KS, KM, KR, h, n0, offs_n, nmask, kq, offs_c, 2,
                stride_ch, stride_cn, stride_ksh, stride_ksg, stride_rh, stride_rn, BITS,
                GK, R, DP, dtype, QUANT,
            )  # fmt: skip
            k3 = _kivi_keys(
                KC, KS, KM, KR, h, n0, offs_n, nmask, kq, offs_c, 3,
                stride_ch, stride_cn, stride_ksh, stride_ksg, stride_rh, stride_rn, BITS,
                GK, R, DP, dtype, QUANT,
            )  # fmt: skip
            scores += _dot(q2, tl.trans(k2), IEEE) + _dot(q3, tl.trans(k3), IEEE)
        scores = tl.where(nmask[None, :], scores * sm_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        p = tl.exp(scores - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        p = p.to(dtype)
        v0 = _kivi_values(
            VC, VS, VM, VR, h, n0, offs_n, nmask, vq, offs_c, 0,
            stride_ch, stride_cn, stride_vsh, stride_vsn, stride_rh, stride_rn, BITS,
            GK, GV, R, DP, dtype, QUANT,
        )  # fmt: skip
        v1 = _kivi_values(
            VC, VS, VM, VR, h, n0, offs_n, nmask, vq, offs_c, 1,
            stride_ch, stride_cn, stride_vsh, stride_vsn, stride_rh, stride_rn, BITS,
            GK, GV, R, DP, dtype, QUANT,
        )  # fmt: skip
        acc0 = acc0 * alpha[:, None] + _dot(p, v0, IEEE)
        acc1 = acc1 * alpha[:, None] + _dot(p, v1, IEEE)
        if PB == 4:
            v2 = _kivi_values(
                VC, VS, VM, VR, h, n0, offs_n, nmask, vq, offs_c, 2,
                stride_ch, stride_cn, stride_vsh, stride_vsn, stride_rh, stride_rn, BITS,
                GK, GV, R, DP, dtype, QUANT,
            )  # fmt: skip
            v3 = _kivi_values(
                VC, VS, VM, VR, h, n0, offs_n, nmask, vq, offs_c, 3,
                stride_ch, stride_cn, stride_vsh, stride_vsn, stride_rh, stride_rn, BITS,
                GK, GV, R, DP, dtype, QUANT,
            )  # fmt: skip
            acc2 = acc2 * alpha[:, None] + _dot(p, v2, IEEE)
            acc3 = acc3 * alpha[:, None] + _dot(p, v3, IEEE)
        return acc0, acc1, acc2, acc3, m_new, l_i

    @triton.jit
    def _decode_partial_kivi(
        Q, KC, VC, KS, KM, VS, VM, KR, VR, LEN, OUT, LSE,
        stride_qh, stride_ch, stride_cn, stride_ksh, stride_ksg, stride_vsh, stride_vsn, stride_rh, stride_rn,
        stride_oh, stride_os,
        sm_scale,
        G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, SPLIT: tl.constexpr,
        BITS: tl.constexpr, GK: tl.constexpr, GV: tl.constexpr, R: tl.constexpr, IEEE: tl.constexpr,
    ):  # fmt: skip
        """KIVI: codes in planes (byte j of a token holds channel j + p * D / planes at bits p * BITS), so
        keys and values split into 2 or 4 planes of D / planes channels, each plane one matmul, no
        shuffling of codes across lanes; tiles of one key group (its scale and minimum are one row).
        Below `vq` keys and values are both quantized: a loop without branches, which Triton pipelines;
        the last tiles (at most 2 x R tokens) go through the general path with the residual windows."""
        h = tl.program_id(0)
        s = tl.program_id(1)
        length = tl.load(LEN).to(tl.int32)
        start = s * SPLIT
        end = tl.minimum(start + SPLIT, length)
        kq = (length // R) * R
        vq = tl.maximum(length - R, 0)
        both = tl.minimum((vq // GK) * GK, end)  # tiles before this hold quantized keys and values only
        PB: tl.constexpr = 8 // BITS
        DP: tl.constexpr = D // PB
        offs_g = tl.arange(0, G_PAD)
        offs_c = tl.arange(0, DP)
        gmask = offs_g < G
        rows = h * G + offs_g
        qrow = Q + rows[:, None] * stride_qh
        dtype = Q.dtype.element_ty
        q0 = tl.load(qrow + offs_c[None, :], mask=gmask[:, None], other=0.0)
        q1 = tl.load(qrow + (DP + offs_c)[None, :], mask=gmask[:, None], other=0.0)
        q2 = q0
        q3 = q0
        if PB == 4:
            q2 = tl.load(qrow + (2 * DP + offs_c)[None, :], mask=gmask[:, None], other=0.0)
            q3 = tl.load(qrow + (3 * DP + offs_c)[None, :], mask=gmask[:, None], other=0.0)
        acc0 = tl.zeros([G_PAD, DP], tl.float32)
        acc1 = tl.zeros([G_PAD, DP], tl.float32)
        acc2 = tl.zeros([G_PAD, DP], tl.float32)
        acc3 = tl.zeros([G_PAD, DP], tl.float32)
        m_i = tl.full([G_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([G_PAD], tl.float32)
        for n0 in range(start, both, GK):
            acc0, acc1, acc2, acc3, m_i, l_i = _kivi_step(
                q0, q1, q2, q3, acc0, acc1, acc2, acc3, m_i, l_i, n0, end, kq, vq, sm_scale,
                KC, VC, KS, KM, VS, VM, KR, VR, h, offs_c,
                stride_ch, stride_cn, stride_ksh, stride_ksg, stride_vsh, stride_vsn, stride_rh, stride_rn,
                PB, BITS, GK, GV, R, DP, dtype, IEEE, True,
            )  # fmt: skip
        for n0 in range(tl.maximum(start, both), end, GK):
            acc0, acc1, acc2, acc3, m_i, l_i = _kivi_step(
                q0, q1, q2, q3, acc0, acc1, acc2, acc3, m_i, l_i, n0, end, kq, vq, sm_scale,
                KC, VC, KS, KM, VS, VM, KR, VR, h, offs_c,
                stride_ch, stride_cn, stride_ksh, stride_ksg, stride_vsh, stride_vsn, stride_rh, stride_rn,
                PB, BITS, GK, GV, R, DP, dtype, IEEE, False,
            )  # fmt: skip
        has = start < length
        _finish(acc0, l_i, has, 1.0, OUT, rows, gmask, offs_c, stride_oh, stride_os, s)
        _finish(acc1, l_i, has, 1.0, OUT, rows, gmask, DP + offs_c, stride_oh, stride_os, s)
        if PB == 4:
            _finish(acc2, l_i, has, 1.0, OUT, rows, gmask, 2 * DP + offs_c, stride_oh, stride_os, s)
            _finish(acc3, l_i, has, 1.0, OUT, rows, gmask, 3 * DP + offs_c, stride_oh, stride_os, s)
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        tl.store(LSE + rows * tl.num_programs(1) + s, tl.where(has, m_i + tl.log(safe_l), float("-inf")), mask=gmask)

    @triton.jit
    def _decode_combine(
        PARTIAL, LSE, OUT, stride_oh, stride_os, NSPLIT: tl.constexpr, S_PAD: tl.constexpr, D: tl.constexpr
    ):
        h = tl.program_id(0)
        offs_s = tl.arange(0, S_PAD)
        offs_d = tl.arange(0, D)
        smask = offs_s < NSPLIT
        lse = tl.load(LSE + h * NSPLIT + offs_s, mask=smask, other=float("-inf"))
        m = tl.max(lse, 0)
        w = tl.exp(lse - m)
        w = w / tl.sum(w, 0)
        parts = PARTIAL + h * stride_oh + offs_s[:, None] * stride_os + offs_d[None, :]
        o = tl.load(parts, mask=smask[:, None], other=0.0)
        tl.store(OUT + h * D + offs_d, tl.sum(o * w[:, None], 0).to(OUT.dtype.element_ty))


def plan_splits(max_len: int, kv_heads: int, block_n: int = 64, programs: int = 1056) -> tuple[int, int]:
    """(tokens per split, number of splits): enough programs in flight to hide memory latency (`programs`
    ~ 8 per SM of an H100/H200), each reading whole blocks; fixed per cache so that one CUDA graph
    serves every step."""
    want = max(1, programs // max(kv_heads, 1))
    split = max(block_n, math.ceil(max_len / want / block_n) * block_n)
    return split, math.ceil(max_len / split)


class DecodeAttention:
    """Buffers and launch parameters of the fused decode attention for one cache (all layers)."""

    def __init__(self, q_heads: int, kv_heads: int, head_dim: int, max_len: int, device, dtype, block_n: int = 64):
        if q_heads % kv_heads:
            raise ValueError(f"{q_heads} query heads are not a multiple of {kv_heads} KV heads")
        self.q_heads, self.kv_heads, self.head_dim = q_heads, kv_heads, head_dim
        self.group = q_heads // kv_heads
        self.block_n = block_n
        self.split, self.nsplit = plan_splits(max_len, kv_heads, block_n)
        self.partial = torch.empty(q_heads, self.nsplit, head_dim, device=device, dtype=torch.float32)
        self.lse = torch.empty(q_heads, self.nsplit, device=device, dtype=torch.float32)
        self.ieee = dtype == torch.float32
        self.sm_scale = head_dim**-0.5
        self.launch = {"G": self.group, "G_PAD": max(16, triton.next_power_of_2(self.group)), "D": head_dim,
                       "SPLIT": self.split, "IEEE": self.ieee}  # fmt: skip

    def _combine(self, q: torch.Tensor) -> torch.Tensor:
        out = torch.empty(self.q_heads, self.head_dim, device=q.device, dtype=q.dtype)
        _decode_combine[(self.q_heads,)](
            self.partial, self.lse, out, self.partial.stride(0), self.partial.stride(1),
            NSPLIT=self.nsplit, S_PAD=triton.next_power_of_2(self.nsplit), D=self.head_dim, num_warps=4,
        )  # fmt: skip
        return out

    def dense(self, q, length, k, v, k_scale=None, v_scale=None) -> torch.Tensor:
        """q [Hq, D] over k, v [Hkv, S, D] (float8 with per-head scales [Hkv] when given) -> [Hq, D]."""
        fp8 = k_scale is not None
        _decode_partial[(self.kv_heads, self.nsplit)](
            q, k, v, k_scale if fp8 else k, v_scale if fp8 else v, length, self.partial, self.lse,
            q.stride(0), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            self.partial.stride(0), self.partial.stride(1), self.sm_scale,
            BLOCK_N=self.block_n, FP8=fp8, **self.launch, num_warps=4, num_stages=1 if self.ieee else 3,
        )  # fmt: skip
        return self._combine(q)

    def kivi(self, q, length, kc, vc, ks, km, vs, vm, kr, vr, bits: int, gk: int, gv: int, residual: int):
        """q [Hq, D] over KIVI codes (planar bytes [Hkv, S, D * bits / 8]), scales, and residuals."""
        if self.split % gk:
            raise ValueError(f"split {self.split} is not a multiple of the key group {gk}")
        _decode_partial_kivi[(self.kv_heads, self.nsplit)](
            q, kc, vc, ks, km, vs, vm, kr, vr, length, self.partial, self.lse,
            q.stride(0), kc.stride(0), kc.stride(1), ks.stride(0), ks.stride(1), vs.stride(0), vs.stride(1),
            kr.stride(0), kr.stride(1), self.partial.stride(0), self.partial.stride(1), self.sm_scale,
            BITS=bits, GK=gk, GV=gv, R=residual, **self.launch, num_warps=4, num_stages=1 if self.ieee else 3,
        )  # fmt: skip
        return self._combine(q)


def attend_reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """q [Hq, D], keys/values [Hkv, L, D] (already dequantized) -> [Hq, D], softmax in float32."""
    group = q.shape[0] // keys.shape[0]
    k = keys.repeat_interleave(group, dim=0).float()
    v = values.repeat_interleave(group, dim=0).float()
    scores = torch.einsum("hd,hld->hl", q.float(), k) * q.shape[-1] ** -0.5
    return torch.einsum("hl,hld->hd", torch.softmax(scores, dim=-1), v).to(q.dtype)
