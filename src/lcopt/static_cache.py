"""Preallocated KV caches of the fast engine (`lcopt.engine`), one object for all layers, batch 1.

Each holds its tokens in the format a cache-side technique stores them in, sized once for the longest
sequence of a job, so that a decode step has static shapes and can be captured in a CUDA graph:

- `DenseCache`: the model's own dtype (the baseline);
- `FP8Cache`: float8 e4m3 with one scale per layer and KV head, set from the prefill's absolute
  maximum (later tokens beyond it saturate at ±448 × scale);
- `KIVICache`: KIVI's packed 2/4-bit codes, keys per channel over groups of tokens, values per token
  over groups of channels, quantized as the cache fills, the newest tokens in a full-precision window
  (the same quantization points as the reference `lcopt.techniques.kivi.KIVICache`: whole blocks of
  `residual_length` keys, values as they leave the window). No full-precision copy of the whole cache
  is ever made: the prefill quantizes each layer's states as soon as they are computed.

`prefill` stores the exact states of the prompt (the prompt's own attention used them exactly, as in
KIVI); `append` adds one token at the device position `pos`; `attend` is the decode attention over the
first `length` tokens (device tensors, so one captured graph serves every step). On a CPU, or with
`fused=False`, reads dequantize in torch (`decode_attention.attend_reference`).
"""

from __future__ import annotations

import torch

from lcopt.decode_attention import DecodeAttention, attend_reference, triton
from lcopt.techniques.kivi import quantize_groups


def pack_planes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes [..., D] -> bytes [..., D * bits / 8], byte j holding channel j + p * D / planes at bits
    p * bits: each plane of codes is a contiguous slice of the channels (one matmul in the kernel)."""
    planes = codes.reshape(*codes.shape[:-1], 8 // bits, -1)
    out = torch.zeros(planes[..., 0, :].shape, dtype=torch.uint8, device=codes.device)
    for p in range(8 // bits):
        out |= planes[..., p, :].to(torch.uint8) << (bits * p)
    return out


def unpack_planes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    mask = (1 << bits) - 1
    return torch.cat([(packed >> (bits * p)) & mask for p in range(8 // bits)], dim=-1)


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _codes(x, mn, sc, QMAX: tl.constexpr):
        """torch.round((x - mn) / sc) clamped to [0, QMAX], halves to even (as `kivi.quantize_groups`)."""
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


class StaticCache:
    """The interface the engine uses; subclasses hold the buffers of one format."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, max_len: int, q_heads: int, device, dtype,
                 fused: bool | None = None, block_n: int = 64):  # fmt: skip
        self.layers, self.kv_heads, self.head_dim, self.max_len = layers, kv_heads, head_dim, max_len
        self.device, self.dtype = torch.device(device), dtype
        self.fused = (triton is not None and self.device.type == "cuda") if fused is None else fused
        self.attention = None
        if self.fused:
            self.attention = DecodeAttention(q_heads, kv_heads, head_dim, max_len, device, dtype, block_n)

    def buffers(self) -> list[torch.Tensor]:
        return [v for v in vars(self).values() if isinstance(v, torch.Tensor)]

    @property
    def reserved_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def bytes_per_token(self) -> float:
        """Bytes the cache holds per token over all layers (quantized part; the residual window aside)."""
        raise NotImplementedError

    def bytes_for(self, length: int) -> int:
        """The bytes `length` tokens occupy (what a cache sized for exactly them would hold)."""
        return round(self.bytes_per_token() * length)

    def prefill(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        raise NotImplementedError

    def append(self, layer: int, key: torch.Tensor, value: torch.Tensor, pos: torch.Tensor) -> None:
        raise NotImplementedError

    def read(self, layer: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `length` keys and values of a layer, dequantized: [Hkv, length, D]."""
        raise NotImplementedError

    def attend(self, layer: int, q: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Decode attention of q [Hq, D] over the first `length` tokens -> [Hq, D]."""
        if not self.fused:
            return attend_reference(q, *self.read(layer, int(length)))
        return self._attend_fused(layer, q, length)

    def _attend_fused(self, layer: int, q: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DenseCache(StaticCache):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shape = (self.layers, self.kv_heads, self.max_len, self.head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)

    def bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.k.element_size()

    def prefill(self, layer, keys, values):
        self.k[layer, :, : keys.shape[1]] = keys
        self.v[layer, :, : values.shape[1]] = values

    def append(self, layer, key, value, pos):
        self.k[layer].index_copy_(1, pos, key[:, None])
        self.v[layer].index_copy_(1, pos, value[:, None])

    def read(self, layer, length):
        return self.k[layer, :, :length], self.v[layer, :, :length]

    def _attend_fused(self, layer, q, length):
        return self.attention.dense(q, length, self.k[layer], self.v[layer])


FP8_MAX = 448.0  # largest finite float8_e4m3fn


class FP8Cache(StaticCache):
    """float8 e4m3 keys and values, a scale per (layer, KV head) from the prefill's absolute maximum."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, block_n=128, **kwargs)  # tiles of as many bytes as the dense cache's
        shape = (self.layers, self.kv_heads, self.max_len, self.head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=torch.float8_e4m3fn)
        self.v = torch.zeros(shape, device=self.device, dtype=torch.float8_e4m3fn)
        self.k_scale = torch.ones(self.layers, self.kv_heads, device=self.device, dtype=torch.float32)
        self.v_scale = torch.ones(self.layers, self.kv_heads, device=self.device, dtype=torch.float32)

    def bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim

    @staticmethod
    def _scale(x: torch.Tensor) -> torch.Tensor:
        amax = x.float().abs().amax(dim=(-2, -1))
        return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))

    @staticmethod
    def _encode(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return (x.float() / scale[:, None, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)

    def prefill(self, layer, keys, values):
        self.k_scale[layer] = self._scale(keys)
        self.v_scale[layer] = self._scale(values)
        self.k[layer, :, : keys.shape[1]] = self._encode(keys, self.k_scale[layer])
        self.v[layer, :, : values.shape[1]] = self._encode(values, self.v_scale[layer])

    def append(self, layer, key, value, pos):  # index_copy_ has no float8 kernel: copy the bytes
        for cache, scale, x in ((self.k, self.k_scale, key), (self.v, self.v_scale, value)):
            encoded = self._encode(x[:, None], scale[layer]).view(torch.uint8)
            cache[layer].view(torch.uint8).index_copy_(1, pos, encoded)

    def read(self, layer, length):
        k = self.k[layer, :, :length].float() * self.k_scale[layer][:, None, None]
        v = self.v[layer, :, :length].float() * self.v_scale[layer][:, None, None]
        return k.to(self.dtype), v.to(self.dtype)

    def _attend_fused(self, layer, q, length):
        return self.attention.dense(q, length, self.k[layer], self.v[layer], self.k_scale[layer], self.v_scale[layer])


class KIVICache(StaticCache):
    """KIVI (arXiv 2402.02750) in preallocated buffers; see the module docstring."""

    def __init__(self, layers, kv_heads, head_dim, max_len, q_heads, device, dtype, fused=None, *,
                 bits: int = 4, group_size: int = 32, residual_length: int = 128):  # fmt: skip
        if bits not in (2, 4):
            raise ValueError(f"KIVI bits must be 2 or 4, got {bits}")
        if residual_length % group_size:
            raise ValueError(f"residual_length {residual_length} must be a multiple of group_size {group_size}")
        max_len = -(-max_len // residual_length) * residual_length  # whole blocks of keys
        if head_dim * bits // 8 < 16:  # a plane of channels narrower than a tensor-core matmul: torch reads
            fused = False
        super().__init__(layers, kv_heads, head_dim, max_len, q_heads, device, dtype, fused, block_n=group_size)
        self.bits, self.group_size, self.residual = bits, group_size, residual_length
        self.value_group = min(group_size, head_dim)
        per_byte = 8 // bits
        L, H, D, R, S = layers, kv_heads, head_dim, residual_length, max_len
        kw = {"device": self.device}
        self.k_codes = torch.zeros(L, H, S, D // per_byte, dtype=torch.uint8, **kw)
        self.v_codes = torch.zeros(L, H, S, D // per_byte, dtype=torch.uint8, **kw)
        self.k_scale = torch.zeros(L, H, S // group_size, D, dtype=self.dtype, **kw)
        self.k_min = torch.zeros(L, H, S // group_size, D, dtype=self.dtype, **kw)
        self.v_scale = torch.zeros(L, H, S, D // self.value_group, dtype=self.dtype, **kw)
        self.v_min = torch.zeros(L, H, S, D // self.value_group, dtype=self.dtype, **kw)
        self.k_residual = torch.zeros(L, H, R, D, dtype=self.dtype, **kw)
        self.v_residual = torch.zeros(L, H, R, D, dtype=self.dtype, **kw)

    def bytes_per_token(self) -> float:
        L, H, D = self.layers, self.kv_heads, self.head_dim
        codes = 2 * D * self.bits / 8
        scales = 2 * self.k_scale.element_size() * (D / self.group_size + D / self.value_group)
        return L * H * (codes + scales)

    def bytes_for(self, length: int) -> int:
        window = 2 * self.layers * self.kv_heads * self.head_dim * self.k_residual.element_size() * self.residual
        return round(self.bytes_per_token() * length) + window

    def _put_keys(self, layer: int, first: int, keys: torch.Tensor) -> None:
        codes, minimum, scale = quantize_groups(keys.transpose(-1, -2), self.bits, self.group_size)
        n = keys.shape[1]
        self.k_codes[layer, :, first : first + n] = pack_planes(codes.transpose(-1, -2), self.bits)
        g = first // self.group_size
        rows = slice(g, g + n // self.group_size)
        self.k_scale[layer, :, rows] = scale.squeeze(-1).transpose(-1, -2).to(self.dtype)
        self.k_min[layer, :, rows] = minimum.squeeze(-1).transpose(-1, -2).to(self.dtype)

    def _put_values(self, layer: int, first: int, values: torch.Tensor) -> None:
        codes, minimum, scale = quantize_groups(values, self.bits, self.value_group)
        n = values.shape[1]
        self.v_codes[layer, :, first : first + n] = pack_planes(codes, self.bits)
        self.v_scale[layer, :, first : first + n] = scale.squeeze(-1).to(self.dtype)
        self.v_min[layer, :, first : first + n] = minimum.squeeze(-1).to(self.dtype)

    def prefill(self, layer, keys, values):
        n, R = keys.shape[1], self.residual
        quantized_keys = n // R * R
        if quantized_keys:
            self._put_keys(layer, 0, keys[:, :quantized_keys])
        self.k_residual[layer, :, : n - quantized_keys] = keys[:, quantized_keys:]
        quantized_values = max(n - R, 0)
        if quantized_values:
            self._put_values(layer, 0, values[:, :quantized_values])
        window = torch.arange(quantized_values, n, device=values.device) % R
        self.v_residual[layer, :, window] = values[:, quantized_values:]

    def append(self, layer, key, value, pos):
        if self.fused:
            _kivi_append[(self.kv_heads,)](
                key.contiguous(), value.contiguous(),
                self.k_codes[layer], self.k_scale[layer], self.k_min[layer],
                self.v_codes[layer], self.v_scale[layer], self.v_min[layer],
                self.k_residual[layer], self.v_residual[layer], pos,
                self.k_codes.stride(1), self.k_codes.stride(2), self.k_scale.stride(1), self.k_scale.stride(2),
                self.v_scale.stride(1), self.v_scale.stride(2), self.k_residual.stride(1), self.k_residual.stride(2),
                D=self.head_dim, BITS=self.bits, GK=self.group_size, GV=self.value_group, R=self.residual,
                num_warps=4,
            )  # fmt: skip
            return
        p, R = int(pos), self.residual
        slot = p % R
        if p >= R:
            self._put_values(layer, p - R, self.v_residual[layer, :, slot : slot + 1])
        self.v_residual[layer, :, slot] = value
        self.k_residual[layer, :, slot] = key
        if slot == R - 1:
            self._put_keys(layer, p + 1 - R, self.k_residual[layer])

    def read(self, layer, length, dtype=None):
        """As the reference cache dequantizes (in the model's dtype), or in `dtype` (float32: the exact
        values the codes stand for, to measure both paths' rounding against)."""
        dtype = dtype or self.dtype
        R = self.residual
        quantized_keys, quantized_values = length // R * R, max(length - R, 0)
        kc = unpack_planes(self.k_codes[layer, :, :quantized_keys], self.bits).to(dtype)
        g = self.group_size
        ks = self.k_scale[layer, :, : quantized_keys // g].repeat_interleave(g, dim=1).to(dtype)
        km = self.k_min[layer, :, : quantized_keys // g].repeat_interleave(g, dim=1).to(dtype)
        keys = torch.cat([kc * ks + km, self.k_residual[layer, :, : length - quantized_keys].to(dtype)], dim=1)
        vc = unpack_planes(self.v_codes[layer, :, :quantized_values], self.bits).to(dtype)
        gv = self.value_group
        vs = self.v_scale[layer, :, :quantized_values].repeat_interleave(gv, dim=-1).to(dtype)
        vm = self.v_min[layer, :, :quantized_values].repeat_interleave(gv, dim=-1).to(dtype)
        window = torch.arange(quantized_values, length, device=vc.device) % R
        values = torch.cat([vc * vs + vm, self.v_residual[layer, :, window].to(dtype)], dim=1)
        return keys, values

    def _attend_fused(self, layer, q, length):
        return self.attention.kivi(
            q, length, self.k_codes[layer], self.v_codes[layer], self.k_scale[layer], self.k_min[layer],
            self.v_scale[layer], self.v_min[layer], self.k_residual[layer], self.v_residual[layer],
            self.bits, self.group_size, self.value_group, self.residual,
        )  # fmt: skip
