"""On a CUDA GPU only (`pytest -m device`; CI has none): the fast engine with CUDA graphs and the fused
Triton kernels against the torch path and against `transformers`' own `generate`.

Run on the device with: `LCOPT_SHARED_ASSETS=<assets> python -m pytest -m device tests/test_device.py`;
the last run's output is committed under docs/benchmarks/ (see its README)."""

import dataclasses
import json
import math

import pytest
import torch

from lcopt import decode_attention, static_cache
from lcopt.engine import FastEngine, static_cache_factory
from lcopt.inference import ReferenceRunner
from lcopt.techniques.fp8kv import FP8StaticCache
from lcopt.techniques.kivi.kernels import LAUNCHES
from lcopt.techniques.kivi.static import KIVIStaticCache

pytestmark = [
    pytest.mark.device,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with -m device on the device)"),
]

NEW_TOKENS = 64


def states(n, heads, dim, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    keys = torch.randn(heads, n, dim, generator=g, device="cuda") * 2
    return keys.bfloat16(), torch.randn(heads, n, dim, generator=g, device="cuda").bfloat16()


@pytest.mark.parametrize("kind", ["dense", "fp8", "kivi4", "kivi2", "kivi4:shift", "kivi2:shift"])
def test_fused_kernels_equal_the_torch_path_on_the_gpu(kind):
    """Llama-3.1-8B's attention shape (8 KV heads of 128, 32 query heads), bf16, 5,000 tokens. KIVI's decode
    kernel unpacks codes with inline PTX (`kivi4`, `kivi2`) or with plain Triton ops (`:shift`, the path
    Triton's interpreter tests on a CPU): both against the torch path."""
    kw = {"layers": 1, "kv_heads": 8, "head_dim": 128, "max_len": 6000, "q_heads": 32, "device": "cuda",
          "dtype": torch.bfloat16}  # fmt: skip
    make = {"dense": static_cache.DenseCache, "fp8": FP8StaticCache}.get(kind)
    bits = int(kind[4]) if kind.startswith("kivi") else 4
    launch = dataclasses.replace(LAUNCHES[bits], asm=not kind.endswith(":shift"))  # the engine's launch
    caches = [
        make(**kw, fused=f) if make else KIVIStaticCache(**kw, fused=f, bits=bits, launch=launch) for f in (False, True)
    ]
    keys, values = states(5000, 8, 128, seed=1)
    for c in caches:
        c.prefill(0, keys[:, :4700], values[:, :4700])
    q = torch.randn(32, 128, device="cuda").bfloat16()
    for pos in range(4700, 5000):
        for c in caches:
            c.append(0, keys[:, pos], values[:, pos], torch.tensor([pos], device="cuda"))
    for a, b in zip(caches[0].read(0, 5000), caches[1].read(0, 5000), strict=True):
        assert torch.equal(a, b)
    length = torch.tensor([5000], dtype=torch.int32, device="cuda")
    expected, got = caches[0].attend(0, q, length).float(), caches[1].attend(0, q, length).float()
    if not kind.startswith("kivi"):
        assert (got - expected).norm() / expected.norm() < 1e-2  # both bf16 outputs of float32 softmaxes
        return
    # KIVI: the torch path dequantizes in bf16 (two roundings, as the reference cache), the kernel in fp16
    # and float32: measure both against the float32 attention over the values the codes stand for
    exact = decode_attention.attend_reference(q.float(), *caches[0].read(0, 5000, torch.float32)).float()
    fused_err = ((got - exact).norm() / exact.norm()).item()
    torch_err = ((expected - exact).norm() / exact.norm()).item()
    print(f"{kind}: relative error vs float32, fused {fused_err:.2e}, torch path {torch_err:.2e}")
    assert fused_err <= max(1.5 * torch_err, 2e-3)


@pytest.mark.parametrize("prefill", [100, 128, 300])
def test_fused_kivi_cache_reads_the_official_windows_on_the_gpu(prefill):
    """KIVI's official order with the fused append kernel: after each append the exact keys and values are
    those the official implementation reads exact (`test_kivi.official_windows`), and the decode kernel
    equals attention over what the cache holds."""
    from test_kivi import exact_positions, official_windows

    R, steps = 128, 168
    kw = {"layers": 1, "kv_heads": 8, "head_dim": 128, "max_len": prefill + steps, "q_heads": 32, "device": "cuda",
          "dtype": torch.bfloat16}  # fmt: skip
    cache = KIVIStaticCache(**kw, fused=True, bits=4, residual_length=R)
    keys, values = states(prefill + steps, 8, 128, seed=prefill)
    cache.prefill(0, keys[:, :prefill], values[:, :prefill])
    q = torch.randn(32, 128, device="cuda").bfloat16()
    for step, (exact_keys, exact_values) in enumerate(official_windows(prefill, steps, R)):
        index = prefill + step
        cache.append(0, keys[:, index], values[:, index], torch.tensor([index], device="cuda"))
        k, v = cache.read(0, index + 1)
        assert exact_positions(k, keys) == list(exact_keys), index
        assert exact_positions(v, values) == list(exact_values), index
        if step % 50 == 0:
            length = torch.tensor([index + 1], dtype=torch.int32, device="cuda")
            exact = decode_attention.attend_reference(q.float(), *cache.read(0, index + 1, torch.float32))
            got = cache.attend(0, q, length).float()
            assert (got - exact).norm() / exact.norm() < 6e-3, index


def random_model(shared_assets, folder, dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(shared_assets / "models" / folder)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = None
    return model.eval()


def first_divergence(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


@pytest.mark.parametrize("kv", ["none", "kivi4", "kivi2"])
def test_random_8b_tokens_equal_generate_in_float32(shared_assets, kv):
    """Same weights, same cache method: the engine's greedy tokens (graphs, fused kernels) equal
    `generate`'s. In float32, where rounding cannot decide a near tie between two logits."""
    model = random_model(shared_assets, "meta-llama--Llama-3.1-8B-Instruct", torch.float32)
    ids = torch.randint(0, 128000, (1500,), generator=torch.Generator().manual_seed(2)).tolist()
    reference = ReferenceRunner(model, kv, {}, "cuda").generate(ids, NEW_TOKENS, pad_token_id=0)
    engine = FastEngine(model, static_cache_factory(kv, model, {}))
    fast = engine.generate(ids, NEW_TOKENS, stop=set())
    assert engine.graph is not None and engine.cache.fused
    print(f"float32 {kv}: first divergence {first_divergence(fast, reference)} of {NEW_TOKENS}")
    assert fast == reference


def test_random_8b_bf16_differs_from_generate_only_at_near_ties(shared_assets):
    """In bf16 the engine's attention sums in another order than SDPA's; the tokens agree until two
    logits are within bf16 rounding of each other. Reported: how many tokens agree, and the top-2 gap."""
    model = random_model(shared_assets, "meta-llama--Llama-3.1-8B-Instruct", torch.bfloat16)
    ids = torch.randint(0, 128000, (1500,), generator=torch.Generator().manual_seed(2)).tolist()
    x = torch.tensor([ids], device="cuda")
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS, do_sample=False,
                             output_scores=True, return_dict_in_generate=True, pad_token_id=0)  # fmt: skip
    reference = out.sequences[0, len(ids) :].tolist()
    fast = FastEngine(model, static_cache_factory("none", model, {})).generate(ids, NEW_TOKENS, stop=set())
    i = first_divergence(fast, reference)
    print(f"bf16: tokens agree for {NEW_TOKENS if i is None else i} of {NEW_TOKENS}")
    if i is not None:
        top2 = out.scores[i][0].float().topk(2).values
        gap = (top2[0] - top2[1]).item()
        print(f"bf16: at token {i} generate's top-2 logit gap is {gap:.4f}")
        assert gap < 0.05  # a tie at bf16's resolution of these logits (|logit| ~ 1-5: ulp 2^-7..2^-5)


def random_int4(out_features: int, width: int, group_size: int, seed: int = 0):
    """A 4-bit layer of random codes on the GPU, and the (codes, scales, zeros) it was built from."""
    from lcopt.int4 import TinyGemmLinear

    g = torch.Generator(device="cuda").manual_seed(seed)
    groups = width // group_size
    codes = torch.randint(0, 16, (out_features, width), dtype=torch.uint8, device="cuda", generator=g)
    scales = torch.rand(groups, out_features, device="cuda", generator=g) * 0.02
    zeros = torch.randint(0, 16, (groups, out_features), device="cuda", generator=g).float()
    return TinyGemmLinear.from_codes(codes, scales, zeros, group_size), codes, scales, zeros


@pytest.mark.parametrize(("width", "group_size"), [(4096, 128), (576, 64)])  # the 8B's; SmolLM2's (shallower tiles)
def test_tinygemm_int4_on_the_gpu_equals_dequantized_weights(width, group_size):
    layer, codes, scales, zeros = random_int4(4096, width, group_size)
    group = torch.arange(width, device="cuda") // group_size
    weight = (scales[group].t() * (codes.float() - zeros[group].t())).bfloat16()
    for rows in (3, 40):  # decode (the int4 kernel) and prefill (dequantized from the packed codes for cuBLAS)
        x = torch.randn(rows, width, device="cuda").bfloat16()
        expected = x.float() @ weight.float().t()
        err = (layer(x).float() - expected).norm() / expected.norm()
        assert err < 1e-2, (rows, err)


@pytest.mark.parametrize(
    ("out_features", "width", "group_size"), [(4096, 4096, 128), (4096, 14336, 128), (192, 576, 64)]
)
def test_the_prefill_dequantizes_the_one_packed_copy_the_kernel_reads(out_features, width, group_size):
    """The GPU holds the codes once, in tinygemm's layout: lcopt's reading of that layout gives back the codes,
    the prefill's Triton dequantization equals what the kernel itself multiplies by (read out as torchao's
    `get_plain` does, through the kernel on an identity matrix) bit for bit, and differs from the old plain
    copy's dequantization (two bf16 roundings) by its first rounding at most."""
    from lcopt.int4 import tinygemm_codes

    layer, codes, _, _ = random_int4(out_features, width, group_size, seed=1)
    assert [name for name, t in layer.named_buffers() if t is not None] == ["packed", "scales_and_zeros"]
    assert layer.weight_bytes() == out_features * width // 2 + out_features * width // group_size * 4
    assert torch.equal(tinygemm_codes(layer.packed), codes)
    eye = torch.eye(width, dtype=torch.bfloat16, device="cuda")
    kernel = torch.ops.aten._weight_int4pack_mm(eye, layer.packed, group_size, layer.scales_and_zeros).t()
    mine = layer.dequantize()
    assert mine.dtype == torch.bfloat16 and torch.equal(mine, kernel)
    # the old prefill: a plain copy of the codes dequantized in bf16 ops (the product rounded, then the sum)
    n, k = codes.shape
    scales, offsets = (t[..., None] for t in layer.scales_and_zeros.permute(2, 1, 0))  # [out, groups, 1] each
    old = ((codes.view(n, k // group_size, group_size).bfloat16() - 8) * scales + offsets).view(n, k)
    bound = (scales.float().abs() * 2**-4).expand(n, k // group_size, group_size).reshape(n, k)
    step = 2.0 ** (torch.floor(torch.log2(mine.float().abs().clamp_min(2**-126))) - 7)
    assert ((mine.float() - old.float()).abs() <= bound + step).all()
    # a prefill (40 rows) multiplies by exactly that matrix; against the old copy's, outputs differ by the sum
    # of its roundings (elementwise near-zero outputs differ relatively by far more: run 8 on an H100 saw 720x)
    x = torch.randn(40, width, device="cuda").bfloat16()
    assert torch.equal(layer(x), torch.nn.functional.linear(x, mine))
    expected = torch.nn.functional.linear(x, old).float()
    assert (layer(x).float() - expected).norm() / expected.norm() < 1e-2


def test_fused_4bit_projections_on_the_gpu_equal_their_members():
    """The 8B's Q, K and V as one tinygemm launch: the decode output is the three outputs side by side, bit
    for bit (every 8 output rows are computed alike), and the members, now views, still compute theirs."""
    from lcopt.engine import Projections

    layers = [random_int4(n, 4096, 128, seed=n)[0] for n in (4096, 1024, 1024)]
    x1, x40 = torch.randn(1, 4096, device="cuda").bfloat16(), torch.randn(40, 4096, device="cuda").bfloat16()
    before1, before40 = [m(x1) for m in layers], [m(x40) for m in layers]
    allocated = torch.cuda.memory_allocated()
    projections = Projections(layers, fuse=True)
    assert projections.layer is not None
    assert torch.cuda.memory_allocated() <= allocated  # the members' buffers are views of the fused layer's
    assert torch.equal(projections(x1), torch.cat(before1, dim=-1))
    torch.testing.assert_close(projections(x40), torch.cat(before40, dim=-1), rtol=1e-2, atol=1e-2)
    for m, out in zip(layers, before1, strict=True):
        assert torch.equal(m(x1), out)


def test_torchao_int4_decodes_in_the_benchmarks_compiled_loop(shared_assets):
    """The benchmark's torchao peer (`torchao4:hf-compiled`) runs: torchao's int4 weight-only config in
    tinygemm's layout, the decode step compiled whole over transformers' static cache. Its first token (the
    eager prefill) is `generate`'s on the same quantized weights; the agreement after it is printed."""
    pytest.importorskip("torchao")
    from transformers import AutoConfig, AutoModelForCausalLM

    from lcopt.decode_benchmark import run_hf_compiled, to_torchao_int4
    from lcopt.probe import TokenClock

    config = AutoConfig.from_pretrained(shared_assets / "models" / "meta-llama--Llama-3.1-8B-Instruct")
    config.num_hidden_layers, config._attn_implementation = 2, "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    model.generation_config.eos_token_id = None
    to_torchao_int4(model)
    assert type(model.model.layers[0].mlp.down_proj.weight).__name__ == "Int4TilePackedTo4dTensor"
    ids = torch.randint(0, 128000, (600,), generator=torch.Generator().manual_seed(4)).tolist()
    go = run_hf_compiled(model, "none", ids, 16, {"compile_mode": "reduce-overhead"})
    clock = TokenClock("cuda")
    tokens = go(clock)
    assert len(tokens) == 16 and len(clock.stamps) == 16
    x = torch.tensor([ids], device="cuda")
    with torch.inference_mode():
        reference = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False,
                                   pad_token_id=0)[0, len(ids) :].tolist()  # fmt: skip
    i = first_divergence(tokens, reference)
    print(f"torchao int4, compiled loop vs generate: tokens agree for {16 if i is None else i} of 16")
    assert tokens[0] == reference[0]


def multi_news_ids(tokenizer, shared_assets, tokens: int) -> list[int]:
    """The first official multi_news row as lcopt prompts it (chat template, middle-truncated)."""
    from lcopt.prompts import build_prompt
    from lcopt.tasks import get_task

    path = shared_assets / "longbench" / "multi_news.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with path.open() as f:
        row = json.loads(f.readline())
    prompt = build_prompt(tokenizer, get_task("multi_news"), row, tokens)
    return tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kv", ["none", "kivi4", "kivi2"])
def test_smollm2_tokens_equal_generate_on_the_gpu(smollm2_dir, shared_assets, kv, dtype):
    """SmolLM2-135M-Instruct's real weights on a real news prompt of ~2,000 tokens: the engine's 64 greedy
    tokens (CUDA graphs, fused Triton kernels at head_dim 64) against `generate` with lcopt's reference
    cache of the same method. Equal in float32; in bf16 equal up to a near tie (reported)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    model = model.to("cuda").eval()
    model.generation_config.eos_token_id = None  # compare 64 tokens, not where each stops
    ids = multi_news_ids(tokenizer, shared_assets, 2000)
    assert len(ids) > 1000
    reference = ReferenceRunner(model, kv, {}, "cuda").generate(ids, NEW_TOKENS, pad_token_id=0)
    engine = FastEngine(model, static_cache_factory(kv, model, {}))
    fast = engine.generate(ids, NEW_TOKENS, stop=set())
    assert engine.graph is not None and engine.cache.fused
    i = first_divergence(fast, reference)
    print(f"smollm2 {dtype} {kv}: tokens agree for {NEW_TOKENS if i is None else i} of {NEW_TOKENS}")
    if dtype == "float32" or i is None:
        assert fast == reference
        return
    # the reference path's own logits at the first difference: `generate` with the same cache method (run 9
    # measured the gap on a plain forward, i.e. the bf16 cache's logits, which for kivi2 are another model's)
    from lcopt.inference import make_cache

    x = torch.tensor([ids], device="cuda")
    with torch.inference_mode():
        out = model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=i + 1, do_sample=False, pad_token_id=0,
            past_key_values=make_cache(kv, model.config), output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
    assert out.sequences[0, len(ids) :].tolist() == reference[: i + 1]
    top2 = out.scores[i][0].float().topk(2).values
    top1, gap = top2[0].item(), (top2[0] - top2[1]).item()
    ulp = 2.0 ** (math.floor(math.log2(abs(top1))) - 7)  # bf16's spacing at this logit (8 significant bits)
    print(f"smollm2 bf16 {kv}: at token {i} the reference's top-2 logits are {top1:.4f}, gap {gap:.4f}, ulp {ulp}")
    assert gap <= ulp  # adjacent bf16 values: a tie at bf16's resolution


# -- KV-cache eviction (issue 23) ---------------------------------------------------------------------

EVICTION = ["snapkv", "streamingllm", "pyramidkv", "snapkv+kivi4", "streamingllm+kivi4", "pyramidkv+kivi4"]


def evicting(kv: str) -> dict:
    """A quarter of the prompt per layer (pyramidkv: on average), the methods' other defaults."""
    return {kv.split("+")[0]: {"budget": 0.25}}


def eviction_check(model, ids: list[int], kv: str, label: str) -> None:
    """The engine (graphs, fused kernels, caches sized to the kept tokens) against `generate` with the
    reference eviction cache: the same 64 greedy tokens, the same kept counts, memory sized to them."""
    runner = ReferenceRunner(model, kv, evicting(kv), "cuda")
    reference = runner.generate(ids, NEW_TOKENS, pad_token_id=0)
    engine = FastEngine(model, static_cache_factory(kv, model, evicting(kv)))
    fast = engine.generate(ids, NEW_TOKENS, stop=set())
    assert engine.graph is not None and engine.cache.fused
    i = first_divergence(fast, reference)
    print(f"{label} {kv}: kept {engine.kept[0]}..{engine.kept[-1]} of {len(ids)}, tokens agree for "
          f"{NEW_TOKENS if i is None else i} of {NEW_TOKENS}")  # fmt: skip
    assert engine.kept == runner.cache.kept_tokens()
    # each layer's cache holds its budget and the answer only (in the format's whole blocks)
    assert engine.capacities == [engine.make_cache(k + NEW_TOKENS, 1).max_len for k in engine.kept]
    assert min(engine.capacities) < len(ids)
    assert fast == reference


@pytest.fixture(scope="module")
def random_8b_float32():
    from conftest import shared_assets_dir

    if not shared_assets_dir().is_dir():
        pytest.skip("shared assets not found (set LCOPT_SHARED_ASSETS)")
    model = random_model(shared_assets_dir(), "meta-llama--Llama-3.1-8B-Instruct", torch.float32)
    yield model
    del model
    torch.cuda.empty_cache()


@pytest.mark.parametrize("kv", EVICTION)
def test_random_8b_eviction_tokens_equal_generate_in_float32(random_8b_float32, kv):
    ids = torch.randint(0, 128000, (1500,), generator=torch.Generator().manual_seed(2)).tolist()
    eviction_check(random_8b_float32, ids, kv, "random 8B float32")


@pytest.fixture(scope="module")
def smollm2_float32(smollm2_dir):
    from conftest import shared_assets_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32, attn_implementation="sdpa")
    model = model.to("cuda").eval()
    model.generation_config.eos_token_id = None
    ids = multi_news_ids(AutoTokenizer.from_pretrained(smollm2_dir), shared_assets_dir(), 2000)
    return model, ids


@pytest.mark.parametrize("kv", EVICTION)
def test_smollm2_eviction_tokens_equal_generate_in_float32(smollm2_float32, kv):
    """SmolLM2-135M-Instruct's real weights on a real ~2,000-token news prompt, a quarter of it kept."""
    model, ids = smollm2_float32
    assert len(ids) > 1000
    eviction_check(model, ids, kv, "smollm2 float32")
