"""The fast engine's caches hold what the reference caches hold, and the fused kernels compute what torch does."""

import pytest
import torch

from lcopt import decode_attention, static_cache
from lcopt.techniques.fp8kv import FP8StaticCache
from lcopt.techniques.kivi.reference import KIVILayer
from lcopt.techniques.kivi.static import KIVIStaticCache

needs_triton = pytest.mark.skipif(decode_attention.triton is None, reason="triton is not installed")

H, D, Q = 2, 32, 6  # KV heads, head dim, query heads (GQA groups of 3)


def geometry(max_len, dtype=torch.float32, fused=False):
    return {"layers": 2, "kv_heads": H, "head_dim": D, "max_len": max_len, "q_heads": Q, "device": "cpu",
            "dtype": dtype, "fused": fused}  # fmt: skip


def states(n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(H, n, D, generator=g) * 2).to(dtype), torch.randn(H, n, D, generator=g).to(dtype)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prompt", [100, 128, 300])
def test_kivi_cache_holds_exactly_what_the_reference_cache_reads(bits, dtype, prompt):
    """Same quantization points (whole blocks of keys, values as they leave the window), same codes and
    scales: the dequantized states equal the reference `KIVICache`'s bit for bit at every step."""
    keys, values = states(prompt + 200, dtype, seed=bits)
    ref = KIVILayer(bits, group_size=32, residual_length=128)
    ref.update(keys[None, :, :prompt], values[None, :, :prompt])
    cache = KIVIStaticCache(**geometry(prompt + 200, dtype), bits=bits, group_size=32, residual_length=128)
    cache.prefill(1, keys[:, :prompt], values[:, :prompt])
    for pos in range(prompt, prompt + 200):
        ref_k, ref_v = ref.update(keys[None, :, pos : pos + 1], values[None, :, pos : pos + 1])
        cache.append(1, keys[:, pos], values[:, pos], torch.tensor([pos]))
        k, v = cache.read(1, pos + 1)
        assert torch.equal(k, ref_k[0]) and torch.equal(v, ref_v[0]), pos


def test_kivi_cache_is_bounded_and_smaller_than_dense():
    kivi4 = KIVIStaticCache(**geometry(4096, torch.bfloat16), bits=4)
    kivi2 = KIVIStaticCache(**geometry(4096, torch.bfloat16), bits=2)
    dense = static_cache.DenseCache(**geometry(4096, torch.bfloat16))
    # per token, layer and head (D = 32, one group of 32 channels): dense 2 x 32 x 2 bytes = 128; KIVI-4
    # 2 x 32 x 4 bits = 32 bytes of codes + a bf16 scale and minimum for the key group and the value
    # group (8 bytes) = 40; KIVI-2: 16 + 8 = 24
    assert kivi4.bytes_per_token() / dense.bytes_per_token() == pytest.approx(40 / 128)
    assert kivi2.bytes_per_token() / dense.bytes_per_token() == pytest.approx(24 / 128)
    before = kivi4.reserved_bytes
    keys, values = states(4096, torch.bfloat16, 0)
    kivi4.prefill(0, keys[:, :1000], values[:, :1000])
    for pos in range(1000, 1300):
        kivi4.append(0, keys[:, pos], values[:, pos], torch.tensor([pos]))
    assert kivi4.reserved_bytes == before  # preallocated: generating allocates nothing


def test_fp8_cache_rounds_each_state_once_to_e4m3_with_a_per_head_scale():
    keys, values = states(300, torch.float32, 3)
    cache = FP8StaticCache(**geometry(300))
    cache.prefill(0, keys[:, :200], values[:, :200])
    for pos in range(200, 300):
        cache.append(0, keys[:, pos], values[:, pos], torch.tensor([pos]))
    k, v = cache.read(0, 300)
    for got, x in ((k, keys), (v, values)):
        scale = x[:, :200].abs().amax(dim=(-2, -1)) / 448  # the prefill's maximum maps to e4m3's largest value
        expected = (x / scale[:, None, None]).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale[:, None, None]
        assert torch.equal(got, expected)
        # in e4m3's normal range (smallest normal 2^-6) and below saturation (tokens after the prefill may
        # exceed its maximum: they are clipped), rounding to 3 mantissa bits errs by at most 2^-4 relative
        scaled = x.abs() / scale[:, None, None]
        normal = (scaled >= 2**-6) & (scaled <= 448)
        assert ((got - x).abs() <= x.abs() * 2**-4 * (1 + 1e-6))[normal].all()
        assert (scaled > 448).any()  # the saturation case is exercised


def make(kind, max_len, fused, head_dim=D):
    g = geometry(max_len, fused=fused) | {"head_dim": head_dim}
    if kind == "dense":
        return static_cache.DenseCache(**g)
    if kind == "fp8":
        return FP8StaticCache(**g)
    return KIVIStaticCache(**g, bits=int(kind[-1]), group_size=32, residual_length=64)


@needs_triton
@pytest.mark.parametrize("kind", ["dense", "fp8", "kivi4", "kivi2"])
def test_fused_kernels_equal_the_torch_path(kind):
    """The Triton append and decode attention (Triton's interpreter on a CPU) against the torch path, at
    a head size of 128 (KIVI's fused kernel needs planes of >= 16 channels and whole value groups)."""
    g = torch.Generator().manual_seed(5)
    keys, values = torch.randn(H, 512, 128, generator=g) * 2, torch.randn(H, 512, 128, generator=g)
    torch_cache, fused_cache = make(kind, 512, False, 128), make(kind, 512, True, 128)
    assert fused_cache.fused and not torch_cache.fused
    for cache in (torch_cache, fused_cache):
        cache.prefill(0, keys[:, :150], values[:, :150])
    q = torch.randn(Q, 128)
    for pos in range(150, 280):
        torch_cache.append(0, keys[:, pos], values[:, pos], torch.tensor([pos]))
        fused_cache.append(0, keys[:, pos], values[:, pos], torch.tensor([pos]))
        if pos % 43 == 0 or pos == 279:
            length = torch.tensor([pos + 1], dtype=torch.int32)
            for a, b in zip(torch_cache.read(0, pos + 1), fused_cache.read(0, pos + 1), strict=True):
                assert torch.equal(a, b), pos
            expected = torch_cache.attend(0, q, length)
            got = fused_cache.attend(0, q, length)
            assert (got - expected).norm() / expected.norm() < 1e-5, pos
