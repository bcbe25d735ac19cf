"""4-bit weights on a GPU kernel that ships with PyTorch: GPTQ checkpoints as tinygemm int4 matmuls.

GPTQModel picks its kernel at load time: on a GPU that is Machete or Marlin, JIT-built on first use
(Machete downloads CUTLASS, which fails offline; Marlin builds for minutes inside the first timed
sample). On a GPU lcopt therefore reads a GPTQ checkpoint itself (`techniques/gptq.py`: the
`qweight`, `qzeros`, `scales` and `g_idx` tensors GPTQModel and AutoGPTQ save) straight into
`TinyGemmLinear`, which runs PyTorch's own int4 weight-only matmul (`aten._weight_int4pack_mm`, the
"tinygemm" kernel that torchao and gpt-fast use; no build, no download, and no GPTQModel on the GPU
machine). The conversion is exact: GPTQ dequantizes `scale * (code - zero)`, tinygemm
`scale * (code - 8) + offset`, so `offset = (8 - zero) * scale`; act-order (`desc_act`) becomes a
permutation of the input columns. On a CPU the same layer uses the CPU variant of that kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INNER_K_TILES = (8, 4, 2)  # tinygemm's tile depths along the input, deepest first: in_features % (16 x it) == 0
PREFILL_ROWS = 16  # more input rows than this: dequantize and use cuBLAS


def _unpack_rows(packed: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """int32 [R, C] holding 32 // bits codes each along dim 0 -> uint8 [R * 32 // bits, C]."""
    per = 32 // bits
    shifts = torch.arange(0, 32, bits, device=packed.device, dtype=torch.int32)
    codes = (packed[:, None, :] >> shifts[None, :, None]) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0] * per, packed.shape[1]).to(torch.uint8)


def _unpack_cols(packed: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """int32 [R, C] holding 32 // bits codes each along dim 1 -> uint8 [R, C * 32 // bits]."""
    shifts = torch.arange(0, 32, bits, device=packed.device, dtype=torch.int32)
    codes = (packed[:, :, None] >> shifts[None, None, :]) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0], -1).to(torch.uint8)


def gptq_parts(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor, group_size: int, v1: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(codes [out, in] uint8, scales [groups, out], zeros [groups, out], input permutation or None) of a
    4-bit GPTQ layer's tensors, so that W[o, i] = scales[g(i), o] * (codes[o, i] - zeros[g(i), o]).
    `v1`: the first GPTQ checkpoint format (AutoGPTQ's, GPTQModel's default), which stores zero - 1."""
    in_features, out_features = g_idx.numel(), scales.shape[1]
    codes = _unpack_rows(qweight)[:in_features].t().contiguous()
    zeros = _unpack_cols(qzeros)[:, :out_features].to(torch.int32) + int(v1)
    group = group_size if group_size > 0 else in_features
    g_idx = g_idx.to(torch.long)
    sequential = torch.arange(in_features, device=g_idx.device) // group
    perm = None
    if not torch.equal(g_idx, sequential):  # act-order: sort the input columns by group
        perm = torch.argsort(g_idx, stable=True)
        codes = codes[:, perm]
        if not torch.equal(g_idx[perm], sequential):
            raise ValueError("GPTQ groups of unequal size cannot be permuted into tinygemm groups")
    return codes, scales.float(), zeros.float(), perm


class TinyGemmLinear(nn.Module):
    """y = x W^T (+ b) with W in tinygemm's packed int4 layout: one scale and offset per group of inputs."""

    KERNEL = "TinyGemmLinear (aten._weight_int4pack_mm)"

    def __init__(self, codes, scales, zeros, group_size: int, perm=None, bias=None, dtype=torch.bfloat16):
        super().__init__()
        out_features, in_features = codes.shape
        tiles = [t for t in INNER_K_TILES if in_features % (16 * t) == 0]
        if not tiles or out_features % 8 or group_size not in (32, 64, 128, 256) or in_features % group_size:
            raise ValueError(
                f"tinygemm needs in_features % 32 == 0, out_features % 8 == 0 and groups of 32, 64, 128 or 256 "
                f"inputs dividing in_features; got {in_features} x {out_features} in groups of {group_size}"
            )
        self.inner_k_tiles = tiles[0]
        self.in_features, self.out_features, self.group_size, self.dtype = in_features, out_features, group_size, dtype
        offsets = (8 - zeros) * scales  # scale * (code - zero) = scale * (code - 8) + offset
        codes = codes.to(torch.uint8)
        self.register_buffer("packed", self.pack(codes), persistent=False)
        # tinygemm re-reads its weights for every 16 rows of input: right for decoding, minutes for a long
        # prefill. Prefill dequantizes instead, from a plain copy of the codes (two a byte) into a bf16
        # matrix for cuBLAS, one layer at a time; the copy costs another half byte per weight.
        self.register_buffer("pairs", (codes[:, ::2] << 4 | codes[:, 1::2]).contiguous(), persistent=False)
        self.register_buffer(
            "scales_and_zeros", torch.stack([scales, offsets], dim=-1).to(torch.bfloat16).contiguous(), persistent=False
        )
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.to(dtype), persistent=False)

    def pack(self, codes: torch.Tensor) -> torch.Tensor:
        """tinygemm's layout for the device the codes are on (its CUDA and CPU layouts differ): build the
        layer on the device it runs on."""
        if codes.is_cuda:
            pairs = (codes[:, ::2] << 4 | codes[:, 1::2]).contiguous()
            return torch.ops.aten._convert_weight_to_int4pack(pairs, self.inner_k_tiles)
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), self.inner_k_tiles)

    def dequantize(self) -> torch.Tensor:
        """The weights as a [out, in] bf16 matrix (scale * (code - 8) + offset per group)."""
        n, k, g = self.out_features, self.in_features, self.group_size
        codes = torch.stack((self.pairs >> 4, self.pairs & 15), dim=-1).view(n, k // g, g).to(torch.bfloat16)
        scales, offsets = self.scales_and_zeros.permute(2, 1, 0)  # [out, groups] each
        return ((codes - 8) * scales[..., None] + offsets[..., None]).view(n, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        if self.perm is not None:
            x = x[:, self.perm]
        x = x.to(torch.bfloat16)
        if x.is_cuda and x.shape[0] > PREFILL_ROWS:
            out = F.linear(x, self.dequantize())
        elif x.is_cuda:
            out = torch.ops.aten._weight_int4pack_mm(x, self.packed, self.group_size, self.scales_and_zeros)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, self.group_size, self.scales_and_zeros)
        out = out.to(self.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape, self.out_features)

    def weight_bytes(self) -> int:
        """Bytes a decode step reads: the packed codes plus the scales and offsets."""
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scales_and_zeros))


def random_tinygemm(in_features: int, out_features: int, group_size: int, device, dtype=torch.bfloat16, bias=None):
    """A layer of random 4-bit codes and scales: the system cost of a 4-bit model without its weights."""
    codes = torch.randint(0, 16, (out_features, in_features), dtype=torch.uint8, device=device)
    groups = in_features // group_size
    scales = torch.rand(groups, out_features, device=device) * 0.01 + 1e-3
    zeros = torch.full((groups, out_features), 8.0, device=device)
    return TinyGemmLinear(codes, scales, zeros, group_size, None, bias, dtype)
