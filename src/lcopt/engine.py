"""The fast engine: greedy decoding the way gpt-fast does it, over a `transformers` model's own modules.

`generate` (the reference engine) launches ~1,500 small kernels per token from Python and, with a
dynamic cache, copies the whole cache as it grows; on an H200 its CPU, not the GPU, sets the speed.
Here instead:
- the cache is preallocated for the job's longest sequence, in the format of the cache-side
  technique (`lcopt.static_cache`), so a decode step has static shapes;
- the prompt is prefilled layer by layer with the model's own attention function (SDPA/flash,
  causal) on exact states, each layer's keys and values going straight into the cache (quantized
  there if the cache is), and the MLP run over chunks of tokens to bound its activations; only one
  layer's full keys and values exist at a time (the prefill never materializes the whole cache);
- with an eviction method in the stack (`lcopt.techniques._eviction`), each layer's prefill keeps only
  the tokens the method selects, in a cache sized for that layer's budget plus the new tokens (memory
  freed, not masked); kept tokens keep their rotary phases, new ones continue at absolute positions,
  and each layer has its own cache slot and length (device tensors, advanced by one add per step);
- one decode step (embedding, every layer's projections, rotary embedding, cache append, fused
  decode attention, MLP, LM head, argmax) is captured once in a CUDA graph and replayed per token.
The layers are the model's own modules (its norms, projections, MLP, rotary embedding), so any
weight format that replaces `nn.Linear` (GPTQ kernels) runs unchanged. Supported: decoder-only
models whose layers are Llama's (`llama`, `mistral` without a sliding window); others use `generate`.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from lcopt.static_cache import StaticCache

SUPPORTED_TYPES = ("llama", "mistral")


class EngineUnsupported(ValueError):
    """The model cannot run on the fast engine (the reference engine can)."""


def unsupported_reason(model, kv_method: str = "none") -> str | None:
    """Why the fast engine cannot run `model` with the cache method `kv_method`, or None."""
    if not has_static_cache(kv_method):
        return f"the KV-cache method {kv_method!r} (it has no fast-engine cache)"
    config = model.config
    if config.model_type not in SUPPORTED_TYPES:
        return f"model_type {config.model_type!r} (the fast engine runs {', '.join(SUPPORTED_TYPES)})"
    window = getattr(config, "sliding_window", None)
    if window and window < config.max_position_embeddings:
        return f"sliding-window attention ({window} tokens)"
    return None


def has_static_cache(kv_method: str) -> bool:
    """Whether the fast engine runs the cache-side techniques `kv_method` (`none`, `snapkv+kivi4`): every
    eviction method runs in its prefill; a representation needs its own fast-engine cache."""
    from lcopt.stacks import cache_parts
    from lcopt.techniques import CacheTechnique, get

    representation = cache_parts(kv_method).get("representation")
    return representation is None or type(get(representation)).static_cache is not CacheTechnique.static_cache


class CacheFactory:
    """`(max_len, layers, device) -> empty cache` in the stack's representation (`none`: the model's own
    dtype); `evictor`: the stack's eviction method with its options, or None."""

    def __init__(self, build: Callable[..., StaticCache], geometry: dict, device, dtype, evictor=None):
        self.build, self.geometry, self.device, self.dtype, self.evictor = build, geometry, device, dtype, evictor

    def __call__(self, max_len: int, layers: int | None = None, device=None) -> StaticCache:
        device = self.device if device is None else device
        geometry = self.geometry | {"layers": layers or self.geometry["layers"]}
        return self.build(**geometry, max_len=max_len, device=device, dtype=self.dtype)


def static_cache_factory(kv_method: str, model, options: dict | None = None) -> CacheFactory:
    """The fast engine's caches for the cache-side techniques `kv_method`, each with its options
    (`options[name]`, defaults for what is left out)."""
    from lcopt.stacks import cache_options, cache_parts
    from lcopt.static_cache import DenseCache
    from lcopt.techniques import get

    if not has_static_cache(kv_method):
        raise EngineUnsupported(f"the KV-cache method {kv_method!r} has no fast-engine cache")
    parts, options = cache_parts(kv_method), cache_options(kv_method, options)
    build = DenseCache
    if "representation" in parts:
        name = parts["representation"]

        def build(**kwargs):
            return get(name).static_cache(model.config, options[name], **kwargs)

    evictor = None
    if "eviction" in parts:
        from lcopt.techniques._eviction import Evictor

        evictor = Evictor(get(parts["eviction"]), options[parts["eviction"]])
    embedding = model.get_input_embeddings().weight
    return CacheFactory(build, cache_geometry(model.config), embedding.device, embedding.dtype, evictor)


def cache_geometry(config) -> dict:
    """Layer count and attention shape of a decoder config, as the caches take them."""
    config = config.get_text_config(decoder=True)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "layers": config.num_hidden_layers,
        "kv_heads": config.num_key_value_heads,
        "head_dim": head_dim,
        "q_heads": config.num_attention_heads,
    }


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm's forward as a function (float32 inside, as transformers computes it)."""
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def add_rms_norm(h: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    """The residual add and the next norm in one kernel: (h + delta, its norm)."""
    h = h + delta
    return h, rms_norm(h, weight, eps)


def rope(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' apply_rotary_pos_emb for one position, the query and key heads at once (one kernel
    when compiled): qk [Hq + Hkv, D], cos/sin [1, D]."""
    half = qk.shape[-1] // 2
    return qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin


def silu_mul(gate_up: torch.Tensor, intermediate: int) -> torch.Tensor:
    return F.silu(gate_up[..., :intermediate]) * gate_up[..., intermediate:]


class Projections:
    """Several projections of the same input as one kernel launch: plain `nn.Linear` layers (no bias, no
    tensor-subclass weight such as torchao's) become views of one fused matrix, and layers of a class with
    a `fuse(layers)` classmethod (4-bit `lcopt.int4.TinyGemmLinear`) one fused layer whose buffers they
    then view: no extra memory either way. Otherwise (or with `fuse` off) one call each."""

    def __init__(self, modules: list[torch.nn.Module], fuse: bool):
        self.modules = modules
        self.weight = self.layer = None
        kind = type(modules[0])
        if not fuse or any(type(m) is not kind for m in modules):
            return
        if kind is torch.nn.Linear and all(m.bias is None and type(m.weight) is torch.nn.Parameter for m in modules):
            with torch.no_grad():
                self.weight = torch.cat([m.weight for m in modules])
                parts = self.weight.split([m.out_features for m in modules])
                for m, part in zip(modules, parts, strict=True):
                    m.weight = torch.nn.Parameter(part, requires_grad=False)
        elif hasattr(kind, "fuse"):
            with torch.no_grad():
                self.layer = kind.fuse(modules)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            return F.linear(x, self.weight)
        if self.layer is not None:
            return self.layer(x)
        return torch.cat([m(x) for m in self.modules], dim=-1)


def eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


class LayerCaches:
    """The caches of a segment's layers, by layer: one cache object per run of consecutive layers with the
    same capacity, each sized for it (one object for every layer unless an eviction method gives layers
    different budgets, as pyramidkv does). The static-cache interface with the segment's layer index."""

    def __init__(self, make: Callable[..., StaticCache], capacities: list[int], device: torch.device):
        self.where: list[tuple[StaticCache, int]] = []  # layer -> (its cache, its index there)
        self.groups: list[StaticCache] = []
        for capacity, run in itertools.groupby(capacities):
            count = len(list(run))
            cache = make(capacity, count, device)
            self.groups.append(cache)
            self.where += [(cache, j) for j in range(count)]

    @property
    def capacities(self) -> list[int]:
        return [cache.max_len for cache, _ in self.where]

    @property
    def fused(self) -> bool:
        return all(cache.fused for cache in self.groups)

    @property
    def reserved_bytes(self) -> int:
        return sum(cache.reserved_bytes for cache in self.groups)

    def bytes_for(self, lengths: list[int]) -> int:
        """Bytes of layer i holding lengths[i] tokens (each format's bytes are the same per layer)."""
        return round(sum(cache.bytes_for(n) / cache.layers for (cache, _), n in zip(self.where, lengths, strict=True)))

    def prefill(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        cache, j = self.where[layer]
        cache.prefill(j, keys, values)

    def append(self, layer: int, key: torch.Tensor, value: torch.Tensor, index: torch.Tensor) -> None:
        cache, j = self.where[layer]
        cache.append(j, key, value, index)

    def attend(self, layer: int, q: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        cache, j = self.where[layer]
        return cache.attend(j, q, length)

    def read(self, layer: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        cache, j = self.where[layer]
        return cache.read(j, length)


class Segment:
    """Consecutive layers on one device: their cache, decode graph and device-side state. A model split
    over several GPUs (layers placed one GPU after another) runs as one segment per GPU; the hidden state
    crosses between them, and the next token goes back to the first.

    `pos` is the rotary position of the token being decoded (absolute: the prompt's length, then +1 per
    step); `index[i]` its cache slot in the segment's layer i and `length[i]` that layer's valid tokens
    after the append: the prompt's length without eviction, each layer's kept count with it."""

    def __init__(self, device: torch.device, layers: list[int]):
        self.device, self.layers = device, layers
        self.cache: LayerCaches | None = None
        self.graph = None
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.index = torch.zeros(len(layers), dtype=torch.long, device=device)
        self.length = torch.ones(len(layers), dtype=torch.int32, device=device)
        self.token = torch.zeros(1, dtype=torch.long, device=device)  # in: first segment; out: last

    def start(self, pos: int, stored: list[int]) -> None:
        """Decode from rotary position `pos`, with `stored[i]` tokens in layer i's cache."""
        self.pos.fill_(pos)
        self.index.copy_(torch.tensor(stored, dtype=torch.long))
        self.length.copy_(self.index + 1)

    def advance(self) -> None:
        """One step on: one add per tensor for all the segment's layers (inside the captured graph)."""
        self.pos += 1
        self.index += 1
        self.length += 1


def layer_device(layer) -> torch.device:
    return next(layer.parameters()).device


class FastEngine:
    """Greedy generation for one model; `make_cache(max_len, layers, device)` returns an empty cache of
    the wanted format for that many layers on that device."""

    def __init__(
        self,
        model,
        make_cache: CacheFactory,
        graphs: bool | None = None,
        prefill_chunk: int = 16384,
        fuse: bool | None = None,
        segments: list[list[int]] | None = None,
    ):
        reason = unsupported_reason(model)
        if reason:
            raise EngineUnsupported(reason)
        self.model = model
        self.device = model.get_input_embeddings().weight.device
        self.dtype = model.get_input_embeddings().weight.dtype
        self.layers = model.model.layers
        self.geometry = cache_geometry(model.config)
        attn = self.layers[0].self_attn
        self.apply_rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        self.attention = ALL_ATTENTION_FUNCTIONS["sdpa"]
        self.make_cache = make_cache
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        # On a GPU the decode step's elementwise work is compiled into a few kernels and the projections
        # that share an input are fused; on a CPU it runs the model's own modules (the cross-check).
        self.fuse = self.device.type == "cuda" if fuse is None else fuse
        compile_ = torch.compile(dynamic=False, fullgraph=True) if self.fuse else (lambda f: f)
        self.rms_norm, self.add_rms_norm = compile_(rms_norm), compile_(add_rms_norm)
        self.rope, self.silu_mul = compile_(rope), compile_(silu_mul)
        attns, mlps = [layer.self_attn for layer in self.layers], [layer.mlp for layer in self.layers]
        self.qkv = [Projections([a.q_proj, a.k_proj, a.v_proj], self.fuse) for a in attns]
        self.gate_up = [Projections([m.gate_proj, m.up_proj], self.fuse) for m in mlps]
        self.eps = self.layers[0].input_layernorm.variance_epsilon
        self.silu = getattr(model.config, "hidden_act", "silu") == "silu"
        self.prefill_chunk = prefill_chunk
        if segments is None:  # runs of consecutive layers on one device
            segments = []
            for i, layer in enumerate(self.layers):
                if segments and layer_device(self.layers[segments[-1][-1]]) == layer_device(layer):
                    segments[-1].append(i)
                else:
                    segments.append([i])
        self.segments = [Segment(layer_device(self.layers[s[0]]), s) for s in segments]
        last = self.segments[-1].device
        if self.device != self.segments[0].device or self.model.lm_head.weight.device != last:
            raise EngineUnsupported("the embedding must sit with the first layers and the LM head with the last")
        self.evictor = getattr(make_cache, "evictor", None)
        self.max_len = 0  # the longest sequence (rotary positions) reserved for
        self.capacities: list[int] = []  # tokens each layer's cache holds
        self.prompt_tokens, self.kept = 0, None  # of the last prefill: prompt length, tokens kept per layer

    @property
    def cache(self) -> LayerCaches | None:
        """The caches of a model on one device (the engine's tests and single-GPU runs read them)."""
        return self.segments[0].cache if len(self.segments) == 1 else None

    @property
    def graph(self):
        return self.segments[0].graph

    def kept_counts(self, prompt_tokens: int) -> list[int]:
        """Tokens each layer keeps of a prompt: all of them, or the eviction method's budgets."""
        n_layers = len(self.layers)
        return self.evictor.kept_counts(prompt_tokens, n_layers) if self.evictor else [prompt_tokens] * n_layers

    def bytes_for(self, length: int) -> int:
        """Bytes the caches hold for a sequence of `length` tokens (prompt and answer) of the last prefill:
        each layer's kept prompt tokens plus the rest."""
        kept = self.kept or [self.prompt_tokens] * len(self.layers)
        lengths = [length - self.prompt_tokens + k for k in kept]
        return sum(seg.cache.bytes_for([lengths[i] for i in seg.layers]) for seg in self.segments)

    # -- setup -------------------------------------------------------------------------------------
    def reserve(self, max_len: int, new_tokens: int = 0) -> None:
        """Caches (and decode graphs) for sequences up to `max_len` tokens, of which `new_tokens` are
        generated: each layer's cache holds what it keeps of a `max_len - new_tokens` prompt plus
        `new_tokens`. Kept while long enough (a later sequence that needs more reallocates)."""
        need = [k + new_tokens for k in self.kept_counts(max_len - new_tokens)]
        if self.max_len >= max_len and all(n <= c for n, c in zip(need, self.capacities, strict=True)):
            return
        if self.capacities:  # grow, never shrink: the job's longest sample was reserved first
            need = [max(n, c) for n, c in zip(need, self.capacities, strict=True)]
            max_len = max(max_len, self.max_len)
        for seg in self.segments:
            seg.cache = seg.graph = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        for seg in self.segments:
            seg.cache = LayerCaches(self.make_cache, [need[i] for i in seg.layers], seg.device)
        self.capacities = [c for seg in self.segments for c in seg.cache.capacities]
        self.max_len = max_len
        positions = torch.arange(self.max_len, device=self.device)[None]
        probe = torch.empty(1, dtype=self.dtype, device=self.device)
        cos, sin = self.model.model.rotary_emb(probe, positions)
        self.cos = {seg.device: cos[0].to(seg.device) for seg in self.segments}
        self.sin = {seg.device: sin[0].to(seg.device) for seg in self.segments}
        self.hidden = {seg.device: torch.zeros(1, self.model.config.hidden_size, dtype=self.dtype, device=seg.device)
                       for seg in self.segments}  # fmt: skip
        if self.graphs:
            for seg in self.segments:
                self._capture(seg)

    def _capture(self, seg: Segment) -> None:
        with torch.cuda.device(seg.device):
            empty = [0] * len(seg.layers)
            seg.start(0, empty)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(2):  # compiles the Triton kernels, creates library handles
                    self._segment_step(seg)
            torch.cuda.current_stream().wait_stream(stream)
            seg.start(0, empty)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                self._segment_step(seg)
            seg.graph = graph

    # -- the model ----------------------------------------------------------------------------------
    def _qkv(self, attn, x: torch.Tensor, cos, sin):
        n = x.shape[1]
        d = self.geometry["head_dim"]
        q = attn.q_proj(x).view(1, n, -1, d).transpose(1, 2)
        k = attn.k_proj(x).view(1, n, -1, d).transpose(1, 2)
        v = attn.v_proj(x).view(1, n, -1, d).transpose(1, 2)
        q, k = self.apply_rotary(q, k, cos, sin)
        return q, k, v

    def _prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Run the prompt [1, P] through every layer; the caches get its exact keys and values, or those of
        the tokens the eviction method keeps. Returns the first token and the tokens each layer kept."""
        n = ids.shape[1]
        d = self.geometry["head_dim"]
        h = self.model.get_input_embeddings()(ids)
        window = min(self.evictor.window, n) if self.evictor else 0
        if window:
            from lcopt.techniques._eviction import window_queries
        kept = []
        for seg in self.segments:
            h = h.to(seg.device)
            cos, sin = self.cos[seg.device][None, :n], self.sin[seg.device][None, :n]
            for local, i in enumerate(seg.layers):
                layer = self.layers[i]
                attn = layer.self_attn
                x = layer.input_layernorm(h)
                q, k, v = self._qkv(attn, x, cos, sin)
                queries = window_queries(attn, x[:, -window:], cos[:, -window:], sin[:, -window:]) if window else None
                del x
                o, _ = self.attention(attn, q, k, v, None, dropout=0.0, scaling=attn.scaling)
                del q
                if self.evictor:
                    index = self.evictor.keep(queries, k[0], i, len(self.layers))
                    gather = index[..., None].expand(-1, -1, d)
                    k, v = k[0].gather(1, gather)[None], v[0].gather(1, gather)[None]
                    del queries, index, gather
                seg.cache.prefill(local, k[0], v[0])
                kept.append(k.shape[2])
                del k, v
                h = h + attn.o_proj(o.reshape(1, n, -1))
                del o
                for c in range(0, n, self.prefill_chunk):
                    part = h[:, c : c + self.prefill_chunk]
                    part += layer.mlp(layer.post_attention_layernorm(part))
        logits = self.model.lm_head(self.model.model.norm(h[:, -1:]))
        return logits[0, -1].argmax(), kept

    def _segment_step(self, seg: Segment) -> None:
        """One decode step of a segment's layers on its device state: the first segment embeds `token`,
        the others read the hidden state; the last ends in the LM head's argmax. On a GPU, per layer: one
        norm (fused with the residual add), one QKV matmul (bf16 or 4-bit), one rotary kernel for the query
        and key heads, the cache's append and attention, the output projection, one gate-up matmul,
        SiLU x up, down (`benchmarks/count_kernels.py` counts them)."""
        g = self.geometry
        d, q_heads, q_size = g["head_dim"], g["q_heads"], g["q_heads"] * g["head_dim"]
        qk_size = q_size + g["kv_heads"] * d
        first, final = seg is self.segments[0], seg is self.segments[-1]
        h = self.model.get_input_embeddings()(seg.token.view(1, 1))[0] if first else self.hidden[seg.device]
        cos, sin = self.cos[seg.device][seg.pos], self.sin[seg.device][seg.pos]
        x = self.rms_norm(h, self.layers[seg.layers[0]].input_layernorm.weight, self.eps)
        for local, i in enumerate(seg.layers):
            layer = self.layers[i]
            attn, mlp = layer.self_attn, layer.mlp
            qkv = self.qkv[i](x)
            qk = self.rope(qkv[:, :qk_size].view(-1, d), cos, sin)
            q, k, v = qk[:q_heads], qk[q_heads:], qkv[:, qk_size:].view(-1, d)
            seg.cache.append(local, k, v, seg.index[local : local + 1])
            o = seg.cache.attend(local, q, seg.length[local : local + 1])
            h, x = self.add_rms_norm(h, attn.o_proj(o.view(1, -1)), layer.post_attention_layernorm.weight, self.eps)
            gate_up = self.gate_up[i](x)
            inter = gate_up.shape[-1] // 2
            if self.silu:
                act = self.silu_mul(gate_up, inter)
            else:
                act = mlp.act_fn(gate_up[..., :inter]) * gate_up[..., inter:]
            if i != seg.layers[-1]:
                h, x = self.add_rms_norm(h, mlp.down_proj(act), self.layers[i + 1].input_layernorm.weight, self.eps)
            elif final:
                h, x = self.add_rms_norm(h, mlp.down_proj(act), self.model.model.norm.weight, self.eps)
            else:
                self.hidden[self.segments[self.segments.index(seg) + 1].device].copy_(h + mlp.down_proj(act))
        if final:
            seg.token.copy_(self.model.lm_head(x)[0].argmax().view(1))
        seg.advance()

    def _step(self) -> int:
        """One decode step over every segment (graph replays where captured); the next token."""
        for seg in self.segments:
            if seg.graph is not None:
                with torch.cuda.device(seg.device):
                    seg.graph.replay()
            else:
                self._segment_step(seg)
        last, first = self.segments[-1], self.segments[0]
        if last is not first:
            first.token.copy_(last.token)
        return int(last.token)

    # -- generation ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        input_ids: Sequence[int],
        max_new_tokens: int,
        stop: set[int] | None = None,
        on_token: Callable[[], None] | None = None,
    ) -> list[int]:
        """Greedy tokens after `input_ids` (the first stop token included, as `generate` returns it);
        `on_token` is called once each token is on the host (time stamps)."""
        n = len(input_ids)
        self.reserve(n + max_new_tokens, max_new_tokens)
        stop = eos_ids(self.model) if stop is None else stop
        ids = torch.tensor([list(input_ids)], device=self.device)
        first, kept = self._prefill(ids)
        self.prompt_tokens, self.kept = n, kept
        for seg in self.segments:
            seg.start(n, [kept[i] for i in seg.layers])
        self.segments[0].token.copy_(first.view(1))
        out = [int(first)]
        if on_token:
            on_token()
        while len(out) < max_new_tokens and out[-1] not in stop:
            out.append(self._step())
            if on_token:
                on_token()
        return out
