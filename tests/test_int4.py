"""GPTQ layers convert exactly into tinygemm's int4 layout (the GPU kernel lcopt runs 4-bit weights on)."""

import copy

import pytest
import torch

from lcopt.int4 import TinyGemmLinear, convert_gptq, gptq_parts, is_gptq_layer
from lcopt.models import DEMO_MODEL, load_variant, write_technique_variant, write_variant

OPTIONS = {"group_size": 128, "desc_act": False, "calibration_samples": 4, "calibration_tokens": 256}


@pytest.fixture(scope="module")
def gptq_model(tmp_path_factory):
    """The demo model as a real GPTQ checkpoint (round-to-nearest through GPTQModel), loaded on the CPU."""
    d = tmp_path_factory.mktemp("int4")
    write_variant("demo", "baseline", DEMO_MODEL, d / "baseline.json")
    write_technique_variant("demo", "rtn4", "rtn4", d / "baseline.json", d / "rtn4", d / "rtn4.json", OPTIONS)
    model, _, _ = load_variant(d / "rtn4.json", "cpu", "float32")
    return model


def test_gptq_parts_reproduce_gptqmodels_own_dequantization(gptq_model):
    layers = [m for m in gptq_model.modules() if is_gptq_layer(m)]
    assert len(layers) == 7 * gptq_model.config.num_hidden_layers
    for layer in layers:
        codes, scales, zeros, perm = gptq_parts(layer)
        assert perm is None  # desc_act off: groups are sequential
        group = torch.arange(layer.in_features) // layer.group_size
        mine = scales[group].t() * (codes.float() - zeros[group].t())  # [out, in]
        theirs = layer.dequantize_weight().float().t()
        # GPTQModel multiplies in float16: (code - zero) is exact there, the product rounds once
        torch.testing.assert_close(mine, theirs, rtol=2**-10, atol=0)


def test_converted_layers_compute_what_the_gptq_layers_compute(gptq_model):
    torch.manual_seed(0)
    layer = gptq_model.model.layers[0]
    probes = {  # (module path, input)
        "self_attn.q_proj": torch.randn(5, gptq_model.config.hidden_size),
        "mlp.gate_proj": torch.randn(5, gptq_model.config.hidden_size),
        "mlp.down_proj": torch.randn(5, gptq_model.config.intermediate_size),
    }
    # GPTQModel's CPU layer repacks itself at its first forward: run the originals on a copy
    original = copy.deepcopy(layer)
    before = {name: original.get_submodule(name)(x) for name, x in probes.items()}
    assert convert_gptq(gptq_model, "cpu", torch.float32) == 7 * gptq_model.config.num_hidden_layers
    assert not any(is_gptq_layer(m) for m in gptq_model.modules())
    for name, x in probes.items():
        converted = layer.get_submodule(name)
        assert isinstance(converted, TinyGemmLinear)
        # the same 4-bit weights; tinygemm takes bf16 activations: equal up to bf16 rounding
        err = (converted(x) - before[name]).norm() / before[name].norm()
        assert err < 1e-2, (name, err)


def test_the_prefill_dequantization_gives_the_kernels_weights():
    """Long inputs dequantize the plain copy of the codes; its matrix is the one tinygemm multiplies by."""
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (64, 256), dtype=torch.uint8)
    scales, zeros = torch.rand(2, 64) * 0.1, torch.randint(0, 16, (2, 64)).float()
    layer = TinyGemmLinear(codes, scales, zeros, 128)
    group = torch.arange(256) // 128
    expected = (scales[group].t() * (codes.float() - zeros[group].t())).bfloat16()
    assert (layer.dequantize().float() - expected.float()).abs().max() <= expected.float().abs().max() * 2**-7
    x = torch.randn(3, 256).bfloat16()
    torch.testing.assert_close(layer(x).float(), x.float() @ layer.dequantize().float().t(), rtol=2e-2, atol=2e-2)
