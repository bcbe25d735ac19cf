"""Attention of one new token over a static KV cache, fused with the cache's dequantization.

The shared dense kernel of the fast engine's caches (`lcopt.static_cache`): plain (bf16/fp16/fp32),
or float8 with a scale per KV head (`techniques/fp8kv.py`). It is flash-decoding: the cached tokens are
cut into `splits` chunks, one program per (KV head, chunk) reads its chunk once, converts in registers
and keeps an online softmax for all the query heads that share the KV head (GQA); a second kernel
merges the chunks by their log-sum-exp (`_decode_combine`, which a quantized cache's own kernel may
reuse: KIVI's lives in `techniques/kivi/kernels.py`). The valid length is read from device memory, so
one CUDA graph serves every decode step. `attend_reference` is the same computation in plain torch
(CPU path, tests).
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

    def __init__(self, q_heads: int, kv_heads: int, head_dim: int, max_len: int, device, dtype, block_n: int = 64,
                 programs: int = 1056):  # fmt: skip
        if q_heads % kv_heads:
            raise ValueError(f"{q_heads} query heads are not a multiple of {kv_heads} KV heads")
        self.q_heads, self.kv_heads, self.head_dim = q_heads, kv_heads, head_dim
        self.group = q_heads // kv_heads
        self.block_n = block_n
        self.split, self.nsplit = plan_splits(max_len, kv_heads, block_n, programs)
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


def attend_reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """q [Hq, D], keys/values [Hkv, L, D] (already dequantized) -> [Hq, D], softmax in float32."""
    group = q.shape[0] // keys.shape[0]
    k = keys.repeat_interleave(group, dim=0).float()
    v = values.repeat_interleave(group, dim=0).float()
    scores = torch.einsum("hd,hld->hl", q.float(), k) * q.shape[-1] ** -0.5
    return torch.einsum("hl,hld->hd", torch.softmax(scores, dim=-1), v).to(q.dtype)
