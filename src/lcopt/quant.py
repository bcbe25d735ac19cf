"""Shared integer quantization helpers on the lowest floor (torch only): asymmetric min-max codes in
groups, and the two byte packings lcopt's caches use. Every cache or kernel module that needs them
imports them from here, so no module below a technique imports the technique back."""

from __future__ import annotations

import torch


def quantize_groups(x: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, ...]:
    """Asymmetric min-max codes in groups of `group_size` along the last dim: (codes uint8 of x's shape,
    minimum, scale), the latter two float32 [..., groups, 1]."""
    if x.shape[-1] % group_size:
        raise ValueError(f"last dim of size {x.shape[-1]} is not a multiple of group_size {group_size}")
    groups = x.reshape(*x.shape[:-1], -1, group_size).float()
    minimum = groups.amin(dim=-1, keepdim=True)
    scale = (groups.amax(dim=-1, keepdim=True) - minimum) / (2**bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: any scale is exact
    codes = torch.clamp(torch.round((groups - minimum) / scale), 0, 2**bits - 1).to(torch.uint8)
    return codes.reshape(x.shape), minimum, scale


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes < 2**bits along the last dim (its size a multiple of 8 // bits) into bytes,
    neighbours together: byte j holds codes j * per_byte ... (first code in the low bits)."""
    per_byte = 8 // bits
    if codes.shape[-1] % per_byte:
        raise ValueError(f"last dim {codes.shape[-1]} is not a multiple of {per_byte}")
    grouped = codes.reshape(*codes.shape[:-1], -1, per_byte).to(torch.uint8)
    out = torch.zeros(grouped.shape[:-1], dtype=torch.uint8, device=codes.device)
    for i in range(per_byte):
        out |= grouped[..., i] << (bits * i)
    return out


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * i)) & mask for i in range(per_byte)]
    return torch.stack(parts, dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)


def pack_planes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes [..., D] -> bytes [..., D * bits / 8], byte j holding channel j + p * D / planes at bits
    p * bits: each plane of codes is a contiguous slice of the channels (one matmul in a kernel)."""
    planes = codes.reshape(*codes.shape[:-1], 8 // bits, -1)
    out = torch.zeros(planes[..., 0, :].shape, dtype=torch.uint8, device=codes.device)
    for p in range(8 // bits):
        out |= planes[..., p, :].to(torch.uint8) << (bits * p)
    return out


def unpack_planes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    mask = (1 << bits) - 1
    return torch.cat([(packed >> (bits * p)) & mask for p in range(8 // bits)], dim=-1)
