"""KIVI's cache for the fast engine (`lcopt.engine`): packed 2/4-bit codes in preallocated buffers.

Keys per channel over groups of tokens, values per token over groups of channels, the newest tokens in
full-precision windows, quantized at the points of the official implementation (as the reference
`lcopt.techniques.kivi.reference.KIVICache`): a decode step attends before it quantizes. Here the
quantization is deferred to the next append, which is the same thing: the append of cache index p first
quantizes the key block [p - R, p) when p is a multiple of R and the value p - 1 - R, then writes the
new key to slot p % R of the key window (R slots) and the new value to slot p % (R + 1) of the value
window (R + 1 slots). So the attention over `len` tokens reads exact keys from ((len - 1) // R) * R on
and exact values from max(len - 1 - R, 0) on. A prefill of n leaves the state that n appends would
(the same quantized tokens). Every position is the cache index the engine passes, so a layer may hold
fewer tokens than another (a compacted prefill).

No full-precision copy of the whole cache is ever made: the prefill quantizes each layer's states as
soon as they are computed. On a GPU the append and the decode attention are Triton kernels
(`kernels`); on a CPU, or with `fused=False`, torch does the same.
"""

from __future__ import annotations

import math

import torch

from lcopt.quant import pack_planes, quantize_groups, unpack_planes
from lcopt.static_cache import StaticCache
from lcopt.techniques.kivi import kernels


class KIVIStaticCache(StaticCache):
    """KIVI (arXiv 2402.02750) in preallocated buffers; see the module docstring."""

    def __init__(self, layers, kv_heads, head_dim, max_len, q_heads, device, dtype, fused=None, *,
                 bits: int = 4, group_size: int = 32, residual_length: int = 128,
                 launch: kernels.Launch | None = None):  # fmt: skip
        if bits not in (2, 4):
            raise ValueError(f"KIVI bits must be 2 or 4, got {bits}")
        if residual_length % group_size:
            raise ValueError(f"residual_length {residual_length} must be a multiple of group_size {group_size}")
        self.bits, self.group_size, self.residual = bits, group_size, residual_length
        self.value_group = min(group_size, head_dim)
        self.launch = launch or kernels.LAUNCHES[bits]  # the decode kernel's tiles, warps, stages, splits
        if kernels.unfused_reason(head_dim, bits, group_size, self.value_group, residual_length):
            fused = False
        # whole blocks of keys, whole tiles of the decode kernel, whole interleaved runs of value codes
        tile = kernels.tile_tokens(self.launch, group_size)
        block = math.lcm(residual_length, tile, kernels.VALUE_INTERLEAVE)
        max_len = -(-max_len // block) * block
        super().__init__(layers, kv_heads, head_dim, max_len, q_heads, device, dtype, fused)
        L, H, D, R, S = layers, kv_heads, head_dim, residual_length, max_len
        kw, VI = {"device": self.device}, kernels.VALUE_INTERLEAVE
        self.k_codes = torch.zeros(L, H, S, D * bits // 8, dtype=torch.uint8, **kw)
        # values' codes by runs of VI tokens: byte j of token n at [n // VI, j, n % VI]
        self.v_codes = torch.zeros(L, H, S // VI, D * bits // 8, VI, dtype=torch.uint8, **kw)
        self.k_scale = torch.zeros(L, H, S // group_size, D, dtype=self.dtype, **kw)
        self.k_min = torch.zeros(L, H, S // group_size, D, dtype=self.dtype, **kw)
        # values' scales and minimums by group of channels, then token: a tile's are contiguous
        self.v_scale = torch.zeros(L, H, D // self.value_group, S, dtype=self.dtype, **kw)
        self.v_min = torch.zeros(L, H, D // self.value_group, S, dtype=self.dtype, **kw)
        self.k_window = torch.zeros(L, H, R, D, dtype=self.dtype, **kw)
        self.v_window = torch.zeros(L, H, R + 1, D, dtype=self.dtype, **kw)

    def _value_codes(self, layer: int, positions: torch.Tensor) -> torch.Tensor:
        """The packed value codes of `positions` [n] as [H, n, DB] (a copy)."""
        VI = kernels.VALUE_INTERLEAVE
        return self.v_codes[layer][:, positions // VI, :, positions % VI].transpose(0, 1)

    def layer_buffers(self, layer: int) -> tuple[torch.Tensor, ...]:
        """What the decode kernel reads of one layer, in `kernels.KIVIAttention.__call__`'s order."""
        return (self.k_codes[layer], self.v_codes[layer], self.k_scale[layer], self.k_min[layer], self.v_scale[layer],
                self.v_min[layer], self.k_window[layer], self.v_window[layer])  # fmt: skip

    def _attention(self, q_heads, block_n):
        return kernels.KIVIAttention(
            q_heads, self.kv_heads, self.head_dim, self.max_len, self.device, self.dtype, bits=self.bits,
            group_size=self.group_size, value_group=self.value_group, residual=self.residual, launch=self.launch,
        )  # fmt: skip

    def bytes_per_token(self) -> float:
        L, H, D = self.layers, self.kv_heads, self.head_dim
        codes = 2 * D * self.bits / 8
        scales = 2 * self.k_scale.element_size() * (D / self.group_size + D / self.value_group)
        return L * H * (codes + scales)

    def bytes_for(self, length: int) -> int:
        windows = self.k_window[0, 0].numel() + self.v_window[0, 0].numel()
        return round(self.bytes_per_token() * length) + self.layers * self.kv_heads * windows * self.dtype.itemsize

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
        n, VI = values.shape[1], kernels.VALUE_INTERLEAVE
        positions = torch.arange(first, first + n, device=values.device)
        self.v_codes[layer][:, positions // VI, :, positions % VI] = pack_planes(codes, self.bits).transpose(0, 1)
        self.v_scale[layer, :, :, first : first + n] = scale.squeeze(-1).transpose(-1, -2).to(self.dtype)
        self.v_min[layer, :, :, first : first + n] = minimum.squeeze(-1).transpose(-1, -2).to(self.dtype)

    def quantized(self, length: int) -> tuple[int, int]:
        """(keys, values) quantized when the attention reads `length` tokens (the rest are exact)."""
        R = self.residual
        return (length - 1) // R * R, max(length - 1 - R, 0)

    def prefill(self, layer, keys, values):
        """The state after n appends: keys and values below `quantized(n)` as codes, the rest exact."""
        n, R = keys.shape[1], self.residual
        if n > self.max_len:
            raise ValueError(f"a prefill of {n} tokens exceeds the cache's {self.max_len}")
        quantized_keys, quantized_values = self.quantized(n)
        if quantized_keys:
            self._put_keys(layer, 0, keys[:, :quantized_keys])
        self.k_window[layer, :, : n - quantized_keys] = keys[:, quantized_keys:]
        if quantized_values:
            self._put_values(layer, 0, values[:, :quantized_values])
        slots = torch.arange(quantized_values, n, device=values.device) % (R + 1)
        self.v_window[layer, :, slots] = values[:, quantized_values:]

    def append(self, layer, key, value, index):
        if self.fused:
            kernels.append(
                key, value, index, self.k_codes[layer], self.k_scale[layer], self.k_min[layer], self.v_codes[layer],
                self.v_scale[layer], self.v_min[layer], self.k_window[layer], self.v_window[layer],
                self.bits, self.group_size, self.value_group, self.residual,
            )  # fmt: skip
            return
        p, R = int(index), self.residual
        if p > R:  # the value the previous step read exact for the last time
            slot = p % (R + 1)
            self._put_values(layer, p - 1 - R, self.v_window[layer, :, slot : slot + 1])
        if p >= R and p % R == 0:  # the key block the previous step completed
            self._put_keys(layer, p - R, self.k_window[layer])
        self.k_window[layer, :, p % R] = key
        self.v_window[layer, :, p % (R + 1)] = value

    def read(self, layer, length, dtype=None):
        """What the attention over `length` tokens reads, as the reference cache dequantizes (in the
        model's dtype), or in `dtype` (float32: the exact values the codes stand for, to measure both
        paths' rounding against)."""
        dtype = dtype or self.dtype
        R = self.residual
        quantized_keys, quantized_values = self.quantized(length)
        kc = unpack_planes(self.k_codes[layer, :, :quantized_keys], self.bits).to(dtype)
        g = self.group_size
        ks = self.k_scale[layer, :, : quantized_keys // g].repeat_interleave(g, dim=1).to(dtype)
        km = self.k_min[layer, :, : quantized_keys // g].repeat_interleave(g, dim=1).to(dtype)
        keys = torch.cat([kc * ks + km, self.k_window[layer, :, : length - quantized_keys].to(dtype)], dim=1)
        vc = self._value_codes(layer, torch.arange(quantized_values, device=self.device))
        vc = unpack_planes(vc, self.bits).to(dtype)
        gv = self.value_group
        vs = self.v_scale[layer, :, :, :quantized_values].transpose(-1, -2).repeat_interleave(gv, dim=-1).to(dtype)
        vm = self.v_min[layer, :, :, :quantized_values].transpose(-1, -2).repeat_interleave(gv, dim=-1).to(dtype)
        slots = torch.arange(quantized_values, length, device=vc.device) % (R + 1)
        values = torch.cat([vc * vs + vm, self.v_window[layer, :, slots].to(dtype)], dim=1)
        return keys, values

    def _attend_fused(self, layer, q, length):
        return self.attention(q, length, *self.layer_buffers(layer))
