"""Attention of one new token over a static KV cache, fused with the cache's dequantization.

One Triton kernel serves every cache format of the fast engine (`lcopt.static_cache`): plain
(bf16/fp16/fp32), float8 with a scale per KV head, and KIVI's packed 2/4-bit codes with their
full-precision residual windows. It is flash-decoding: the cached tokens are cut into `splits`
chunks, one program per (KV head, chunk) reads its chunk once, dequantizes in registers and keeps an
online softmax for all the query heads that share the KV head (GQA); a second kernel merges the
chunks by their log-sum-exp. The valid length is read from device memory, so one CUDA graph serves
every decode step. `attend_reference` is the same computation in plain torch (CPU path, tests).

KIVI layout (`static_cache.KIVICache`): codes packed along the channels, `8 // bits` consecutive
channels a byte, lowest bits first (as `lcopt.kivi.pack`); keys grouped per channel over
`group_size` consecutive tokens (scale and minimum [groups, D]), values per token over `group_size`
consecutive channels (scale and minimum [S, D // group_size]). Keys at positions >= `(len // R) * R`
and values at positions >= `len - R` are read from the bf16 residual buffers at slot `pos % R`.
"""

from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU install has no Triton: only the torch reference runs there
    triton = None

DENSE, FP8, KIVI = 0, 1, 2


if triton is not None:

    @triton.jit
    def _unpack(codes, BITS: tl.constexpr, ROWS: tl.constexpr, D: tl.constexpr):
        """[ROWS, D // (8 // BITS)] bytes -> [ROWS, D] codes, channel order restored."""
        if BITS == 4:
            return tl.reshape(tl.join(codes & 15, (codes >> 4) & 15), (ROWS, D))
        else:
            p0 = codes & 3
            p1 = (codes >> 2) & 3
            p2 = (codes >> 4) & 3
            p3 = (codes >> 6) & 3
            return tl.reshape(tl.join(tl.join(p0, p2), tl.join(p1, p3)), (ROWS, D))

    @triton.jit
    def _decode_partial(
        Q, K, V, KS, KM, VS, VM, KR, VR, LEN, OUT, LSE,
        stride_qh,
        stride_kh, stride_kn, stride_vh, stride_vn,
        stride_ksh, stride_ksn, stride_vsh, stride_vsn,
        stride_rh, stride_rn,
        stride_oh, stride_os,
        sm_scale,
        G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr,
        FORMAT: tl.constexpr, BITS: tl.constexpr, GK: tl.constexpr, GV: tl.constexpr, R: tl.constexpr,
        IEEE: tl.constexpr,
    ):  # fmt: skip
        h = tl.program_id(0)
        s = tl.program_id(1)
        length = tl.load(LEN).to(tl.int32)
        start = s * SPLIT
        end = tl.minimum(start + SPLIT, length)
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, D)
        gmask = offs_g < G
        q = tl.load(Q + (h * G + offs_g)[:, None] * stride_qh + offs_d[None, :], mask=gmask[:, None], other=0.0)
        m_i = tl.full([G_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, D], tl.float32)
        if FORMAT == 2:
            PB: tl.constexpr = 8 // BITS
            offs_b = tl.arange(0, D // PB)
            kq_len = (length // R) * R
            vq_len = tl.maximum(length - R, 0)
        for n0 in range(start, end, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            nmask = offs_n < end
            if FORMAT == 0:
                k = tl.load(K + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :], mask=nmask[:, None])
                v = tl.load(V + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :], mask=nmask[:, None])
            elif FORMAT == 1:
                k_scale = tl.load(KS + h)
                v_scale = tl.load(VS + h)
                k = tl.load(K + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :], mask=nmask[:, None])
                v = tl.load(V + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :], mask=nmask[:, None])
                k = (k.to(tl.float32) * k_scale).to(q.dtype)
                v = (v.to(tl.float32) * v_scale).to(q.dtype)
            else:
                kq = offs_n < kq_len
                kb = tl.load(K + h * stride_kh + offs_n[:, None] * stride_kn + offs_b[None, :],
                             mask=kq[:, None], other=0)  # fmt: skip
                kcodes = _unpack(kb, BITS, BLOCK_N, D).to(tl.float32)
                kgroup = (offs_n // GK)[:, None] * stride_ksn + offs_d[None, :]
                k_sc = tl.load(KS + h * stride_ksh + kgroup, mask=kq[:, None], other=0.0).to(tl.float32)
                k_mn = tl.load(KM + h * stride_ksh + kgroup, mask=kq[:, None], other=0.0).to(tl.float32)
                kres = (offs_n >= kq_len) & nmask
                k_r = tl.load(KR + h * stride_rh + (offs_n % R)[:, None] * stride_rn + offs_d[None, :],
                              mask=kres[:, None], other=0.0)  # fmt: skip
                k = tl.where(kq[:, None], (kcodes * k_sc + k_mn).to(q.dtype), k_r.to(q.dtype))
                vq = offs_n < vq_len
                vb = tl.load(V + h * stride_vh + offs_n[:, None] * stride_vn + offs_b[None, :],
                             mask=vq[:, None], other=0)  # fmt: skip
                vcodes = _unpack(vb, BITS, BLOCK_N, D).to(tl.float32)
                vgroup = offs_n[:, None] * stride_vsn + (offs_d // GV)[None, :]
                v_sc = tl.load(VS + h * stride_vsh + vgroup, mask=vq[:, None], other=0.0).to(tl.float32)
                v_mn = tl.load(VM + h * stride_vsh + vgroup, mask=vq[:, None], other=0.0).to(tl.float32)
                vres = (offs_n >= vq_len) & nmask
                v_r = tl.load(VR + h * stride_rh + (offs_n % R)[:, None] * stride_rn + offs_d[None, :],
                              mask=vres[:, None], other=0.0)  # fmt: skip
                v = tl.where(vq[:, None], (vcodes * v_sc + v_mn).to(q.dtype), v_r.to(q.dtype))
            if IEEE:  # noqa: SIM108 - constexpr branches, one compiled
                scores = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                scores = tl.dot(q, tl.trans(k))
            scores = tl.where(nmask[None, :], scores * sm_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            if IEEE:
                pv = tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision="ieee")
            else:
                pv = tl.dot(p.to(q.dtype), v.to(q.dtype))
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        has = start < length
        safe_l = tl.where(l_i > 0, l_i, 1.0)
        out = tl.where(has, acc / safe_l[:, None], 0.0)
        lse = tl.where(has, m_i + tl.log(safe_l), float("-inf"))
        rows = h * G + offs_g
        tl.store(OUT + rows[:, None] * stride_oh + s * stride_os + offs_d[None, :], out, mask=gmask[:, None])
        tl.store(LSE + rows * tl.num_programs(1) + s, lse, mask=gmask)

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


def plan_splits(max_len: int, kv_heads: int, block_n: int = 64, programs: int = 528) -> tuple[int, int]:
    """(tokens per split, number of splits): enough programs to fill the GPU (`programs` ~ 4 per SM of an
    H100/H200), each reading whole blocks; fixed per cache so that a CUDA graph can be replayed."""
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

    def __call__(self, q, length, fmt: int, k, v, ks=None, km=None, vs=None, vm=None, kr=None, vr=None,
                 bits: int = 4, gk: int = 1, gv: int = 1, residual: int = 1) -> torch.Tensor:  # fmt: skip
        """q [Hq, D] -> [Hq, D]; `length` an int32 device tensor [1]; k, v [Hkv, S, D or D // (8 // bits)]."""
        dummy = k
        ks = dummy if ks is None else ks
        km = dummy if km is None else km
        vs = dummy if vs is None else vs
        vm = dummy if vm is None else vm
        kr = dummy if kr is None else kr
        vr = dummy if vr is None else vr
        _decode_partial[(self.kv_heads, self.nsplit)](
            q, k, v, ks, km, vs, vm, kr, vr, length, self.partial, self.lse,
            q.stride(0),
            k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            ks.stride(0) if ks.dim() > 1 else 0, ks.stride(1) if ks.dim() > 1 else 0,
            vs.stride(0) if vs.dim() > 1 else 0, vs.stride(1) if vs.dim() > 1 else 0,
            kr.stride(0) if kr.dim() > 1 else 0, kr.stride(1) if kr.dim() > 1 else 0,
            self.partial.stride(0), self.partial.stride(1),
            self.sm_scale,
            G=self.group, G_PAD=max(16, triton.next_power_of_2(self.group)), D=self.head_dim,
            BLOCK_N=self.block_n, SPLIT=self.split, FORMAT=fmt, BITS=bits, GK=gk, GV=gv, R=residual,
            IEEE=self.ieee, num_warps=4, num_stages=2,
        )  # fmt: skip
        out = torch.empty(self.q_heads, self.head_dim, device=q.device, dtype=q.dtype)
        _decode_combine[(self.q_heads,)](
            self.partial, self.lse, out, self.partial.stride(0), self.partial.stride(1),
            NSPLIT=self.nsplit, S_PAD=triton.next_power_of_2(self.nsplit), D=self.head_dim, num_warps=4,
        )  # fmt: skip
        return out


def attend_reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """q [Hq, D], keys/values [Hkv, L, D] (already dequantized) -> [Hq, D], softmax in float32."""
    group = q.shape[0] // keys.shape[0]
    k = keys.repeat_interleave(group, dim=0).float()
    v = values.repeat_interleave(group, dim=0).float()
    scores = torch.einsum("hd,hld->hl", q.float(), k) * q.shape[-1] ** -0.5
    return torch.einsum("hl,hld->hd", torch.softmax(scores, dim=-1), v).to(q.dtype)
