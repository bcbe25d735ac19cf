"""4-bit weights on a GPU kernel that ships with PyTorch: GPTQ layers as tinygemm int4 matmuls.

GPTQModel picks its kernel at load time: on a GPU that is Machete or Marlin, JIT-built on first use
(Machete downloads CUTLASS, which fails offline; Marlin builds for minutes inside the first timed
sample), and a model loaded on a CPU and moved keeps its CPU kernel. lcopt instead loads a GPTQ
checkpoint on the CPU with `from_pretrained` (GPTQModel's torch layers, the checkpoint unchanged),
then replaces every quantized layer by `TinyGemmLinear`, which runs PyTorch's own int4 weight-only
matmul (`aten._weight_int4pack_mm`, the "tinygemm" kernel that torchao and gpt-fast use; no build, no
download). The conversion is exact: GPTQ dequantizes `scale * (code - zero)`, tinygemm
`scale * (code - 8) + offset`, so `offset = (8 - zero) * scale`; act-order (`desc_act`) becomes a
permutation of the input columns. On a CPU the same layer uses the CPU variant of that kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INNER_K_TILES = 8  # tinygemm's tile depth along the input; in_features must be a multiple of 16 x this
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


def gptq_parts(layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(codes [out, in] uint8, scales [groups, out], zeros [groups, out], input permutation or None) of a
    GPTQModel 4-bit layer, so that W[o, i] = scales[g(i), o] * (codes[o, i] - zeros[g(i), o])."""
    if getattr(layer, "bits", None) != 4:
        raise ValueError(f"{type(layer).__name__}: only 4-bit GPTQ layers convert to tinygemm")
    codes = _unpack_rows(layer.qweight)[: layer.in_features].t().contiguous()
    zeros = _unpack_cols(layer.qzeros)[:, : layer.out_features].to(torch.int32)
    if layer.qzero_format() == 1:  # the GPTQ v1 checkpoint format stores zero - 1
        zeros = zeros + 1
    group = layer.group_size if layer.group_size > 0 else layer.in_features
    g_idx = layer.g_idx.to(torch.long)[: layer.in_features]
    sequential = torch.arange(layer.in_features, device=g_idx.device) // group
    perm = None
    if not torch.equal(g_idx, sequential):  # act-order: sort the input columns by group
        perm = torch.argsort(g_idx, stable=True)
        codes = codes[:, perm]
        if not torch.equal(g_idx[perm], sequential):
            raise ValueError(f"{type(layer).__name__}: groups of unequal size cannot be permuted into tinygemm groups")
    return codes, layer.scales.float(), zeros.float(), perm


class TinyGemmLinear(nn.Module):
    """y = x W^T (+ b) with W in tinygemm's packed int4 layout: one scale and offset per group of inputs."""

    KERNEL = "TinyGemmLinear (aten._weight_int4pack_mm)"

    def __init__(self, codes, scales, zeros, group_size: int, perm=None, bias=None, dtype=torch.bfloat16):
        super().__init__()
        out_features, in_features = codes.shape
        if in_features % (16 * INNER_K_TILES) or out_features % 8:
            raise ValueError(
                f"tinygemm needs in_features % {16 * INNER_K_TILES} == 0 and out_features % 8 == 0, "
                f"got {in_features} x {out_features}"
            )
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

    @staticmethod
    def pack(codes: torch.Tensor) -> torch.Tensor:
        """tinygemm's layout for the device the codes are on (its CUDA and CPU layouts differ): build the
        layer on the device it runs on."""
        if codes.is_cuda:
            pairs = (codes[:, ::2] << 4 | codes[:, 1::2]).contiguous()
            return torch.ops.aten._convert_weight_to_int4pack(pairs, INNER_K_TILES)
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), INNER_K_TILES)

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


def is_gptq_layer(module) -> bool:
    return all(hasattr(module, a) for a in ("qweight", "qzeros", "scales", "g_idx")) and hasattr(module, "qzero_format")


def convert_gptq(model, device, dtype=torch.bfloat16) -> int:
    """Replace every 4-bit GPTQ layer of `model` by a `TinyGemmLinear` on `device`; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not is_gptq_layer(child):
                continue
            codes, scales, zeros, perm = gptq_parts(child)
            bias = getattr(child, "bias", None)
            group = child.group_size if child.group_size > 0 else child.in_features
            layer = TinyGemmLinear(
                codes.to(device), scales.to(device), zeros.to(device), group,
                None if perm is None else perm.to(device), None if bias is None else bias.to(device), dtype,
            )  # fmt: skip
            setattr(parent, name, layer)
            count += 1
    return count


def random_tinygemm(in_features: int, out_features: int, group_size: int, device, dtype=torch.bfloat16, bias=None):
    """A layer of random 4-bit codes and scales: the system cost of a 4-bit model without its weights."""
    codes = torch.randint(0, 16, (out_features, in_features), dtype=torch.uint8, device=device)
    groups = in_features // group_size
    scales = torch.rand(groups, out_features, device=device) * 0.01 + 1e-3
    zeros = torch.full((groups, out_features), 8.0, device=device)
    return TinyGemmLinear(codes, scales, zeros, group_size, None, bias, dtype)
