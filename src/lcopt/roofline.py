"""What a generation must cost at least on a GPU: the bytes a decode step has to read and the FLOPs of the
prefill, over the GPU's datasheet bandwidth and dense bf16 rate. The measured times sit beside them in
the tables, the report's roofline figure and `benchmarks/decode.py` (which also measures the ceilings)."""

from __future__ import annotations

# name as NVML/torch report it -> (HBM bytes/s, dense bf16 FLOP/s), from the vendors' datasheets
DATASHEET = {
    "NVIDIA H200": (4.8e12, 989e12),
    "NVIDIA H100 80GB HBM3": (3.35e12, 989e12),
    "NVIDIA A100-SXM4-80GB": (2.039e12, 312e12),
    "NVIDIA A100-SXM4-40GB": (1.555e12, 312e12),
}


def weight_bytes(model) -> int:
    """Bytes of weights a decode step reads: every parameter once (the embedding included, as the
    issue's targets count it), and for a quantized layer what its kernel reads (`weight_bytes()`)."""
    total = 0
    for module in model.modules():
        if hasattr(module, "weight_bytes"):
            total += module.weight_bytes()
        else:
            total += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
    return total


def prefill_flops(model, n: int) -> float:
    """2 FLOPs per non-embedding parameter and token, plus causal attention (QK^T and PV, half the square)."""
    from lcopt.engine import cache_geometry

    g = cache_geometry(model.config)
    embed = model.get_input_embeddings().weight.numel()
    params = -embed
    for module in model.modules():
        if hasattr(module, "weight_bytes"):  # a quantized layer: packed codes are buffers, its matmul is full size
            params += module.in_features * module.out_features
        else:
            params += sum(p.numel() for p in module.parameters(recurse=False))
    return 2 * params * n + 2 * g["layers"] * g["q_heads"] * g["head_dim"] * n * n


def rooflines(model, gpu: str, n_in: int, n_out: int, kv_bytes_per_token: float) -> dict:
    """`roofline_decode_s` (per token, at the decode's mean length) and `roofline_prefill_s` for a GPU
    named in `DATASHEET`; empty for any other device."""
    if gpu not in DATASHEET:
        return {}
    bandwidth, flops = DATASHEET[gpu]
    read = weight_bytes(model) + kv_bytes_per_token * (n_in + n_out / 2)
    return {"roofline_decode_s": read / bandwidth, "roofline_prefill_s": prefill_flops(model, n_in) / flops}
