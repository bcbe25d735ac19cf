"""KIVI's reference cache (Liu et al., 2024, arXiv 2402.02750): a `transformers` Cache, pure PyTorch.

Keys are quantized per channel (groups of `group_size` consecutive tokens share a min and a scale
for each channel), values per token (groups of `group_size` consecutive channels of one token).
Asymmetric uniform quantization: scale = (max - min) / (2^bits - 1), code = round((x - min) / scale).
The newest tokens stay in full precision: keys until a block of `residual_length` (R) tokens is
complete (then the block is quantized at once, since per-channel groups need all their tokens), values
for the last R tokens (older ones are quantized one token at a time as they leave the window).

The order is the official implementation's (jy-yuan/KIVI, `models/llama_kivi.py`,
`LlamaAttention_KIVI.forward`): a decode step first attends over the cache with the new token appended
in full precision, then quantizes what left the windows. So at a step where the sequence becomes `len`
long, attention reads exact keys from position ((len - 1) // R) * R on (a full block of R exact keys
at the step that completes it) and exact values from max(len - 1 - R, 0) on (R + 1 of them). The
prefill quantizes keys [0, n - n % R) and values [0, n - R); its own attention uses the exact states.

Codes are packed into uint8 (two 4-bit or four 2-bit codes a byte), so the cache's tensors hold the
real bytes a KIVI cache needs. Dequantization happens on every read: this is the reference path that
runs anywhere; the fast engine's cache with fused kernels is `lcopt.techniques.kivi.static`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

from lcopt.quant import pack, quantize_groups, unpack


@dataclass
class QuantizedBlock:
    """Packed codes with per-group minimum and scale; `axis` is the grouped dim of the original tensor."""

    codes: torch.Tensor  # uint8, packed along the grouped dim (moved last)
    minimum: torch.Tensor
    scale: torch.Tensor
    bits: int
    group_size: int
    axis: int
    shape: tuple[int, ...]


def quantize(x: torch.Tensor, bits: int, group_size: int, axis: int) -> QuantizedBlock:
    """Asymmetric min-max quantization in groups of `group_size` along `axis`."""
    moved = x.movedim(axis, -1)
    if moved.shape[-1] % group_size:
        raise ValueError(f"dim {axis} of size {moved.shape[-1]} is not a multiple of group_size {group_size}")
    codes, minimum, scale = quantize_groups(moved, bits, group_size)
    minimum, scale = minimum.to(x.dtype), scale.to(x.dtype)
    return QuantizedBlock(pack(codes, bits), minimum, scale, bits, group_size, axis, tuple(x.shape))


def concat(block: QuantizedBlock | None, new: QuantizedBlock, dim: int) -> QuantizedBlock:
    """`new` after `block` along `dim` of the original tensors (same bits, group size and axis): one
    block however many are appended, so a read costs one dequantization, not one per decode step.
    Exact where `block` holds whole groups (and whole bytes) along `dim`, as KIVI's blocks do."""
    if block is None:
        return new
    ndim = len(new.shape)
    dim, axis = dim % ndim, new.axis % ndim
    # codes are laid out with `axis` moved last; minimum and scale add (groups, 1) after the others,
    # so `dim` sits at the same position in all three
    at = [d for d in range(ndim) if d != axis].index(dim) if dim != axis else ndim - 1
    shape = list(block.shape)
    shape[dim] += new.shape[dim]
    return QuantizedBlock(
        torch.cat([block.codes, new.codes], dim=at),
        torch.cat([block.minimum, new.minimum], dim=at),
        torch.cat([block.scale, new.scale], dim=at),
        new.bits,
        new.group_size,
        new.axis,
        tuple(shape),
    )


def dequantize(block: QuantizedBlock) -> torch.Tensor:
    codes = unpack(block.codes, block.bits)
    groups = codes.reshape(*codes.shape[:-1], -1, block.group_size).to(block.scale.dtype)
    values = groups * block.scale + block.minimum
    return values.reshape(codes.shape).movedim(-1, block.axis)


class KIVILayer(DynamicLayer):
    """One layer's KIVI cache: quantized blocks plus full-precision residual keys and values."""

    is_croppable = False

    def __init__(self, bits: int = 4, group_size: int = 32, residual_length: int = 128):
        super().__init__()
        if residual_length % group_size:
            raise ValueError(f"residual_length {residual_length} must be a multiple of group_size {group_size}")
        self.bits, self.group_size, self.residual_length = bits, group_size, residual_length
        self.quantized_keys: QuantizedBlock | None = None
        self.quantized_values: QuantizedBlock | None = None
        self.cumulative_length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states[..., :0, :], value_states[..., :0, :]
        self.value_group = min(self.group_size, value_states.shape[-1])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        prefill = not self.is_initialized
        if prefill:
            self.lazy_initialization(key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        # attend first (the official order): this step reads its new tokens and the windows exact
        read = (key_states, value_states) if prefill else self._read(keys, values)
        full_blocks = keys.shape[-2] // self.residual_length * self.residual_length
        if full_blocks:  # per-channel groups along tokens: quantize whole blocks only
            block = quantize(keys[..., :full_blocks, :], self.bits, self.group_size, axis=-2)
            self.quantized_keys = concat(self.quantized_keys, block, dim=-2)
            keys = keys[..., full_blocks:, :]
        overflow = values.shape[-2] - self.residual_length
        if overflow > 0:  # per-token groups along channels: quantize what leaves the window
            block = quantize(values[..., :overflow, :], self.bits, self.value_group, axis=-1)
            self.quantized_values = concat(self.quantized_values, block, dim=-2)
            values = values[..., overflow:, :]
        self.keys, self.values = keys.contiguous(), values.contiguous()
        return read

    def _read(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The dequantized blocks followed by the exact windows `keys`, `values`."""

        def read(quantized: QuantizedBlock | None, exact: torch.Tensor) -> torch.Tensor:
            return exact if quantized is None else torch.cat([dequantize(quantized), exact], dim=-2)

        return read(self.quantized_keys, keys), read(self.quantized_values, values)

    def get_seq_length(self) -> int:
        return self.cumulative_length

    def reset(self) -> None:
        super().reset()
        self.quantized_keys, self.quantized_values, self.cumulative_length = None, None, 0


class KIVICache(Cache):
    """A `transformers` cache for any decoder with full attention: `generate(past_key_values=KIVICache(...))`."""

    def __init__(self, config, bits: int = 4, group_size: int = 32, residual_length: int = 128):
        config = config.get_text_config(decoder=True)
        super().__init__(layers=[KIVILayer(bits, group_size, residual_length) for _ in range(config.num_hidden_layers)])
