"""KIVI's Triton kernels for the fast engine's cache (`lcopt.techniques.kivi.static`): the append of one
token (quantizing what leaves the full-precision windows) and the decode attention fused with the
dequantization.

Layout: codes packed along the channels in planes, byte j of a token holding channel j + p * D / planes
at bits p * bits (`lcopt.quant.pack_planes`), so that each plane is a contiguous slice of the channels
and one matmul; keys grouped per channel over `group_size` consecutive tokens (scale and minimum
[groups, D]; a tile is one group), values per token over `group_size` consecutive channels (scale and
minimum [S, D // group_size]). Keys at positions >= `(len // R) * R` and values at positions >=
`len - R` are read from the bf16 residual buffers at slot `pos % R`.
"""

from __future__ import annotations

from lcopt.decode_attention import DecodeAttention, triton

if triton is not None:
    import triton.language as tl

    from lcopt.decode_attention import _dot, _finish

    @triton.jit
    def _codes(x, mn, sc, QMAX: tl.constexpr):
        """torch.round((x - mn) / sc) clamped to [0, QMAX], halves to even (as `lcopt.quant.quantize_groups`)."""
        t = tl.math.div_rn(x - mn, sc)
        r = tl.floor(t + 0.5)
        r = tl.where(((r - t) == 0.5) & ((r.to(tl.int32) % 2) == 1), r - 1.0, r)
        return tl.minimum(tl.maximum(r, 0.0), QMAX).to(tl.int32)

    @triton.jit
    def _kivi_append(
        KN, VN, KC, KS, KM, VC, VS, VM, KR, VR, POS,
        stride_ch, stride_cn, stride_ksh, stride_ksn, stride_vsh, stride_vsn, stride_rh, stride_rn,
        D: tl.constexpr, BITS: tl.constexpr, GK: tl.constexpr, GV: tl.constexpr, R: tl.constexpr,
    ):  # fmt: skip
        """One token into one layer (a program per KV head): the value leaving the window is quantized
        per token; the new key and value go to slot pos % R; a full block of keys is quantized."""
        h = tl.program_id(0)
        pos = tl.load(POS).to(tl.int32)
        slot = pos % R
        PB: tl.constexpr = 8 // BITS
        QMAX: tl.constexpr = (1 << BITS) - 1
        offs_d = tl.arange(0, D)
        offs_b = tl.arange(0, D // PB)
        shifts = tl.arange(0, PB) * BITS  # plane p of a byte: channels p * D / PB + j
        k_new = tl.load(KN + h * D + offs_d)
        v_new = tl.load(VN + h * D + offs_d)
        if pos >= R:
            old = tl.reshape(tl.load(VR + h * stride_rh + slot * stride_rn + offs_d).to(tl.float32), (D // GV, GV))
            mn = tl.min(old, 1)
            sc = (tl.max(old, 1) - mn) / QMAX
            sc = tl.where(sc > 0, sc, 1.0)
            codes = tl.reshape(_codes(old, mn[:, None], sc[:, None], QMAX), (PB, D // PB))
            row = pos - R
            tl.store(VC + h * stride_ch + row * stride_cn + offs_b, tl.sum(codes << shifts[:, None], 0).to(tl.uint8))
            offs_gv = tl.arange(0, D // GV)
            tl.store(VS + h * stride_vsh + row * stride_vsn + offs_gv, sc.to(VS.dtype.element_ty))
            tl.store(VM + h * stride_vsh + row * stride_vsn + offs_gv, mn.to(VM.dtype.element_ty))
        tl.debug_barrier()
        tl.store(VR + h * stride_rh + slot * stride_rn + offs_d, v_new)
        tl.store(KR + h * stride_rh + slot * stride_rn + offs_d, k_new)
        if slot == R - 1:
            offs_r = tl.arange(0, R)
            blk = tl.load(KR + h * stride_rh + offs_r[:, None] * stride_rn + offs_d[None, :],
                          mask=(offs_r < R - 1)[:, None], other=0.0)  # fmt: skip
            blk = tl.where((offs_r == R - 1)[:, None], k_new[None, :], blk).to(tl.float32)
            grp = tl.reshape(blk, (R // GK, GK, D))
            mn = tl.min(grp, 1)
            sc = (tl.max(grp, 1) - mn) / QMAX
            sc = tl.where(sc > 0, sc, 1.0)
            codes = tl.reshape(_codes(grp, mn[:, None, :], sc[:, None, :], QMAX), (R, PB, D // PB))
            packed = tl.sum(codes << shifts[None, :, None], 1).to(tl.uint8)
            first = pos + 1 - R
            tl.store(KC + h * stride_ch + (first + offs_r)[:, None] * stride_cn + offs_b[None, :], packed)
            rows = first // GK + tl.arange(0, R // GK)
            tl.store(KS + h * stride_ksh + rows[:, None] * stride_ksn + offs_d[None, :], sc.to(KS.dtype.element_ty))
            tl.store(KM + h * stride_ksh + rows[:, None] * stride_ksn + offs_d[None, :], mn.to(KM.dtype.element_ty))

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


def attend(
    attention: DecodeAttention, q, length, kc, vc, ks, km, vs, vm, kr, vr, bits: int, gk: int, gv: int, residual: int
):
    """q [Hq, D] over KIVI codes (planar bytes [Hkv, S, D * bits / 8]), scales, and residuals."""
    if attention.split % gk:
        raise ValueError(f"split {attention.split} is not a multiple of the key group {gk}")
    _decode_partial_kivi[(attention.kv_heads, attention.nsplit)](
        q, kc, vc, ks, km, vs, vm, kr, vr, length, attention.partial, attention.lse,
        q.stride(0), kc.stride(0), kc.stride(1), ks.stride(0), ks.stride(1), vs.stride(0), vs.stride(1),
        kr.stride(0), kr.stride(1), attention.partial.stride(0), attention.partial.stride(1), attention.sm_scale,
        BITS=bits, GK=gk, GV=gv, R=residual, **attention.launch, num_warps=4, num_stages=1 if attention.ieee else 3,
    )  # fmt: skip
    return attention._combine(q)
