"""KV-cache eviction (snapkv, streamingllm, pyramidkv): the kept positions against hand-written
transcriptions of the papers' scoring on fixed small tensors, the stacking rules, the reference path
(`generate` with `EvictionCache`) end to end, and the fast engine on a CPU against it."""

import itertools
import math

import pytest
import torch

from lcopt.engine import FastEngine, static_cache_factory
from lcopt.inference import ReferenceRunner, cache_bytes, make_cache
from lcopt.models import DEMO_MODEL, resolve_source
from lcopt.stacks import StackError, cache_parts, expand_levels, parse_stack
from lcopt.techniques import default_options, get
from lcopt.techniques._eviction import budget_tokens
from lcopt.techniques.pyramidkv import pyramid_budgets

# -- the definitions, by hand ------------------------------------------------------------------------


def snapkv_by_hand(q, k, budget: int, window: int, kernel: int, pooling: str) -> tuple[list[list[int]], list, float]:
    """SnapKV (arXiv 2404.14469, Listing 1; SnapKVCluster.update_kv) in plain Python, per query head: each
    of the last `window` queries' softmax over the keys it may see (causal), summed over those queries for
    every position before the window, pooled over `kernel` centred neighbours (zero padding counted in
    the average, -inf for the maximum, as torch's pool1d pads), then (lcopt's GQA rule, kvpress's) the
    mean over the query heads of a KV head; the top `budget - window` positions plus the window.
    Also returns the scores per KV head and the smallest gap between a kept and a dropped score."""
    hq, _, d = q.shape
    hkv, n, _ = k.shape
    group, prefix = hq // hkv, n - window
    kept, scores, margin = [], [], math.inf
    for kv in range(hkv):
        per_head = []
        for head in range(kv * group, (kv + 1) * group):
            votes = [0.0] * prefix
            for i in range(window):
                seen = prefix + i + 1
                logits = [
                    sum(q[head, i, c].item() * k[kv, j, c].item() for c in range(d)) / math.sqrt(d) for j in range(seen)
                ]
                top = max(logits)
                weights = [math.exp(x - top) for x in logits]
                total = sum(weights)
                for j in range(prefix):
                    votes[j] += weights[j] / total
            pooled = []
            for j in range(prefix):
                around = [votes[t] if 0 <= t < prefix else None for t in range(j - kernel // 2, j + kernel // 2 + 1)]
                if pooling == "avgpool":
                    pooled.append(sum(v or 0.0 for v in around) / kernel)
                else:
                    pooled.append(max(v for v in around if v is not None))
            per_head.append(pooled)
        score = [sum(h[j] for h in per_head) / group for j in range(prefix)]
        order = sorted(range(prefix), key=lambda j: -score[j])
        chosen = order[: budget - window]
        margin = min(margin, score[order[budget - window - 1]] - score[order[budget - window]])
        kept.append(sorted(chosen) + list(range(prefix, n)))
        scores.append(score)
    return kept, scores, margin


def pyramid_by_hand(n: int, budget: int, window: int, layers: int, beta: int) -> list[int]:
    """KVCache-Factory's PyramidKVCluster.update_kv budget per layer (its integer arithmetic), window
    included, for the cases where its integer step is exact."""
    if n < budget:
        return [n] * layers
    min_num = (budget - window) // beta
    max_num = (budget - window) * 2 - min_num
    if max_num >= n - window:
        max_num = n - window
        min_num = (budget - window) * 2 - max_num
    steps = (max_num - min_num) // (layers - 1)
    if n < (budget - window) * 2:
        return [budget] * layers
    return [max_num - layer * steps + window for layer in range(layers)]


def small_states(seed: int, hq=4, hkv=2, n=40, d=8, window=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(hq, window, d, generator=g) * 2, torch.randn(hkv, n, d, generator=g) * 2


def options(name: str, **given) -> dict:
    return default_options(get(name)) | given


# -- the kept positions against the definitions -------------------------------------------------------


@pytest.mark.parametrize(("budget", "kernel"), [(20, 5), (14, 3), (30, 7)])
def test_snapkv_keeps_what_the_paper_scores_highest(budget, kernel):
    q, k = small_states(seed=budget + kernel)
    expected, _, margin = snapkv_by_hand(q, k, budget, 8, kernel, "avgpool")
    assert margin > 1e-5  # no near tie at the cut: float32 and float64 must agree
    opts = options("snapkv", budget=budget, window=8, kernel=kernel)
    got = get("snapkv").keep(q, k, layer=0, n_layers=1, options=opts)
    assert got.dtype == torch.int64 and got.tolist() == expected


@pytest.mark.parametrize("budget", [14, 20])
def test_snapkv_with_max_pooling_keeps_the_highest_pooled_scores(budget):
    """A maximum over neighbours repeats one score at several positions: ties at the cut are broken
    either way (by SnapKV's code too), so the kept scores are compared, not the positions."""
    q, k = small_states(seed=budget)
    _, scores, _ = snapkv_by_hand(q, k, budget, 8, 5, "maxpool")
    got = get("snapkv").keep(q, k, 0, 1, options("snapkv", budget=budget, window=8, pooling="maxpool"))
    for head, score in enumerate(scores):
        kept = got[head].tolist()
        assert kept[-8:] == list(range(32, 40)) and kept == sorted(kept)
        best = sorted(score, reverse=True)[: budget - 8]
        assert sorted((score[j] for j in kept[:-8]), reverse=True) == pytest.approx(best, abs=1e-6)


def test_snapkv_keeps_all_of_a_short_prompt_and_only_the_window_of_a_small_budget():
    q, k = small_states(seed=1)
    snapkv = get("snapkv")
    assert snapkv.keep(q, k, 0, 1, options("snapkv", budget=40, window=8)).tolist() == [list(range(40))] * 2
    assert snapkv.keep(q, k, 0, 1, options("snapkv", budget=6, window=8)).tolist() == [list(range(34, 40))] * 2
    assert snapkv.keep(None, k, 0, 1, options("snapkv", budget=6, window=8)).shape == (2, 6)  # no scores needed


def test_snapkv_scores_one_group_of_query_heads_per_kv_head():
    """The two KV heads see different keys and queries: their selections differ, one per KV head."""
    q, k = small_states(seed=3)
    got = get("snapkv").keep(q, k, 0, 1, options("snapkv", budget=16, window=8))
    assert got.shape == (2, 16) and got[0].tolist() != got[1].tolist()


def test_streamingllm_keeps_the_sinks_and_the_most_recent_tokens():
    _, k = small_states(seed=0, n=50)
    streaming = get("streamingllm")
    got = streaming.keep(None, k, 0, 1, options("streamingllm", budget=12, sinks=4))
    assert got.tolist() == [[0, 1, 2, 3, *range(42, 50)]] * 2
    assert streaming.keep(None, k, 0, 1, options("streamingllm", budget=0.5, sinks=4)).shape == (2, 25)
    assert streaming.keep(None, k, 0, 1, options("streamingllm", budget=60)).tolist() == [list(range(50))] * 2


@pytest.mark.parametrize(
    ("n", "budget", "window", "layers"),
    [
        (10_000, 2032, 32, 20),  # the arithmetic sequence from 2m - m/beta down to m/beta (m = 2000)
        (800, 432, 32, 5),  # the first layer capped at the n - W positions before the window
        (3500, 2032, 32, 20),  # a prompt shorter than 2m: SnapKV's uniform budget
        (1500, 2032, 32, 20),  # shorter than the budget: kept whole
    ],
)
def test_pyramid_budgets_follow_kvcache_factory(n, budget, window, layers):
    assert pyramid_budgets(n, budget, window, layers, beta=20) == pyramid_by_hand(n, budget, window, layers, beta=20)


def test_pyramid_budgets_average_the_configured_budget_exactly():
    """Where KVCache-Factory's integer step is not exact, lcopt rounds so that the mean is the budget."""
    for n, budget, layers in [(131_072, 2048, 32), (32_768, 8192, 32), (5000, 1000, 30), (700, 175, 4)]:
        got = pyramid_budgets(n, budget, 32, layers, beta=20)
        assert sum(got) == budget * layers, (n, budget)
        assert got == sorted(got, reverse=True) and got[0] <= n and got[-1] >= 32
        m = budget - 32
        steps = [a - b for a, b in itertools.pairwise(got)]
        assert max(steps) - min(steps) <= 1  # an arithmetic sequence up to rounding
        assert abs(got[0] - 32 - (2 * m - m / 20)) <= 1


def test_pyramidkv_selects_like_snapkv_at_each_layers_budget():
    q, k = small_states(seed=5, n=64)
    opts = options("pyramidkv", budget=24, window=8, beta=4)
    budgets = get("pyramidkv").kept_counts(64, 4, opts)
    assert budgets == pyramid_budgets(64, 24, 8, 4, 4) and len(set(budgets)) == 4
    for layer, kept in enumerate(budgets):
        expected, _, margin = snapkv_by_hand(q, k, kept, 8, 5, "avgpool")
        assert margin > 1e-5
        assert get("pyramidkv").keep(q, k, layer, 4, opts).tolist() == expected


def test_budget_is_a_count_or_a_share_of_the_prompt():
    assert budget_tokens(2048, 10_000) == 2048 and budget_tokens(2048, 100) == 100
    assert budget_tokens(0.25, 1001) == 250 and budget_tokens(0.1, 5) == 1


# -- stacking -----------------------------------------------------------------------------------------


def test_one_eviction_method_and_one_representation_compose_eviction_first():
    s = parse_stack("prune+snapkv+kivi4")
    assert s.kv_method == "snapkv+kivi4"
    assert cache_parts(s.kv_method) == {"eviction": "snapkv", "representation": "kivi4"}
    for bad, message in [
        ("kivi4+snapkv", "write 'snapkv\\+kivi4'"),
        ("snapkv+pyramidkv", "at most one KV-cache eviction method"),
        ("snapkv+kivi4+fp8kv", "at most one KV-cache representation"),
    ]:
        with pytest.raises(StackError, match=message):
            parse_stack(bad)
    stacks = expand_levels(["kivi4", "snapkv", "streamingllm", "kivi2"], [1, 2])
    assert set(stacks[4:]) == {"snapkv+kivi4", "snapkv+kivi2", "streamingllm+kivi4", "streamingllm+kivi2"}


# -- the reference path and the fast engine on the demo model -----------------------------------------

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def demo():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lcopt import synthetic
    from lcopt.prompts import build_prompt
    from lcopt.tasks import get_task

    path = resolve_source(DEMO_MODEL)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    model.generation_config.eos_token_id = None
    tokenizer = AutoTokenizer.from_pretrained(path)
    row = next(iter(synthetic.generate("passkey", 300, 1, seed=11)))  # 333 tokens
    prompt = build_prompt(tokenizer, get_task("passkey"), row, 4000)
    return model, tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"]


def evicting(kv: str, budget) -> dict:
    return {kv.split("+")[0]: {"budget": budget}}


def reference(model, ids, kv, opts, new_tokens=NEW_TOKENS):
    runner = ReferenceRunner(model, kv, opts, "cpu")
    tokens = runner.generate(ids, new_tokens, pad_token_id=0)
    return tokens, runner.cache


def test_a_budget_of_the_whole_prompt_changes_nothing(demo):
    """Everything kept: the same tokens as transformers' own cache (positions and masks are right)."""
    model, ids = demo
    plain, _ = reference(model, ids, "none", {})
    assert reference(model, ids, "snapkv", evicting("snapkv", len(ids)))[0] == plain


@pytest.mark.parametrize("kv", ["snapkv", "streamingllm", "pyramidkv", "snapkv+kivi4"])
def test_the_reference_cache_holds_only_the_kept_tokens(demo, kv):
    model, ids = demo
    config = model.config
    budget = 0.5 if "kivi" in kv else 0.25  # KIVI quantizes whole blocks of 128 keys: keep more than one
    _, cache = reference(model, ids, kv, evicting(kv, budget))
    technique = get(kv.split("+")[0])
    budgets = technique.kept_counts(len(ids), config.num_hidden_layers, options(technique.name, budget=budget))
    assert cache.kept_tokens() == budgets and sum(budgets) <= budget * len(ids) * len(budgets)
    assert all(layer.get_seq_length() == len(ids) + NEW_TOKENS - 1 for layer in cache.layers)  # absolute
    assert all(not attn.self_attn._forward_pre_hooks for attn in model.model.layers)  # hooks removed
    stored = [layer.inner.get_seq_length() for layer in cache.layers]
    assert stored == [b + NEW_TOKENS - 1 for b in budgets]
    per_token = 2 * config.num_key_value_heads * config.head_dim * 4  # float32 keys and values of one layer
    if "+" not in kv:
        assert cache_bytes(cache) == per_token * sum(stored)
    else:  # KIVI: codes and scales for what left the exact window
        assert cache_bytes(cache) < 0.7 * per_token * sum(stored)


def test_the_reference_cache_stores_the_keys_the_window_attends_to(demo):
    """Independent of the hook: SnapKV's scores from the model's own (eager) attention probabilities of the
    last window of queries select the positions whose keys the reference cache stored, in every layer."""
    from transformers import DynamicCache

    model, ids = demo
    window, budget = 32, 160
    x = torch.tensor([ids])
    full = DynamicCache(config=model.config)
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            attentions = model(x, past_key_values=full, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    _, cache = reference(model, ids, "snapkv", {"snapkv": {"budget": budget, "window": window}}, new_tokens=1)
    n, group = len(ids), model.config.num_attention_heads // model.config.num_key_value_heads
    for layer, probs in enumerate(attentions):
        votes = probs[0, :, -window:, : n - window].sum(dim=1)  # [Hq, n - W]
        pooled = torch.nn.functional.avg_pool1d(votes[None], 5, padding=2, stride=1)[0]
        scores = pooled.view(-1, group, n - window).mean(dim=1)
        best = scores.topk(budget - window).indices.sort().values
        positions = torch.cat([best, torch.arange(n - window, n).expand(best.shape[0], window)], dim=1)
        keys = full.layers[layer].keys[0]
        expected = keys.gather(1, positions[..., None].expand(-1, -1, keys.shape[-1]))
        assert torch.allclose(cache.layers[layer].inner.keys[0, :, :budget], expected, atol=1e-5), layer


@pytest.mark.parametrize(
    ("kv", "budget"),
    [("snapkv", 0.25), ("streamingllm", 0.25), ("pyramidkv+kivi4", 0.5)],
)
def test_the_engine_on_a_cpu_gives_the_reference_paths_tokens(demo, kv, budget):
    """Both paths call the same selection, but the engine keeps its own slots, lengths and rotary
    positions: the same greedy tokens in float32. pyramidkv's first layer keeps more than KIVI's block
    of 128 keys, so quantized kept tokens are read."""
    model, ids = demo
    opts = evicting(kv, budget)
    expected, cache = reference(model, ids, kv, opts)
    engine = FastEngine(model, static_cache_factory(kv, model, opts), graphs=False, fuse=False)
    assert engine.generate(ids, NEW_TOKENS, stop=set()) == expected
    assert engine.kept == cache.kept_tokens()
    # each layer's cache is sized for what it keeps plus the answer (KIVI rounds up to whole blocks), not the
    # prompt: what a one-layer cache of that format allocates for it
    assert engine.capacities == [engine.make_cache(kept + NEW_TOKENS, 1).max_len for kept in engine.kept]
    assert min(engine.capacities) < len(ids)
    assert engine.bytes_for(len(ids) + NEW_TOKENS - 1) <= engine.cache.reserved_bytes


def test_pyramid_layers_get_caches_of_their_own_size(demo):
    model, ids = demo
    engine = FastEngine(model, static_cache_factory("pyramidkv", model, evicting("pyramidkv", 0.25)), graphs=False)
    engine.reserve(len(ids) + 4, 4)
    budgets = get("pyramidkv").kept_counts(len(ids), 4, options("pyramidkv", budget=0.25))
    assert engine.capacities == [b + 4 for b in budgets] and len(engine.cache.groups) == 4


def test_make_cache_composes_eviction_with_every_reference_representation(demo):
    model, _ = demo
    for representation in ("kivi4", "fp8kv", "quanto4"):
        cache = make_cache(f"streamingllm+{representation}", model.config, {})
        inner = make_cache(representation, model.config, {})
        assert [type(layer.inner) for layer in cache.layers] == [type(layer) for layer in inner.layers]


# -- two budgets in one run: technique aliases ----------------------------------------------------------


def small_config(**extra) -> dict:
    return {
        "models": {"m": {"path": "lcopt-demo", "max_input_tokens": 100}},
        "datasets": {"d": {"synthetic": "passkey", "words": 100}},
    } | extra


@pytest.fixture
def own_registry(monkeypatch):
    """Aliases register into the process's registry: keep them to this test."""
    from lcopt import techniques

    monkeypatch.setattr(techniques, "_REGISTRY", dict(techniques.registry()))


def test_an_alias_is_the_technique_again_with_its_own_options(own_registry):
    from lcopt.config import technique_options, validate
    from lcopt.techniques import markdown_list

    cfg = validate(
        small_config(
            technique_aliases={"snapkv10": "snapkv"},
            snapkv10={"budget": 0.1},
            techniques=["snapkv", "snapkv10", "kivi4"],
            levels=[1, 2],
        )
    )
    assert technique_options(cfg, "snapkv10") == options("snapkv", budget=0.1)
    assert technique_options(cfg, "snapkv") == options("snapkv")
    assert {"snapkv+kivi4", "snapkv10+kivi4"} <= set(cfg["stacks"]) and "snapkv+snapkv10" not in cfg["stacks"]
    assert get("snapkv10").keep is not None and get("snapkv10").alias_of == "snapkv"
    assert "snapkv10" not in markdown_list()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"technique_aliases": {"x": "nope"}}, r"key 'technique_aliases.x': 'nope' is not a technique; allowed: "),
        ({"technique_aliases": {"kivi4": "snapkv"}}, r"key 'technique_aliases.kivi4': .*a technique of that name"),
        ({"technique_aliases": {"seed": "snapkv"}}, r"key 'technique_aliases.seed': 'seed' is a key of lcopt"),
        ({"technique_aliases": {"s10": "snapkv"}, "s10": {"budgett": 1}}, r"key 's10.budgett': unknown key"),
        ({"snapkv": {"budget": 1.5}}, r"key 'snapkv.budget': 1.5 is not valid.*expected tokens each layer keeps"),
        ({"snapkv": {"kernel": 4}}, r"key 'snapkv.kernel': 4 is even"),
        ({"stacks": ["kivi4+snapkv"]}, r"key 'stacks.0': .*write 'snapkv\+kivi4'"),
    ],
)
def test_bad_eviction_settings_name_the_key(own_registry, extra, message):
    from lcopt.config import ConfigError, validate

    with pytest.raises(ConfigError, match=message):
        validate(small_config(**extra))


def test_a_job_of_an_aliased_eviction_stack_runs_through_the_workflow(tmp_path):
    """The rule passes the alias and every cache technique's block by name; the job keeps 10% of the
    prompt per layer (below KIVI's window of 128: all exact float32) and records the prefill's memory."""
    import json

    from conftest import run_snakemake

    config = {
        "samples": 1,
        "models": {"demo": {"path": "lcopt-demo", "max_input_tokens": 600}},
        "datasets": {"passkey-300": {"synthetic": "passkey", "words": 300}},
        "technique_aliases": {"snapkv10": "snapkv"},
        "snapkv10": {"budget": 0.1},
        "stacks": ["snapkv10+kivi4"],
    }
    target = "results/predictions/demo/snapkv10+kivi4/passkey-300.jsonl"
    code, out = run_snakemake(tmp_path, config, target)
    assert code == 0, out[-3000:]
    (row,) = [json.loads(line) for line in (tmp_path / target).open()]
    assert row["kv_method"] == "snapkv10+kivi4" and row["engine"] == "reference"
    stored = int(0.1 * row["n_input_tokens"]) + row["n_output_tokens"] - 1
    assert row["kv_cache_bytes"] == 4 * 2 * 4 * 32 * 4 * stored  # layers, K and V, KV heads, head_dim, float32
    assert row["mem_after_prefill_bytes"] > 0 and 0 < row["prefill_peak_mem_bytes"] <= row["peak_mem_bytes"]


def test_the_decode_benchmark_reads_an_eviction_budget_from_its_path(demo):
    """`fast:snapkv+kivi4@2048` (lcopt.decode_benchmark): the method, a budget in tokens, and the
    roofline's cache of the kept tokens (no GPU needed for these)."""
    import re

    from lcopt import decode_benchmark
    from lcopt.config import schema

    assert decode_benchmark.parse_path("fast:snapkv+kivi4@2048") == ("bf16", "fast", "snapkv+kivi4@2048")
    pattern = schema()["properties"]["benchmark"]["properties"]["paths"]["items"]["pattern"]
    assert re.match(pattern, "int4:fast:pyramidkv+kivi2@8192") and not re.match(pattern, "fast:a+b+c")
    method, opts = decode_benchmark.cache_options("snapkv+kivi4@2048")
    assert method == "snapkv+kivi4" and opts["snapkv"] == options("snapkv", budget=2048)
    assert decode_benchmark.cache_options("none") == ("none", {})
    with pytest.raises(ValueError, match="needs an eviction method"):
        decode_benchmark.cache_options("kivi4@2048")
    model, _ = demo
    assert decode_benchmark.cached_prompt_tokens(model, "pyramidkv@100", 1000) == 100  # the mean over layers
    assert decode_benchmark.cached_prompt_tokens(model, "streamingllm+kivi4@100", 50) == 50
    assert decode_benchmark.cached_prompt_tokens(model, "kivi4", 1000) == 1000
