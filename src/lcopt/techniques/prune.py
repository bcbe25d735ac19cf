"""`prune`: Minitron-style width pruning (Muralidharan et al., 2024) for Llama-architecture models.

Importance is activation-based, measured on calibration text in one forward pass:
- MLP neurons: the magnitude of each intermediate activation act(gate) * up;
- attention: the magnitude of each head's output before `o_proj`; heads are kept or dropped by whole
  GQA groups (one KV head with its query heads), so the result is still a valid GQA model;
- embedding channels: the magnitude of each channel of the RMSNorm outputs, over every layer.
Each is aggregated as in Minitron: L2 norm over the sequence, mean over the batch. The least important
units are sliced out of every weight that touches them, and the result is saved as a standard HF model
(`from_pretrained` loads it; `head_dim` is written explicitly). Distillation is not done here: the
pruned model is used as is, which is the point of measuring it.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from lcopt.techniques import CHECKPOINTS_SCHEMA, ModelTechnique, register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneTarget:
    """Kept fractions (the defaults mirror Llama-3.1-8B -> Minitron-4B-Width: 3072/4096, 9216/14336)."""

    hidden: float = 0.75
    intermediate: float = 0.643
    heads: float = 1.0
    # kept embedding channels and MLP neurons are rounded to a multiple of this, so that the pruned
    # widths suit 4-bit kernels, which need a layer's input size to be a multiple of the group size
    # (Minitron's released widths are multiples of 128)
    multiple_of: int = 1


def _aggregate(x: torch.Tensor) -> torch.Tensor:
    """(batch, seq, units) -> (units,): L2 over the sequence, mean over the batch."""
    return x.float().norm(dim=1).mean(dim=0)


@torch.no_grad()
def importance(model, batches: list[dict]) -> dict[str, torch.Tensor]:
    """Per-unit importance from forward hooks: `mlp.<i>`, `heads.<i>` (per KV group) and `hidden`."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    scores: dict[str, torch.Tensor] = defaultdict(lambda: 0)
    hooks = []
    for i, layer in enumerate(model.model.layers):

        def mlp_hook(module, args, i=i):
            scores[f"mlp.{i}"] = scores[f"mlp.{i}"] + _aggregate(args[0])

        def heads_hook(module, args, i=i):
            b, s, _ = args[0].shape
            per_head = args[0].reshape(b, s, cfg.num_attention_heads, head_dim).float().norm(dim=-1)
            per_group = per_head.reshape(b, s, cfg.num_key_value_heads, group).sum(-1)
            scores[f"heads.{i}"] = scores[f"heads.{i}"] + _aggregate(per_group)

        def norm_hook(module, args, output):
            scores["hidden"] = scores["hidden"] + _aggregate(output)

        hooks += [
            layer.mlp.down_proj.register_forward_pre_hook(mlp_hook),
            layer.self_attn.o_proj.register_forward_pre_hook(heads_hook),
            layer.input_layernorm.register_forward_hook(norm_hook),
            layer.post_attention_layernorm.register_forward_hook(norm_hook),
        ]
    try:
        for batch in batches:
            model(**batch)
    finally:
        for h in hooks:
            h.remove()
    return dict(scores)


def _kept(total: int, fraction: float, step: int, what: str) -> int:
    """`fraction` of `total` units, rounded to a multiple of `step`; an error where that rounds back to
    all of them (a target that silently prunes nothing)."""
    n = min(total, max(step, round(total * fraction / step) * step))
    if fraction < 1 and n == total:
        raise ValueError(
            f"prune: keeping {fraction} of {total} {what} in multiples of {step} keeps all {total}; "
            "lower the kept fraction or prune.multiple_of"
        )
    return n


@dataclass(frozen=True)
class PrunedShape:
    hidden: int
    intermediate: int
    kv_groups: int


def pruned_shape(cfg, target: PruneTarget) -> PrunedShape:
    """The kept widths, checked before any calibration pass. transformers rejects a config whose
    hidden size is not a multiple of its query heads, so embedding channels are kept in multiples of
    lcm(multiple_of, kept query heads): SmolLM2-135M's 9 heads and 576 channels allow no 0.75 cut in
    multiples of 64, and pruning one of its 3 GQA groups (6 heads) allows 384."""
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    kv_groups = max(1, round(cfg.num_key_value_heads * target.heads))
    step = math.lcm(target.multiple_of, kv_groups * group)
    what = f"embedding channels (multiple_of {target.multiple_of} and {kv_groups * group} query heads)"
    return PrunedShape(
        hidden=_kept(cfg.hidden_size, target.hidden, step, what),
        intermediate=_kept(cfg.intermediate_size, target.intermediate, target.multiple_of, "MLP neurons"),
        kv_groups=kv_groups,
    )


def _top(scores: torch.Tensor, n: int) -> torch.Tensor:
    return scores.topk(n).indices.sort().values


def _slice(linear: torch.nn.Linear, out_idx=None, in_idx=None) -> None:
    w = linear.weight.data
    if out_idx is not None:
        w = w[out_idx]
        if linear.bias is not None:
            linear.bias.data = linear.bias.data[out_idx].clone()
    if in_idx is not None:
        w = w[:, in_idx]
    linear.weight.data = w.clone()
    linear.out_features, linear.in_features = w.shape


@torch.no_grad()
def prune(model, scores: dict[str, torch.Tensor], target: PruneTarget):
    """Slice `model` in place to the kept units; returns it with an updated config."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    shape = pruned_shape(cfg, target)
    hidden_idx = _top(scores["hidden"], shape.hidden)
    n_groups = shape.kv_groups
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        groups = scores[f"heads.{i}"].topk(n_groups).indices.sort().values
        kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups.tolist()])
        q_heads = [g * group + j for g in groups.tolist() for j in range(group)]
        q_rows = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in q_heads])
        _slice(attn.q_proj, q_rows, hidden_idx)
        _slice(attn.k_proj, kv_rows, hidden_idx)
        _slice(attn.v_proj, kv_rows, hidden_idx)
        _slice(attn.o_proj, hidden_idx, q_rows)
        neurons = _top(scores[f"mlp.{i}"], shape.intermediate)
        _slice(mlp.gate_proj, neurons, hidden_idx)
        _slice(mlp.up_proj, neurons, hidden_idx)
        _slice(mlp.down_proj, hidden_idx, neurons)
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight.data = norm.weight.data[hidden_idx].clone()
        attn.num_key_value_groups = group
        for name in ("num_heads", "num_key_value_heads"):
            if hasattr(attn, name):
                setattr(attn, name, len(q_heads) if name == "num_heads" else n_groups)
    model.model.norm.weight.data = model.model.norm.weight.data[hidden_idx].clone()
    emb = model.model.embed_tokens
    emb.weight.data = emb.weight.data[:, hidden_idx].clone()
    emb.embedding_dim = len(hidden_idx)
    if not cfg.tie_word_embeddings:
        _slice(model.lm_head, None, hidden_idx)
    else:
        model.lm_head.weight = emb.weight
        model.lm_head.in_features = len(hidden_idx)
    cfg.head_dim = head_dim
    cfg.hidden_size = len(hidden_idx)
    cfg.intermediate_size = len(neurons)
    cfg.num_attention_heads = n_groups * group
    cfg.num_key_value_heads = n_groups
    return model


def random_scores(model, seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniformly random importance with the same shapes: the control that activation importance must beat."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    out = {"hidden": torch.rand(cfg.hidden_size, generator=g)}
    for i in range(cfg.num_hidden_layers):
        out[f"mlp.{i}"] = torch.rand(cfg.intermediate_size, generator=g)
        out[f"heads.{i}"] = torch.rand(cfg.num_key_value_heads, generator=g)
    return out


class Prune(ModelTechnique):
    summary = (
        "Minitron-style width pruning (activation importance of MLP neurons, GQA groups, embedding "
        "channels; no distillation), or a released pruned checkpoint"
    )
    options_schema: ClassVar[dict] = {
        "description": "native Minitron-style width pruning "
        "(kept fractions; defaults as Llama-3.1-8B -> Minitron-4B-Width)",
        "properties": {
            "hidden": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.75},
            "intermediate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.643},
            "heads": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "default": 1.0,
                "description": "kept GQA groups",
            },
            "multiple_of": {
                "type": "integer",
                "minimum": 1,
                "default": 1,
                "description": "round kept embedding channels and MLP neurons to a multiple of this "
                "(e.g. gptq.group_size)",
            },
            "calibration_dataset": {
                "type": "string",
                "description": "a dataset of `datasets` (its unscored rows) or of `calibration_datasets` whose "
                "text calibrates importance (default: the first of `datasets` by name)",
            },
            "calibration_samples": {"type": "integer", "minimum": 1, "default": 16},
            "calibration_tokens": {"type": "integer", "minimum": 16, "default": 1024},
            "checkpoints": CHECKPOINTS_SCHEMA
            | {"description": "model name -> its released pruned checkpoint (the study used NVIDIA's Minitron models)"},
        },
    }

    def random_variant(self, options: dict, checkpoint: str | None) -> dict | None:
        """A released pruned checkpoint's architecture (its config directory), random; native pruning
        needs real weights to rank."""
        if not checkpoint:
            return None
        from lcopt.models import resolve_source

        return {"weights": resolve_source(checkpoint, weights=False), "checkpoint": checkpoint}

    def make_variant(self, parent_json: Path, weights_dir: Path, options: dict, calibration: list[str]) -> dict:
        """Width pruning of the parent variant, saved as a standard HF model in `weights_dir`."""
        from lcopt.data import calibration_batches
        from lcopt.io import atomic_dir
        from lcopt.models import load_variant

        model, tokenizer, _ = load_variant(parent_json, "cpu", "float32")
        target = PruneTarget(
            options["hidden"], options["intermediate"], options["heads"], options.get("multiple_of", 1)
        )
        pruned_shape(model.config, target)  # an impossible target fails here, not after calibration
        scores = importance(model, calibration_batches(tokenizer, calibration, options["calibration_tokens"], "cpu"))
        before = sum(p.numel() for p in model.parameters())
        prune(model, scores, target)
        after = sum(p.numel() for p in model.parameters())
        log.info("pruned %s: %d -> %d parameters (%s)", parent_json, before, after, target)
        with atomic_dir(weights_dir) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        return {"parameters_before": before, "parameters_after": after, "target": vars(target)}

    def incompatibility(self, other) -> str | None:
        return "a stack prunes once" if isinstance(other, Prune) else None


class NativePrune(Prune):
    """`prune` done by lcopt on every model, also one whose `prune.checkpoints` names a released checkpoint.

    Why: a released checkpoint changes more than the pruning (Minitron-4B-Width is a base model, not an
    instruct one; Mistral-NeMo-Minitron-8B has 8,192 positions; both are distilled), so a `prune` row made
    from it mixes those effects with pruning's. `prune_native` prunes the instruct model itself, keeping its
    context and chat template, with `prune:`'s kept fractions and calibration; beside `prune` it tells the
    two apart (config/paper.yaml)."""

    uses_checkpoints = False
    summary = (
        "`prune` made by lcopt on every model, never a released checkpoint (beside `prune`, it tells pruning "
        "apart from what a released checkpoint also changes)"
    )


register(Prune("prune"), NativePrune("prune_native", options_key="prune"))
