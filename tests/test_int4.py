"""GPTQ checkpoints load exactly into tinygemm's int4 layout (the GPU kernel lcopt runs 4-bit weights on)."""

import json
from pathlib import Path

import pytest
import torch

from lcopt import int4
from lcopt.engine import Projections
from lcopt.int4 import TinyGemmLinear, dequantize_tinygemm, gptq_parts, tinygemm_codes
from lcopt.models import DEMO_MODEL, load_variant, write_technique_variant, write_variant
from lcopt.techniques.gptq import gptq_format, load_gptq_checkpoint

OPTIONS = {"group_size": 128, "desc_act": False, "calibration_samples": 4, "calibration_tokens": 256}


def is_gptq_layer(module) -> bool:
    return hasattr(module, "qweight") and hasattr(module, "qzero_format")


@pytest.fixture(scope="module")
def gptq_checkpoint(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """The demo model as a real GPTQ checkpoint (round-to-nearest through GPTQModel): the model GPTQModel
    loads on the CPU, and the checkpoint's directory."""
    d = tmp_path_factory.mktemp("int4")
    write_variant("demo", "baseline", DEMO_MODEL, d / "baseline.json")
    write_technique_variant("demo", "rtn4", "rtn4", d / "baseline.json", d / "rtn4", d / "rtn4.json", OPTIONS)
    model, _, _ = load_variant(d / "rtn4.json", "cpu", "float32")
    return model, Path(json.loads((d / "rtn4.json").read_text())["weights"])


def test_gptq_parts_reproduce_gptqmodels_own_dequantization(gptq_checkpoint):
    model, _ = gptq_checkpoint
    layers = [m for m in model.modules() if is_gptq_layer(m)]
    assert len(layers) == 7 * model.config.num_hidden_layers
    for layer in layers:
        v1 = layer.qzero_format() == 1
        codes, scales, zeros, perm = gptq_parts(layer.qweight, layer.qzeros, layer.scales, layer.g_idx, 128, v1)
        assert perm is None  # desc_act off: groups are sequential
        group = torch.arange(layer.in_features) // layer.group_size
        mine = scales[group].t() * (codes.float() - zeros[group].t())  # [out, in]
        theirs = layer.dequantize_weight().float().t()
        # GPTQModel multiplies in float16: (code - zero) is exact there, the product rounds once
        torch.testing.assert_close(mine, theirs, rtol=2**-10, atol=0)


def pack_gptq_v1(codes: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [out, in] and zeros [groups, out] (1..15) as GPTQ v1's int32 qweight [in / 8, out] and
    qzeros [groups, out / 8] (zero - 1 stored): eight 4-bit values a word, lowest bits first."""

    def words(x: torch.Tensor) -> torch.Tensor:  # unsigned 32-bit values as int32's bits
        return x - (x >= 2**31) * 2**32

    c = codes.t().to(torch.int64).reshape(-1, 8, codes.shape[0])  # [in / 8, 8, out]
    qweight = words(sum(c[:, i] << (4 * i) for i in range(8))).to(torch.int32)
    z = (zeros - 1).to(torch.int64).reshape(zeros.shape[0], -1, 8)  # [groups, out / 8, 8]
    qzeros = words(sum(z[..., i] << (4 * i) for i in range(8))).to(torch.int32)
    return qweight, qzeros


def test_act_order_checkpoints_become_a_permutation_of_the_inputs():
    """A GPTQ layer quantized in act-order stores shuffled group indices: the loaded layer permutes its
    inputs and computes x W^T with W = scale[g(i)] * (code - zero[g(i)])."""
    torch.manual_seed(0)
    out_f, in_f, group = 16, 256, 64
    codes = torch.randint(0, 16, (out_f, in_f))
    zeros = torch.randint(1, 16, (in_f // group, out_f))
    scales = torch.rand(in_f // group, out_f) * 0.1 + 0.01
    g_idx = (torch.arange(in_f) // group)[torch.randperm(in_f)].to(torch.int32)  # act-order
    qweight, qzeros = pack_gptq_v1(codes, zeros)
    parts = gptq_parts(qweight, qzeros, scales, g_idx, group, v1=True)
    assert parts[3] is not None
    layer = TinyGemmLinear.from_codes(*parts[:3], group, parts[3], dtype=torch.float32)
    weight = scales[g_idx.long()].t() * (codes - zeros[g_idx.long()].t())  # [out, in], in the original order
    x = torch.randn(3, in_f)
    expected = x @ weight.t()
    err = (layer(x) - expected).norm() / expected.norm()
    assert err < 1e-2, err  # bf16 activations


def test_a_gptq_checkpoint_loads_without_gptqmodel_and_computes_what_gptqmodel_computes(gptq_checkpoint):
    gptq_model, weights = gptq_checkpoint
    loaded = load_gptq_checkpoint(str(weights), "cpu", torch.float32)
    layers = [m for m in loaded.modules() if isinstance(m, TinyGemmLinear)]
    assert len(layers) == 7 * loaded.config.num_hidden_layers
    assert not any(isinstance(m, torch.nn.Linear) for m in loaded.model.layers.modules())
    assert loaded.lm_head.weight.dtype == torch.float32 and not loaded.lm_head.weight.is_meta  # the LM head stays
    theirs = dict(gptq_model.named_parameters())
    for name, p in loaded.named_parameters():
        torch.testing.assert_close(p, theirs[name], rtol=0, atol=0)  # embeddings, norms: as saved
    ids = torch.arange(5, 120)[None]
    with torch.no_grad():
        mine, expected = loaded(input_ids=ids).logits, gptq_model(input_ids=ids).logits
    err = (mine - expected).norm() / expected.norm()
    assert err < 2e-2, err  # the same 4-bit weights; tinygemm takes bf16 activations
    assert (mine.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9


def test_only_4bit_gptq_checkpoints_load_into_tinygemm():
    from transformers import LlamaConfig

    config = LlamaConfig()
    config.quantization_config = {"quant_method": "awq", "bits": 4, "format": "gemm"}
    with pytest.raises(ValueError, match=r"quant_method 'awq'.*format 'gemm'"):
        gptq_format(config)
    config.quantization_config = {"quant_method": "gptq", "bits": 4, "group_size": 64, "checkpoint_format": "gptq"}
    assert gptq_format(config) == (64, True)


def test_tinygemm_takes_smollm2s_576_inputs_with_shallower_tiles():
    """576 = 4.5 x 128: tinygemm's deepest tiles (8 x 16 inputs) do not fit SmolLM2's width; 4 x 16 do."""
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (192, 576), dtype=torch.uint8)
    scales, zeros = torch.rand(9, 192) * 0.1, torch.randint(0, 16, (9, 192)).float()
    layer = TinyGemmLinear.from_codes(codes, scales, zeros, 64, dtype=torch.float32)
    assert layer.inner_k_tiles == 4
    group = torch.arange(576) // 64
    weight = scales[group].t() * (codes.float() - zeros[group].t())
    x = torch.randn(2, 576)
    err = (layer(x) - x @ weight.t()).norm() / (x @ weight.t()).norm()
    assert err < 1e-2, err
    with pytest.raises(ValueError, match="in_features % 32"):
        TinyGemmLinear.from_codes(torch.zeros(8, 48, dtype=torch.uint8), torch.ones(1, 8), torch.zeros(1, 8), 32)


def test_the_cpu_layers_dequantization_gives_the_kernels_weights():
    """On a CPU the layer reads the CPU kernel's layout; its matrix is the one that kernel multiplies by."""
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (64, 256), dtype=torch.uint8)
    scales, zeros = torch.rand(2, 64) * 0.1, torch.randint(0, 16, (2, 64)).float()
    layer = TinyGemmLinear.from_codes(codes, scales, zeros, 128)
    assert layer.packed.dim() == 2
    x = torch.randn(3, 256).bfloat16()
    torch.testing.assert_close(layer(x).float(), x.float() @ layer.dequantize().float().t(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(layer.dequantize(), expected_weights(codes, layer.scales_and_zeros, 128))


def pack_cuda_layout(codes: torch.Tensor, inner_k_tiles: int) -> torch.Tensor:
    """A transcription of `aten._convert_weight_to_int4pack` (CUDA, aten/src/ATen/native/cuda/int4mm.cu,
    kernel `matrix_to_m16n8k16_Bint4_layout`): for n-tile nt, k-block kb, lane t and word j, the 8 codes of
    row nt * 8 + t // 4 at inputs kb * 16 it + 32 j + {0, 16} (two k-tiles) + 2 (t % 4) + {0, 8} + {0, 1},
    the word's bits holding, lowest first, the high nibbles (even inputs) of the bytes at +0, +8 (first
    k-tile), +16, +24 (second), then the low nibbles (odd inputs) in the same order. tests/test_device.py
    checks it against the real packer."""
    n, k = codes.shape
    t = inner_k_tiles
    x = codes.to(torch.int64).view(n // 8, 8, k // (16 * t), t // 2, 2, 2, 4, 2)  # [nt, row, kb, j, 16, 8, lane%4, 1]
    x = x.permute(0, 2, 1, 6, 3, 7, 4, 5).reshape(n // 8, k // (16 * t), 32, t // 2, 8)
    words = sum(x[..., p] << (4 * p) for p in range(8))
    return (words - (words >= 2**31) * 2**32).to(torch.int32)


def expected_weights(codes: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """scale * (code - 8) + offset exactly, rounded once to bf16 (tinygemm's bf16 fma)."""
    group = torch.arange(codes.shape[1]) // group_size
    scales, offsets = scales_and_zeros.double().unbind(-1)
    return ((codes.double() - 8) * scales[group].t() + offsets[group].t()).to(torch.bfloat16)


def cuda_layout_layer(out_features: int, in_features: int, group_size: int, seed: int, bias: bool = False):
    """A `TinyGemmLinear` holding random codes in the GPU's layout, on the CPU: it computes through
    `dequantize` (the prefill's path), so fused layers can be checked here."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (out_features, in_features), generator=g, dtype=torch.uint8)
    groups = in_features // group_size
    scales = torch.rand(groups, out_features, generator=g) * 0.02
    offsets = (8 - torch.randint(0, 16, (groups, out_features), generator=g)) * scales
    scales_and_zeros = torch.stack([scales, offsets], dim=-1).bfloat16()
    packed = pack_cuda_layout(codes, int4.inner_k_tiles(in_features))
    b = torch.randn(out_features, generator=g) if bias else None
    return TinyGemmLinear(packed, scales_and_zeros, in_features, group_size, bias=b), codes


@pytest.mark.parametrize("tiles", [8, 4, 2])
def test_the_gpus_packed_layout_unpacks_to_its_codes(tiles):
    codes = torch.randint(0, 16, (24, 32 * tiles * 3), generator=torch.Generator().manual_seed(tiles))
    assert torch.equal(tinygemm_codes(pack_cuda_layout(codes.to(torch.uint8), tiles)), codes.to(torch.uint8))


@pytest.mark.skipif(int4.triton is None, reason="triton is not installed")
@pytest.mark.parametrize(("out_features", "in_features", "group_size"), [(24, 512, 128), (40, 576, 64)])
def test_the_prefill_kernel_dequantizes_the_packed_codes_exactly(out_features, in_features, group_size):
    """The Triton kernel (Triton's interpreter here) reads the one packed copy of the codes the GPU holds:
    in float32 it equals the torch path and the exact weights bit for bit; in bf16 the torch path rounds
    once, as tinygemm's fma does (the interpreter truncates its bf16 conversion: within one bf16 step)."""
    layer, codes = cuda_layout_layer(out_features, in_features, group_size, seed=3)
    sz = layer.scales_and_zeros
    kernel = dequantize_tinygemm(layer.packed, sz, group_size, torch.float32, fused=True)
    torch.testing.assert_close(kernel, dequantize_tinygemm(layer.packed, sz, group_size, torch.float32, fused=False),
                               rtol=0, atol=0)  # fmt: skip
    expected = expected_weights(codes, sz, group_size)
    assert torch.equal(kernel.bfloat16(), expected)
    assert torch.equal(dequantize_tinygemm(layer.packed, sz, group_size, fused=False), expected)
    bf16 = dequantize_tinygemm(layer.packed, sz, group_size, fused=True).float()
    assert ((bf16 - expected.float()).abs() <= expected.float().abs() * 2**-7).all()


def test_fused_layers_compute_their_members_outputs_and_hold_no_weight_twice():
    """QKV as one 4-bit layer: its output is the members' side by side, and the members (which the
    model's own forward still calls) now view the fused buffers: the same bytes, once."""
    layers = [cuda_layout_layer(n, 256, 64, seed=n, bias=True)[0] for n in (64, 16, 16)]
    x = torch.randn(5, 256)
    before = [m(x) for m in layers]
    total = sum(m.weight_bytes() for m in layers)
    projections = Projections(layers, fuse=True)
    fused = projections.layer
    assert isinstance(fused, TinyGemmLinear) and fused.weight_bytes() == total
    for m in layers:
        assert m.packed.untyped_storage().data_ptr() == fused.packed.untyped_storage().data_ptr()
        assert m.scales_and_zeros.untyped_storage().data_ptr() == fused.scales_and_zeros.untyped_storage().data_ptr()
    torch.testing.assert_close(projections(x), torch.cat(before, dim=-1), rtol=0, atol=0)
    for m, out in zip(layers, before, strict=True):
        torch.testing.assert_close(m(x), out, rtol=0, atol=0)


def test_layers_that_cannot_share_a_launch_stay_apart():
    codes, scales, zeros = torch.zeros(64, 256, dtype=torch.uint8), torch.ones(2, 64), torch.zeros(2, 64)
    cpu = [TinyGemmLinear.from_codes(codes, scales, zeros, 128) for _ in range(2)]
    assert TinyGemmLinear.fuse(cpu) is None  # the CPU kernel's layout packs rows in blocks of 64
    a, _ = cuda_layout_layer(16, 256, 64, seed=1)
    b, _ = cuda_layout_layer(16, 256, 128, seed=2)
    assert TinyGemmLinear.fuse([a, b]) is None  # other groups
    b.group_size, b.perm = 64, torch.arange(256)
    assert TinyGemmLinear.fuse([a, b]) is None  # act-order
    projections = Projections([a, b], fuse=True)
    assert projections.layer is None and projections.weight is None
