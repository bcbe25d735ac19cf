"""The fast engine's caches hold what the reference caches hold, and the fused kernels compute what torch does."""

import pytest
import torch
from test_kivi import exact_positions, official_windows

from lcopt import decode_attention, static_cache
from lcopt.techniques.fp8kv import FP8StaticCache
from lcopt.techniques.kivi.kernels import Launch
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


@pytest.mark.parametrize("residual_length", [128, 32])
@pytest.mark.parametrize("prefill", [100, 128, 300])
def test_kivi_cache_reads_exact_what_the_official_code_reads(prefill, residual_length):
    """Each layer by its own cache index: layer 0 after a prefill of `prefill`, layer 1 after a shorter one
    (a compacted prefill), then appends; at every step the attention reads the official exact windows."""
    R, steps = residual_length, residual_length + 40
    keys, values = states(prefill + steps, torch.float32, seed=prefill + R)
    cache = KIVIStaticCache(**geometry(prefill + steps), bits=2, group_size=16, residual_length=R)
    prefills = [prefill, max(prefill - 37, 1)]
    windows = [official_windows(n, steps, R) for n in prefills]
    for layer, n in enumerate(prefills):
        cache.prefill(layer, keys[:, :n], values[:, :n])
    for step in range(steps):
        for layer, n in enumerate(prefills):
            index = n + step
            cache.append(layer, keys[:, index], values[:, index], torch.tensor([index]))
            k, v = cache.read(layer, index + 1)
            exact_keys, exact_values = next(windows[layer])
            assert exact_positions(k, keys) == list(exact_keys), (layer, index)
            assert exact_positions(v, values) == list(exact_values), (layer, index)


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
    a head size of 128, two layers at different cache indices (prefills of 150 and 113 tokens)."""
    g = torch.Generator().manual_seed(5)
    keys, values = torch.randn(H, 512, 128, generator=g) * 2, torch.randn(H, 512, 128, generator=g)
    torch_cache, fused_cache = make(kind, 512, False, 128), make(kind, 512, True, 128)
    assert fused_cache.fused and not torch_cache.fused
    prefills = (150, 113)
    for cache in (torch_cache, fused_cache):
        for layer, n in enumerate(prefills):
            cache.prefill(layer, keys[:, :n], values[:, :n])
    q = torch.randn(Q, 128)
    for step in range(100):
        for layer, n in enumerate(prefills):
            index = torch.tensor([n + step])
            torch_cache.append(layer, keys[:, n + step], values[:, n + step], index)
            fused_cache.append(layer, keys[:, n + step], values[:, n + step], index)
            length = n + step + 1
            if step % 43 == 0 or step == 99:
                for a, b in zip(torch_cache.read(layer, length), fused_cache.read(layer, length), strict=True):
                    assert torch.equal(a, b), (layer, length)
                expected = torch_cache.attend(layer, q, torch.tensor([length], dtype=torch.int32))
                got = fused_cache.attend(layer, q, torch.tensor([length], dtype=torch.int32))
                assert (got - expected).norm() / expected.norm() < 1e-5, (layer, length)


def kivi_kernel_error(head_dim, bits, group, length, residual_length, dtype, launch) -> float:
    """The decode kernel (its interpreter path: plain shifts instead of inline PTX, the same math) against
    `attend_reference` over the float32 values its codes stand for: relative L2 error."""
    g = torch.Generator().manual_seed(length)
    kw = {"layers": 1, "kv_heads": 2, "head_dim": head_dim, "max_len": length + 8, "q_heads": 2 * group,
          "device": "cpu", "dtype": dtype}  # fmt: skip
    cache = KIVIStaticCache(**kw, fused=True, bits=bits, group_size=32, residual_length=residual_length, launch=launch)
    assert cache.fused and (cache.attention.nsplit > 1 or length < 64)
    keys = (torch.randn(2, length, head_dim, generator=g) * 2).to(dtype)
    cache.prefill(0, keys, torch.randn(2, length, head_dim, generator=g).to(dtype))
    q = torch.randn(2 * group, head_dim, generator=g).to(dtype)
    got = cache.attend(0, q, torch.tensor([length], dtype=torch.int32)).float()
    exact = decode_attention.attend_reference(q.float(), *cache.read(0, length, torch.float32))
    return ((got - exact).norm() / exact.norm()).item()


@needs_triton
@pytest.mark.parametrize(
    ("head_dim", "bits", "group", "length", "residual_length", "streams"),
    [
        (128, 4, 4, 300, 64, 4),  # Llama-3's GQA groups: fast tiles, then the windows
        (128, 2, 4, 257, 128, 4),  # one past two key blocks: R exact keys, R + 1 exact values
        (64, 4, 1, 200, 32, 4),  # multi-head attention (SmolLM2-like head size)
        (64, 2, 3, 170, 32, 2),  # SmolLM2's groups of 3 query heads, chunks of 16 channels
        (128, 4, 8, 129, 128, 4),  # groups of 8
        (64, 4, 4, 33, 32, 2),  # two streams; the value window just past R
        (128, 2, 4, 1, 128, 4),  # a single token
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kivi_attention_equals_attention_on_the_dequantized_cache(
    head_dim, bits, group, length, residual_length, streams, dtype
):
    """The engine's kernel (v2). float32 models multiply in float32 (measured errors 5e-7 to 9e-7); a bf16
    model's kernel dequantizes and multiplies in bf16 on a GPU, in float32 in Triton's interpreter (which
    gets bf16 arithmetic wrong), with a bf16 output (3e-3; the torch path's own bf16 dequantization errs
    3e-3 to 6e-3)."""
    error = kivi_kernel_error(head_dim, bits, group, length, residual_length, dtype,
                              Launch(streams=streams, programs=8))  # fmt: skip
    assert error < (2e-6 if dtype == torch.float32 else 6e-3), error
