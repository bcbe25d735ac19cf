"""KIVI's cache for the fast engine (`lcopt.engine`): packed 2/4-bit codes in preallocated buffers.

Keys per channel over groups of tokens, values per token over groups of channels, quantized as the
cache fills, the newest tokens in a full-precision window (the same quantization points as the
reference `lcopt.techniques.kivi.reference.KIVICache`: whole blocks of `residual_length` keys, values
as they leave the window). No full-precision copy of the whole cache is ever made: the prefill
quantizes each layer's states as soon as they are computed. On a GPU the append and the decode
attention are Triton kernels (`kernels`); on a CPU, or with `fused=False`, torch does the same.
"""

from __future__ import annotations

import torch

from lcopt.quant import pack_planes, quantize_groups, unpack_planes
from lcopt.static_cache import StaticCache
from lcopt.techniques.kivi import kernels


class KIVIStaticCache(StaticCache):
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

    def append(self, layer, key, value, index):
        if self.fused:
            kernels._kivi_append[(self.kv_heads,)](
                key.contiguous(), value.contiguous(),
                self.k_codes[layer], self.k_scale[layer], self.k_min[layer],
                self.v_codes[layer], self.v_scale[layer], self.v_min[layer],
                self.k_residual[layer], self.v_residual[layer], index,
                self.k_codes.stride(1), self.k_codes.stride(2), self.k_scale.stride(1), self.k_scale.stride(2),
                self.v_scale.stride(1), self.v_scale.stride(2), self.k_residual.stride(1), self.k_residual.stride(2),
                D=self.head_dim, BITS=self.bits, GK=self.group_size, GV=self.value_group, R=self.residual,
                num_warps=4,
            )  # fmt: skip
            return
        p, R = int(index), self.residual
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
        return kernels.attend(
            self.attention, q, length, self.k_codes[layer], self.v_codes[layer], self.k_scale[layer], self.k_min[layer],
            self.v_scale[layer], self.v_min[layer], self.k_residual[layer], self.v_residual[layer],
            self.bits, self.group_size, self.value_group, self.residual,
        )  # fmt: skip
