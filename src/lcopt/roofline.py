"""What a generation must cost at least on a GPU: the bytes a decode step has to read and the FLOPs of the
prefill, over the GPU's datasheet bandwidth and dense bf16 rate. The measured times sit beside them in
the tables, the report's roofline figure and `benchmarks/decode.py` (which also measures the ceilings).

A decode step must read every decoder and LM-head weight once, one row of the embedding table (the token
it embeds) and the KV cache at its length: that, over the HBM bandwidth, is the physical limit every
fraction of roofline is taken against."""

from __future__ import annotations

# name as NVML/torch report it -> (HBM bytes/s, dense bf16 FLOP/s), from the vendors' datasheets
DATASHEET = {
    "NVIDIA H200": (4.8e12, 989e12),
    "NVIDIA H200 NVL": (4.8e12, 835e12),
    "NVIDIA H100 80GB HBM3": (3.35e12, 989e12),  # H100 SXM
    "NVIDIA H100 NVL": (3.9e12, 835e12),
    "NVIDIA H100 PCIe": (2.0e12, 756e12),
    "NVIDIA A100-SXM4-80GB": (2.039e12, 312e12),
    "NVIDIA A100-SXM4-40GB": (1.555e12, 312e12),
}


def datasheet(gpu: str) -> tuple[float | None, float | None]:
    """(HBM bytes/s, dense bf16 FLOP/s) of a GPU by the name torch reports; (None, None) if not listed."""
    return DATASHEET.get(gpu, (None, None))


def tensor_bytes(t) -> int:
    """Bytes a tensor holds; a wrapper subclass (torchao's packed int4 weights) reports the shape and dtype it
    stands for, so its inner tensors are counted instead."""
    if hasattr(t, "__tensor_flatten__"):
        return sum(tensor_bytes(getattr(t, name)) for name in t.__tensor_flatten__()[0])
    return t.numel() * t.element_size()


def weight_bytes(model) -> int:
    """Bytes of weights a decode step must read: every decoder and LM-head weight once (for a quantized
    layer what its kernel reads, `weight_bytes()`), and one row of the embedding table (the whole table
    when the LM head shares it)."""
    embedding = model.get_input_embeddings().weight
    total, seen = 0, {id(embedding)}
    for module in model.modules():
        if hasattr(module, "weight_bytes"):
            total += module.weight_bytes()
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += tensor_bytes(p)
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    return total + (tensor_bytes(embedding) if tied else embedding.shape[-1] * embedding.element_size())


def decode_bytes(model, kv_bytes_per_token: float, n_in: int, n_out: int) -> float:
    """Bytes a decode step must read, on average over a generation of `n_out` tokens after `n_in`: the weights
    (`weight_bytes`) and the KV cache at its mean length."""
    return weight_bytes(model) + kv_bytes_per_token * (n_in + n_out / 2)


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
    bandwidth, flops = datasheet(gpu)
    if bandwidth is None:
        return {}
    return {
        "roofline_decode_s": decode_bytes(model, kv_bytes_per_token, n_in, n_out) / bandwidth,
        "roofline_prefill_s": prefill_flops(model, n_in) / flops,
    }
