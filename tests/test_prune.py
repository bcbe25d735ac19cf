"""Native Minitron-style width pruning on the shipped demo model."""

import copy

import pytest
import torch

from lcopt import synthetic
from lcopt.data import calibration_batches
from lcopt.models import DEMO_MODEL, load_variant, write_variant
from lcopt.prompts import build_prompt
from lcopt.tasks import get_task
from lcopt.techniques.prune import PruneTarget, importance, prune, random_scores


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "variant.json"
    write_variant("demo", "baseline", DEMO_MODEL, path)
    model, tokenizer, _ = load_variant(path, "cpu", "float32")
    calib = [r["context"] for t in synthetic.TASKS for r in synthetic.generate(t, 400, 4, seed=999)]
    scores = importance(model, calibration_batches(tokenizer, calib, 1024, "cpu"))
    return model, tokenizer, scores


def answer_nll(model, tokenizer, rows) -> float:
    """Mean negative log-likelihood of the gold answers after their prompts (teacher forcing)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for task, row in rows:
            p = build_prompt(tokenizer, get_task(task), row, 4000)
            prompt = tokenizer(p.text, add_special_tokens=p.add_special_tokens)["input_ids"]
            answer = tokenizer(row["answers"][0], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + answer])
            logits = model(ids).logits[0, len(prompt) - 1 : -1]
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(answer), reduction="sum").item()
            count += len(answer)
    return total / count


def test_shapes_follow_the_target_and_respect_gqa_groups(demo, tmp_path):
    model, _, scores = demo
    cfg = model.config
    pruned = prune(copy.deepcopy(model), scores, PruneTarget(hidden=0.75, intermediate=0.5, heads=0.5))
    c = pruned.config
    assert (c.hidden_size, c.intermediate_size) == (cfg.hidden_size * 3 // 4, cfg.intermediate_size // 2)
    assert (c.num_attention_heads, c.num_key_value_heads) == (
        cfg.num_attention_heads // 2,
        cfg.num_key_value_heads // 2,
    )
    assert c.head_dim == cfg.head_dim
    layer = pruned.model.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (c.num_attention_heads * c.head_dim, c.hidden_size)
    assert layer.self_attn.k_proj.weight.shape == (c.num_key_value_heads * c.head_dim, c.hidden_size)
    assert layer.mlp.down_proj.weight.shape == (c.hidden_size, c.intermediate_size)
    assert pruned.model.embed_tokens.weight.shape == (cfg.vocab_size, c.hidden_size)
    pruned.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits)


HEADS_FINDING = (
    "on the retrained demo model (offset-head layer 0), activation importance keeps worse attention "
    "groups than random choices: answer NLL 16.7 vs 11.0, 17.6, 18.5 (seeds 0-2); open finding, see README"
)


@pytest.mark.parametrize(
    "target",
    [
        PruneTarget(1.0, 0.5, 1.0),
        pytest.param(PruneTarget(1.0, 1.0, 0.5), marks=pytest.mark.xfail(strict=True, reason=HEADS_FINDING)),
    ],
    ids=["mlp", "heads"],
)
def test_activation_importance_beats_random_pruning(demo, target):
    """On MLP neurons (and, expected but failing on the retrained model, attention groups), activation
    importance loses less than random choices do.
    (Embedding channels alone are not asserted: without distillation, on this 2.8M model, dropping a
    quarter of them is about as bad whichever quarter goes; see the README.)"""
    model, tokenizer, scores = demo
    rows = [(t, r) for t in ("passkey", "multi_hop") for r in synthetic.generate(t, 512, 8, seed=21)]
    informed = answer_nll(prune(copy.deepcopy(model), scores, target), tokenizer, rows)
    randoms = [
        answer_nll(prune(copy.deepcopy(model), random_scores(model, s), target), tokenizer, rows) for s in range(3)
    ]
    baseline = answer_nll(model, tokenizer, rows)
    assert baseline < informed < sum(randoms) / len(randoms), (baseline, informed, randoms)


LLAMA_INSTRUCT = "meta-llama--Llama-3.1-8B-Instruct"
MINITRON_4B = "nvidia--Llama-3.1-Minitron-4B-Width-Base"


def test_a_released_checkpoint_replaces_native_pruning_and_is_prompted_as_itself(shared_assets, tmp_path, monkeypatch):
    """The paper's path with the real files: Llama-3.1-8B-Instruct's `prune` variant is
    Llama-3.1-Minitron-4B-Width-Base (tokenizer, generation config, context from ../shared/assets; a tiny
    random body, as the assets have no weights). It has no chat template and stops at <|end_of_text|>,
    not <|eot_id|>: prompted with its base's prompts it is refused; with its own it runs, stopping at its
    own EOS."""
    import json

    from conftest import tiny_checkpoint

    from lcopt import inference, models
    from lcopt.io import read_jsonl, write_jsonl_atomic
    from lcopt.prompts import write_prompts
    from lcopt.techniques import get

    def refuse(*args):
        raise AssertionError("pruned natively although a checkpoint was given")

    monkeypatch.setattr(get("prune"), "make_variant", refuse)
    base = str(tiny_checkpoint(shared_assets, LLAMA_INSTRUCT, tmp_path / "instruct"))
    released = str(tiny_checkpoint(shared_assets, MINITRON_4B, tmp_path / "minitron"))
    baseline, prune_json = tmp_path / "baseline.json", tmp_path / "prune.json"
    models.write_variant("llama", "baseline", base, baseline)
    weights = tmp_path / "weights"
    models.write_technique_variant("llama", "prune", "prune", baseline, weights, prune_json, {}, checkpoint=released)
    variant = json.loads((tmp_path / "prune.json").read_text())
    assert (variant["weights"], variant["techniques"]) == (released, ["prune"])
    record = variant["prune"]
    # the same vocabulary, but another chat template (none) and other stop tokens: another tokenizer to prompt with
    assert record["differs_from_base"] == ["chat_template", "eos_token_ids", "tokenizer_sha256"]
    assert record["checkpoint_facts"]["vocabulary_size"] == record["base_facts"]["vocabulary_size"] == 128256
    assert (record["checkpoint_facts"]["chat_template"], record["base_facts"]["chat_template"]) == (False, True)
    assert record["checkpoint_facts"]["eos_token_ids"] == [128001]  # <|end_of_text|>
    assert record["base_facts"]["eos_token_ids"] == [128001, 128008, 128009]  # <|eot_id|> among them

    write_jsonl_atomic(tmp_path / "rows.jsonl", synthetic.generate("passkey", 200, 2, seed=7))
    write_prompts(base, "passkey", tmp_path / "rows.jsonl", 4000, tmp_path / "base-prompts.jsonl")
    with pytest.raises(inference.InferenceError, match="needs its own prompts"):
        inference.run(tmp_path / "prune.json", tmp_path / "base-prompts.jsonl", tmp_path / "p.jsonl", device="cpu")
    write_prompts(released, "passkey", tmp_path / "rows.jsonl", 4000, tmp_path / "own-prompts.jsonl")
    own = read_jsonl(tmp_path / "own-prompts.jsonl")
    assert not any(p["chat_template"] or "<|start_header_id|>" in p["prompt"] for p in own)
    inference.run(tmp_path / "prune.json", tmp_path / "own-prompts.jsonl", tmp_path / "p.jsonl", device="cpu")
    predictions = read_jsonl(tmp_path / "p.jsonl")
    assert [p["eos_token_ids"] for p in predictions] == [[128001], [128001]]
    assert all(p["status"] == "ok" and p["chat_template"] is False for p in predictions)


def smollm2_shaped(layers: int = 2):
    """SmolLM2-135M's widths (576 channels, 9 query heads in 3 GQA groups, 1536 neurons), random."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        num_hidden_layers=layers,
        vocab_size=128,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def test_a_target_the_heads_forbid_fails_before_calibration_naming_the_numbers():
    """0.75 of 576 channels in multiples of 64 (448) is not a multiple of 9 heads, which transformers
    rejects on save; lcm(64, 9) = 576 would prune nothing, so it is an error before the calibration pass."""
    from lcopt.techniques.prune import pruned_shape

    cfg = smollm2_shaped().config
    with pytest.raises(
        ValueError, match=r"0\.75 of 576 embedding channels \(multiple_of 64 and 9 query heads\) in multiples of 576"
    ):
        pruned_shape(cfg, PruneTarget(hidden=0.75, intermediate=0.667, heads=1.0, multiple_of=64))
    assert pruned_shape(cfg, PruneTarget(0.75, 0.667, 1.0, 16)).hidden == 432  # lcm(16, 9) = 144


def test_pruning_a_gqa_group_lets_the_hidden_width_follow_and_the_model_reloads(tmp_path):
    model = smollm2_shaped()
    pruned = prune(
        model, random_scores(model), PruneTarget(hidden=0.667, intermediate=0.667, heads=0.667, multiple_of=64)
    )
    c = pruned.config
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads) == (384, 1024, 6, 2)
    pruned.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path)(ids).logits, pruned(ids).logits)


def test_prune_native_prunes_a_model_whose_prune_is_a_released_checkpoint():
    """config/paper.yaml's two pruning rows: `prune` is the model's released checkpoint, `prune_native`
    prunes the model itself with the same block's options and calibration, prompted as the model."""
    from lcopt import jobs
    from lcopt.config import validate

    config = validate(
        {
            "models": {"llama": {"path": "meta-llama/Llama-3.1-8B-Instruct", "max_input_tokens": 4000}},
            "datasets": {"kv": {"synthetic": "kv_retrieval", "words": 256}},
            "stacks": ["baseline", "prune", "prune_native"],
            "prune": {"checkpoints": {"llama": "nvidia/Llama-3.1-Minitron-4B-Width-Base"}, "multiple_of": 128},
        }
    )
    assert jobs.checkpoint(config, "llama", "prune") == "nvidia/Llama-3.1-Minitron-4B-Width-Base"
    assert jobs.checkpoint(config, "llama", "prune_native") is None
    assert jobs.prompt_source(config, "llama", "prune") == "llama@prune"
    assert jobs.prompt_source(config, "llama", "prune_native") == "llama"
    native = jobs.model_technique(config, "llama", "prune_native")
    assert native["checkpoint"] is None and native["options"]["multiple_of"] == 128
    assert native["calibration"]["name"] == "kv" and "checkpoints" not in native["options"]
    with pytest.raises(ValueError, match="a stack prunes once"):
        validate(config | {"stacks": ["prune+prune_native"]})
