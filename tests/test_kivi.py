"""KIVI: packing is bit-exact, quantization matches a plain re-implementation of the paper's equations,
the cache keeps the paper's layout (per-channel keys in blocks, per-token values, exact residual) and
reads exactly the tokens the official implementation reads exact, step by step."""

from itertools import pairwise

import pytest
import torch

from lcopt.quant import pack, unpack
from lcopt.techniques.kivi.reference import KIVICache, KIVILayer, concat, dequantize, quantize


@pytest.mark.parametrize("bits", [2, 4])
def test_pack_round_trip_is_bit_exact(bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (3, 5, 64), generator=g, dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 5, 64 * bits // 8)
    assert torch.equal(unpack(packed, bits), codes)
    # first code in the low bits: a hand-checked byte
    assert pack(torch.tensor([[1, 2]], dtype=torch.uint8), 4).item() == 0x21
    assert pack(torch.tensor([[3, 0, 1, 2]], dtype=torch.uint8), 2).item() == 0b10_01_00_11


def reference_quantize(x: torch.Tensor, bits: int, group: int, axis: int) -> torch.Tensor:
    """KIVI's Q(X) = round((X - min) / s) * s + min with s = (max - min) / (2^B - 1), group by group."""
    moved = x.movedim(axis, -1).double()
    out = torch.empty_like(moved)
    for index in torch.cartesian_prod(*[torch.arange(n) for n in moved.shape[:-1]]).tolist():
        index = tuple(index) if isinstance(index, list) else (index,)
        for start in range(0, moved.shape[-1], group):
            chunk = moved[index][start : start + group]
            lo, hi = chunk.min(), chunk.max()
            s = (hi - lo) / (2**bits - 1) if hi > lo else torch.tensor(1.0, dtype=torch.float64)
            q = torch.clamp(torch.round((chunk - lo) / s), 0, 2**bits - 1)
            out[index][start : start + group] = q * s + lo
    return out.movedim(-1, axis)


@pytest.mark.parametrize(("bits", "axis"), [(4, -2), (2, -2), (4, -1), (2, -1)])
def test_quantize_matches_the_papers_equations(bits, axis):
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    block = quantize(x, bits, 32, axis)
    got = dequantize(block)
    ref = reference_quantize(x, bits, 32, axis).float()
    assert got.shape == x.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    step = block.scale.max().item()
    assert (got - x).abs().max().item() <= step / 2 + 1e-5
    assert block.codes.numel() * 8 == x.numel() * bits  # really packed


def test_keys_are_per_channel_and_values_per_token():
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    x[..., :, 5] *= 100  # an outlier channel: per-channel key groups isolate it
    keys = quantize(x, 2, 32, axis=-2)
    values = quantize(x, 2, 32, axis=-1)
    assert keys.scale.shape == (1, 1, 32, 1, 1)  # one scale per channel per block of 32 tokens
    assert values.scale.shape == (1, 1, 32, 1, 1) and values.axis == -1  # one per token per 32 channels
    key_err = (dequantize(keys) - x)[..., :, :5].abs().mean()
    value_err = (dequantize(values) - x)[..., :, :5].abs().mean()
    assert key_err < value_err  # the outlier channel does not spoil the other channels' keys


def test_layer_layout_through_prefill_and_decode():
    torch.manual_seed(0)
    layer = KIVILayer(bits=4, group_size=32, residual_length=64)
    seen_k, seen_v = [], []
    k, v = torch.randn(1, 2, 150, 32), torch.randn(1, 2, 150, 32)
    out_k, out_v = layer.update(k, v)
    assert out_k is k and out_v is v  # the prefill attends to exact states, as in KIVI
    seen_k.append(k)
    seen_v.append(v)
    for _ in range(40):
        k, v = torch.randn(1, 2, 1, 32), torch.randn(1, 2, 1, 32)
        out_k, out_v = layer.update(k, v)
        seen_k.append(k)
        seen_v.append(v)
    total = 190
    all_k, all_v = torch.cat(seen_k, -2), torch.cat(seen_v, -2)
    assert layer.get_seq_length() == total == out_k.shape[-2] == out_v.shape[-2]
    assert layer.quantized_keys.shape[-2] == total // 64 * 64  # whole blocks only
    assert layer.keys.shape[-2] == total % 64
    assert layer.values.shape[-2] == 64  # the newest 64 values stay exact
    assert torch.equal(out_k[..., -(total % 64) :, :], all_k[..., -(total % 64) :, :])
    # the step attended before it quantized: it read 65 exact values, the 65th quantized only after
    assert torch.equal(out_v[..., -65:, :], all_v[..., -65:, :])
    assert not torch.equal(out_v[..., -66, :], all_v[..., -66, :])
    old = slice(0, total // 64 * 64)
    assert not torch.equal(out_k[..., old, :], all_k[..., old, :])
    torch.testing.assert_close(out_k[..., old, :], all_k[..., old, :], atol=0.6, rtol=0)


def test_cache_in_generate_saves_bytes_and_keeps_the_answer(tmp_path):
    from lcopt import inference, synthetic
    from lcopt.io import read_jsonl, write_jsonl_atomic
    from lcopt.models import DEMO_MODEL, write_variant
    from lcopt.prompts import write_prompts

    write_jsonl_atomic(tmp_path / "rows.jsonl", synthetic.generate("passkey", 1024, 3, seed=11))
    write_prompts(DEMO_MODEL, "passkey", tmp_path / "rows.jsonl", 4000, tmp_path / "prompts.jsonl")
    write_variant("demo", "baseline", DEMO_MODEL, tmp_path / "variant.json")
    results = {}
    for kv in ["none", "kivi4", "kivi2"]:
        inference.run(tmp_path / "variant.json", tmp_path / "prompts.jsonl", tmp_path / f"{kv}.jsonl", kv, "cpu")
        results[kv] = read_jsonl(tmp_path / f"{kv}.jsonl")
    full, k4, k2 = (sum(r["kv_cache_bytes"] for r in results[m]) for m in ["none", "kivi4", "kivi2"])
    assert full / k4 > 3.0 and k4 > k2  # fp32 -> 4 bits (plus scales and the exact window)
    answers = [r["answers"][0] for r in read_jsonl(tmp_path / "rows.jsonl")]
    assert [r["prediction"].strip() for r in results["kivi4"]] == answers


def test_cache_has_one_layer_per_decoder_layer():
    from transformers import LlamaConfig

    cache = KIVICache(LlamaConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=2), bits=2)
    assert len(cache.layers) == 3 and all(layer.bits == 2 for layer in cache.layers)
    with pytest.raises(ValueError, match="multiple of group_size"):
        KIVILayer(group_size=32, residual_length=48)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-1, -2) / k.shape[-1] ** 0.5, dim=-1) @ v


@pytest.mark.parametrize("bits", [4, 2])
def test_decode_attention_equals_attention_on_states_quantized_by_the_papers_equations(bits):
    """A decode step attends to what the cache returns; that equals attention on the exact states with the
    old keys (whole blocks of 64 tokens, per-channel groups of 32 tokens) and old values (every token
    beyond the newest 65: the step's own and the window of 64 it attends before quantizing, per-token
    groups of 32 channels) quantized by `reference_quantize`."""
    g = torch.Generator().manual_seed(bits)
    layer = KIVILayer(bits=bits, group_size=32, residual_length=64)
    k, v = torch.randn(1, 2, 150, 32, generator=g), torch.randn(1, 2, 150, 32, generator=g)
    layer.update(k, v)
    for _ in range(40):
        k1, v1 = torch.randn(1, 2, 1, 32, generator=g), torch.randn(1, 2, 1, 32, generator=g)
        k, v = torch.cat([k, k1], -2), torch.cat([v, v1], -2)
        out_k, out_v = layer.update(k1, v1)
    old_k, old_v = 190 // 64 * 64, 190 - 65
    ref_k = torch.cat([reference_quantize(k[..., :old_k, :], bits, 32, -2).float(), k[..., old_k:, :]], -2)
    ref_v = torch.cat([reference_quantize(v[..., :old_v, :], bits, 32, -1).float(), v[..., old_v:, :]], -2)
    q = torch.randn(1, 2, 1, 32, generator=g)
    got = attention(q, out_k, out_v)
    torch.testing.assert_close(got, attention(q, ref_k, ref_v), atol=1e-5, rtol=1e-5)
    error = (got - attention(q, k, v)).abs().max().item()
    assert 0 < error < {4: 0.05, 2: 0.3}[bits]  # measured 0.029 and 0.133 on these states


def test_cache_bytes_grow_at_the_quantized_rate():
    """After the exact window fills, each further block of 64 tokens adds its packed codes and scales only:
    at 4 bits with fp32 states and groups of 32, 1/8 of the full size plus 2 fp32 numbers per group."""
    from transformers import LlamaConfig

    from lcopt.inference import cache_bytes

    cache = KIVICache(LlamaConfig(num_hidden_layers=1, hidden_size=64, num_attention_heads=2))
    layer = cache.layers[0]
    layer.residual_length = 64
    layer.update(torch.randn(1, 2, 128, 32), torch.randn(1, 2, 128, 32))
    before = cache_bytes(cache)
    for _ in range(640):
        layer.update(torch.randn(1, 2, 1, 32), torch.randn(1, 2, 1, 32))
    grown = cache_bytes(cache) - before
    full = 2 * 640 * 2 * 32 * 4  # keys and values, 640 tokens, 2 heads, 32 channels, fp32
    scales = 2 * 640 * 2 * 32 // 32 * 2 * 4  # one (scale, min) pair of fp32 per group of 32
    assert grown == full // 8 + scales


@pytest.mark.parametrize(("axis", "bits"), [(-2, 4), (-1, 4), (-2, 2), (-1, 2)])
def test_blocks_appended_along_tokens_equal_one_block_quantized_at_once(axis, bits):
    """Keys (groups along tokens) and values (groups along channels) in whole groups: appending blocks
    is exact, so the cache can hold one block however many decode steps appended to it."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 256, 64)
    cuts = [0, 64, 128, 160, 256] if axis == -1 else [0, 128, 160, 256]  # 160: a boundary of 32-token groups
    merged = None
    for a, b in pairwise(cuts):
        merged = concat(merged, quantize(x[..., a:b, :], bits, 32, axis), dim=-2)
    whole = quantize(x, bits, 32, axis)
    assert merged.shape == whole.shape == tuple(x.shape)
    for name in ("codes", "minimum", "scale"):
        assert torch.equal(getattr(merged, name), getattr(whole, name)), name
    assert torch.equal(dequantize(merged), dequantize(whole))


def official_windows(prefill: int, steps: int, residual_length: int):
    """A hand transcription of the cache bookkeeping of `LlamaAttention_KIVI.forward` (jy-yuan/KIVI,
    models/llama_kivi.py): per decode step, the positions whose keys and values that step's attention
    reads in full precision (`key_states_full` and `value_states_full` with the new token appended)."""
    n, R = prefill, residual_length
    # prefill: keys [0, n - n % R) quantized (all if n % R == 0), values [0, n - R) if n > R
    if n % R != 0:
        key_quant, key_full = (0, n) if n < R else (n - n % R, n % R)
    else:
        key_quant, key_full = n, 0
    value_quant, value_full = (0, n) if n <= R else (n - R, R)
    for _ in range(steps):
        key_full += 1  # torch.cat([key_states_full, key_states]) (or key_states alone)
        value_full += 1  # torch.cat([value_states_full, value_states])
        yield range(key_quant, key_quant + key_full), range(value_quant, value_quant + value_full)
        if key_full == R:  # after attending: the full window becomes one quantized block
            key_quant, key_full = key_quant + R, 0
        if value_full > R:  # after attending: the oldest value leaves the window
            value_quant, value_full = value_quant + 1, value_full - 1


def exact_positions(read: torch.Tensor, states: torch.Tensor) -> list[int]:
    """Positions whose whole row (every head and channel) `read` [H, n, D] returns exactly as `states`."""
    n = read.shape[-2]
    return torch.nonzero((read == states[..., :n, :]).all(dim=-1).all(dim=0)).flatten().tolist()


@pytest.mark.parametrize("residual_length", [128, 32])
@pytest.mark.parametrize("prefill", [100, 128, 300])
def test_reference_cache_reads_exact_what_the_official_code_reads(prefill, residual_length):
    """Every decode step through one key flush or more: the exact keys and values are the official ones."""
    R, steps = residual_length, residual_length + 40
    g = torch.Generator().manual_seed(prefill + R)
    k, v = torch.randn(2, prefill + steps, 16, generator=g), torch.randn(2, prefill + steps, 16, generator=g)
    layer = KIVILayer(bits=2, group_size=16, residual_length=R)
    layer.update(k[None, :, :prefill], v[None, :, :prefill])
    for step, (exact_keys, exact_values) in enumerate(official_windows(prefill, steps, R)):
        n = prefill + step + 1
        out_k, out_v = layer.update(k[None, :, n - 1 : n], v[None, :, n - 1 : n])
        assert exact_positions(out_k[0], k) == list(exact_keys), n
        assert exact_positions(out_v[0], v) == list(exact_values), n
