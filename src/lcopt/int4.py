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

The GPU holds the codes once, in tinygemm's packed layout (half a byte per weight). tinygemm re-reads
its weights for every 16 rows of input: right for decoding, minutes for a long prefill. A prefill
therefore dequantizes each layer from that same packed layout into a bf16 matrix for cuBLAS, one layer
at a time (`dequantize_tinygemm`, a Triton kernel), instead of keeping a second, plain copy of the codes.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU install may lack Triton: the torch unpacking below serves there
    triton = None

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


# -- tinygemm's CUDA layout -----------------------------------------------------------------------------
# `aten._convert_weight_to_int4pack` (aten/src/ATen/native/cuda/int4mm.cu) packs codes [N, K] into int32
# [N / 8, K / (16 t), 32, t / 2] (t = inner k-tiles): one n-tile of 8 rows and t k-tiles of 16 inputs per
# (n-tile, k-block), as the 32 lanes of an m16n8k16 MMA read them. Word [nt, kb, lane, j] holds, for row
# nt * 8 + lane // 4, the 8 codes at inputs kb * 16 t + 32 j + 2 (lane % 4) + {0, 8, 16, 24} + {0, 1}:
# nibble p = 4a + 2b + d (lowest first) at offset 16 b + 8 d + a. Nothing else reads this layout, so
# every GPU layer checks it once against the packer of the torch it runs on (`_check_cuda_layout`).


def tinygemm_codes(packed: torch.Tensor) -> torch.Tensor:
    """uint8 codes [N, K] of a weight in tinygemm's CUDA layout (the torch path of `dequantize_tinygemm`)."""
    n_tiles, k_blocks, _, half = packed.shape
    nibbles = packed.contiguous().view(torch.uint8)  # [NT, KB, 32, 4 half] bytes, little-endian words
    nibbles = torch.stack((nibbles & 15, nibbles >> 4), dim=-1)  # nibble p = 2 * byte + high
    # [NT, KB, row 8, lane % 4, j, a, b, d] -> [NT, row, KB, j, b, d, lane % 4, a]
    nibbles = nibbles.view(n_tiles, k_blocks, 8, 4, half, 2, 2, 2).permute(0, 2, 1, 4, 6, 7, 3, 5)
    return nibbles.reshape(n_tiles * 8, k_blocks * half * 32)


@functools.cache
def _check_cuda_layout(device: torch.device, inner_k_tiles: int) -> None:
    """The packer of this torch puts codes where `tinygemm_codes` (and the Triton kernel) read them."""
    codes = torch.randint(0, 16, (16, 32 * inner_k_tiles), generator=torch.Generator().manual_seed(0))
    codes = codes.to(torch.uint8)
    pairs = (codes[:, ::2] << 4 | codes[:, 1::2]).contiguous().to(device)
    packed = torch.ops.aten._convert_weight_to_int4pack(pairs, inner_k_tiles)
    if not torch.equal(tinygemm_codes(packed).cpu(), codes):
        raise RuntimeError(
            f"torch {torch.__version__} packs int4 weights in another layout than lcopt.int4 reads for the prefill "
            f"(inner k-tiles {inner_k_tiles}); lcopt.int4.tinygemm_codes needs updating for this torch"
        )


if triton is not None:

    @triton.jit
    def _dequantize_tinygemm(
        P, SZ, OUT, N, K, stride_sg, stride_sn,
        GROUP: tl.constexpr, TILES: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        """OUT[n, k] = (code - 8) * scale + offset from the packed words (layout above), in float32 and
        rounded once, as tinygemm's bf16 fma does."""
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        within = k % (TILES * 16)
        j, w = within // 32, within % 32
        lane = 4 * (n % 8)[:, None] + ((w // 2) % 4)[None, :]
        nibble = 4 * (w % 2) + 2 * (w // 16) + (w // 8) % 2
        blocks = K // (TILES * 16)
        word = (((n // 8)[:, None] * blocks + (k // (TILES * 16))[None, :]) * 32 + lane) * (TILES // 2) + j[None, :]
        mask = (n < N)[:, None] & (k < K)[None, :]
        code = (tl.load(P + word, mask=mask, other=0) >> (4 * nibble)[None, :]) & 15
        sz = SZ + (k // GROUP)[None, :] * stride_sg + n[:, None].to(tl.int64) * stride_sn
        scale = tl.load(sz, mask=mask, other=0.0).to(tl.float32)
        offset = tl.load(sz + 1, mask=mask, other=0.0).to(tl.float32)
        weight = (code - 8).to(tl.float32) * scale + offset
        tl.store(OUT + n[:, None].to(tl.int64) * K + k[None, :], weight.to(OUT.dtype.element_ty), mask=mask)


def dequantize_tinygemm(
    packed: torch.Tensor,
    scales_and_zeros: torch.Tensor,
    group_size: int,
    dtype: torch.dtype = torch.bfloat16,
    fused: bool | None = None,
) -> torch.Tensor:
    """The matrix [N, K] of a weight in tinygemm's CUDA layout with its scales and offsets [groups, N, 2]
    (any strides: a fused layer's members hold views), computed in float32 and rounded once to `dtype`.
    `fused`: the Triton kernel (default on a GPU) or torch."""
    n_tiles, k_blocks, _, half = packed.shape
    n, k = n_tiles * 8, k_blocks * half * 32
    fused = (triton is not None and packed.is_cuda) if fused is None else fused
    if not fused:
        scales, offsets = scales_and_zeros.float().repeat_interleave(group_size, dim=0).unbind(-1)  # [K, N] each
        return ((tinygemm_codes(packed).float() - 8) * scales.t() + offsets.t()).to(dtype)
    out = torch.empty(n, k, dtype=dtype, device=packed.device)
    block_n, block_k = 16, 256
    _dequantize_tinygemm[(triton.cdiv(n, block_n), triton.cdiv(k, block_k))](
        packed, scales_and_zeros, out, n, k, scales_and_zeros.stride(0), scales_and_zeros.stride(1),
        GROUP=group_size, TILES=half * 2, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
    )  # fmt: skip
    return out


def inner_k_tiles(in_features: int) -> int | None:
    """tinygemm's deepest tile depth that divides the input (None: none does)."""
    return next((t for t in INNER_K_TILES if in_features % (16 * t) == 0), None)


class TinyGemmLinear(nn.Module):
    """y = x W^T (+ b) with W in tinygemm's packed int4 layout: one scale and offset per group of inputs.
    `packed` is the CUDA layout (4-D) on a GPU and the CPU kernel's (2-D) on a CPU: build the layer on the
    device it runs on (`from_codes`)."""

    KERNEL = "TinyGemmLinear (aten._weight_int4pack_mm)"

    def __init__(self, packed, scales_and_zeros, in_features: int, group_size: int, perm=None, bias=None,
                 dtype=torch.bfloat16):  # fmt: skip
        super().__init__()
        self.in_features, self.out_features = in_features, scales_and_zeros.shape[1]
        self.group_size, self.dtype = group_size, dtype
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scales_and_zeros", scales_and_zeros, persistent=False)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.to(dtype), persistent=False)

    @classmethod
    def from_codes(cls, codes, scales, zeros, group_size: int, perm=None, bias=None, dtype=torch.bfloat16):
        """The layer computing with W[o, i] = scales[g(i), o] * (codes[o, i] - zeros[g(i), o]), packed for the
        device the codes are on (tinygemm's CUDA and CPU layouts differ)."""
        out_features, in_features = codes.shape
        tiles = inner_k_tiles(in_features)
        if not tiles or out_features % 8 or group_size not in (32, 64, 128, 256) or in_features % group_size:
            raise ValueError(
                f"tinygemm needs in_features % 32 == 0, out_features % 8 == 0 and groups of 32, 64, 128 or 256 "
                f"inputs dividing in_features; got {in_features} x {out_features} in groups of {group_size}"
            )
        codes = codes.to(torch.uint8)
        if codes.is_cuda:
            _check_cuda_layout(codes.device, tiles)
            pairs = (codes[:, ::2] << 4 | codes[:, 1::2]).contiguous()
            packed = torch.ops.aten._convert_weight_to_int4pack(pairs, tiles)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), tiles)
        offsets = (8 - zeros) * scales  # scale * (code - zero) = scale * (code - 8) + offset
        scales_and_zeros = torch.stack([scales, offsets], dim=-1).to(torch.bfloat16).contiguous()
        return cls(packed, scales_and_zeros, in_features, group_size, perm, bias, dtype)

    @property
    def inner_k_tiles(self) -> int:
        return inner_k_tiles(self.in_features)

    @classmethod
    def fuse(cls, layers: list[TinyGemmLinear]) -> TinyGemmLinear | None:
        """One layer whose output is the outputs of `layers` (which take the same input) side by side: one
        kernel launch instead of several. Their buffers become views of the fused layer's, so no weight is
        held twice. None where they cannot share a launch: the CPU layout (packed in blocks of 64 rows),
        act-order permutations, or different groups, tiles, input sizes or dtypes."""
        first = layers[0]
        key = (first.in_features, first.group_size, first.dtype, first.packed.device, first.bias is None)
        if any(
            m.packed.dim() != 4 or m.perm is not None or (m.in_features, m.group_size, m.dtype, m.packed.device,
                                                            m.bias is None) != key
            for m in layers
        ):  # fmt: skip
            return None
        fused = cls(
            torch.cat([m.packed for m in layers]),
            torch.cat([m.scales_and_zeros for m in layers], dim=1),
            first.in_features,
            first.group_size,
            bias=None if first.bias is None else torch.cat([m.bias for m in layers]),
            dtype=first.dtype,
        )
        start = 0
        for m in layers:
            end = start + m.out_features
            m.packed = fused.packed[start // 8 : end // 8]
            m.scales_and_zeros = fused.scales_and_zeros[:, start:end]
            if m.bias is not None:
                m.bias = fused.bias[start:end]
            start = end
        return fused

    def dequantize(self) -> torch.Tensor:
        """The weights as a [out, in] bf16 matrix (scale * (code - 8) + offset per group): what the kernel
        multiplies by."""
        if self.packed.dim() == 4:
            return dequantize_tinygemm(self.packed, self.scales_and_zeros, self.group_size)
        eye = torch.eye(self.in_features, dtype=torch.bfloat16, device=self.packed.device)
        mm = torch.ops.aten._weight_int4pack_mm_for_cpu
        return mm(eye, self.packed, self.group_size, self.scales_and_zeros).t().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        if self.perm is not None:
            x = x[:, self.perm]
        x = x.to(torch.bfloat16)
        if self.packed.dim() == 2:  # the CPU kernel's layout
            mm = torch.ops.aten._weight_int4pack_mm_for_cpu
            out = mm(x, self.packed, self.group_size, self.scales_and_zeros)
        elif x.is_cuda and x.shape[0] <= PREFILL_ROWS:  # a fused layer's members hold strided scales
            mm = torch.ops.aten._weight_int4pack_mm
            out = mm(x, self.packed, self.group_size, self.scales_and_zeros.contiguous())
        else:
            out = F.linear(x, self.dequantize())
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
    return TinyGemmLinear.from_codes(codes, scales, zeros, group_size, None, bias, dtype)
