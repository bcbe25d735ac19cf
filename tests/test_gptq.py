"""gptq4 and rtn4 on the demo model: GPTQ beats rounding layer by layer, the quantized model still
solves passkey, variants are real GPTQ checkpoints, and a released checkpoint replaces quantizing."""

import json

import pytest
import torch

from lcopt import inference, models, synthetic
from lcopt.data import held_out_calibration
from lcopt.io import read_jsonl, write_jsonl_atomic
from lcopt.models import DEMO_MODEL, load_variant, write_technique_variant, write_variant
from lcopt.prompts import write_prompts
from lcopt.techniques import get

OPTIONS = {"group_size": 128, "desc_act": False, "calibration_samples": 16, "calibration_tokens": 1024}
CALIBRATION = {"synthetic": "kv_retrieval", "words": 1024}


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """The demo model's baseline, gptq4 and rtn4 variants (quantized once for the module)."""
    d = tmp_path_factory.mktemp("gptq")
    write_variant("demo", "baseline", DEMO_MODEL, d / "baseline.json")
    calibration = held_out_calibration(CALIBRATION, OPTIONS["calibration_samples"], d)
    for t in ("gptq4", "rtn4"):
        write_technique_variant("demo", t, t, d / "baseline.json", d / t, d / f"{t}.json", OPTIONS, calibration)
    return d


def layer_inputs(model, texts: list[str], tokenizer) -> dict[str, torch.Tensor]:
    """Inputs of every linear layer of the decoder, on the unquantized model."""
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = [
        m.register_forward_pre_hook(
            lambda m, a, n=name: inputs.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1]))
        )
        for name, m in model.model.layers.named_modules()
        if isinstance(m, torch.nn.Linear)
    ]
    with torch.no_grad():
        for t in texts:
            model(**tokenizer(t, return_tensors="pt", truncation=True, max_length=512))
    for h in hooks:
        h.remove()
    return {n: torch.cat(x) for n, x in inputs.items()}


def held_out_texts() -> list[str]:
    """Contexts GPTQ never saw: one row of each synthetic task from a seed neither the calibration
    (kv_retrieval, seed 10,000) nor the benchmark (seed 0) uses."""
    return [next(synthetic.generate(task, 1024, 1, seed=30_000))["context"] for task in synthetic.TASKS]


def test_gptq_reconstructs_each_layer_better_than_rounding_on_held_out_text(variants):
    """GPTQ minimizes each layer's output error on its calibration activations, so measuring it there
    would flatter it; the error is measured on activations of texts it was not fitted on."""
    base, tokenizer, _ = load_variant(variants / "baseline.json", "cpu", "float32")
    texts = held_out_texts()
    calibration = held_out_calibration(CALIBRATION, OPTIONS["calibration_samples"], variants).texts
    assert not set(texts) & set(calibration)
    inputs = layer_inputs(base, texts, tokenizer)
    quantized = {t: load_variant(variants / f"{t}.json", "cpu", "float32")[0] for t in ("gptq4", "rtn4")}
    errors = {}
    with torch.no_grad():
        for name, x in inputs.items():
            ref = base.model.layers.get_submodule(name)(x)
            errors[name] = {
                t: ((q.model.layers.get_submodule(name)(x) - ref).norm() / ref.norm()).item()
                for t, q in quantized.items()
            }
    print(json.dumps(errors, indent=1))
    for t in ("gptq4", "rtn4"):
        values = [e[t] for e in errors.values()]
        print(t, "relative output error: min", min(values), "mean", sum(values) / len(values), "max", max(values))
    print("rtn4 / gptq4: min", min(e["rtn4"] / e["gptq4"] for e in errors.values()))
    assert len(errors) == 4 * 7  # q, k, v, o, gate, up, down in each of the 4 layers
    assert all(e["rtn4"] > 0 and e["gptq4"] > 0 for e in errors.values())  # both really quantized
    assert all(e["gptq4"] < e["rtn4"] for e in errors.values()), errors


def test_variant_is_a_4bit_gptq_checkpoint_without_the_lm_head(variants):
    for t, method in (("gptq4", "gptq"), ("rtn4", "rtn")):
        variant = json.loads((variants / f"{t}.json").read_text())
        record = variant[t]
        assert (record["method"], record["bits"], record["group_size"]) == (method, 4, 128)
        assert record["weight_bytes_after"] < 0.5 * record["weight_bytes_before"]
        qc = json.loads((variants / t / "config.json").read_text())["quantization_config"]
        assert (qc["quant_method"], qc["bits"], qc["group_size"], qc["lm_head"]) == ("gptq", 4, 128, False)
        model, _, _ = load_variant(variants / f"{t}.json", "cpu")
        kinds = {n: type(m).__name__ for n, m in model.named_modules() if n.endswith(("proj", "lm_head"))}
        assert kinds.pop("lm_head") == "Linear"
        assert all(k != "Linear" for k in kinds.values()), kinds  # every other linear layer is quantized
    record = json.loads((variants / "gptq4.json").read_text())["gptq4"]
    assert record["calibration_samples"] == 16
    # the held-out rows it calibrated on, by id: the generator's stream at seed 10,000, not a scored seed
    assert record["calibration"]["ids"] == [f"kv_retrieval-1024-10000-{i}" for i in range(16)]


@pytest.mark.parametrize("technique", ["gptq4", "rtn4"])
def test_quantized_demo_model_still_solves_passkey_at_1k(variants, technique, tmp_path):
    write_jsonl_atomic(tmp_path / "rows.jsonl", synthetic.generate("passkey", 1024, 4, seed=7))
    write_prompts(DEMO_MODEL, "passkey", tmp_path / "rows.jsonl", 4000, tmp_path / "prompts.jsonl")
    inference.run(variants / f"{technique}.json", tmp_path / "prompts.jsonl", tmp_path / "preds.jsonl", device="cpu")
    preds, rows = read_jsonl(tmp_path / "preds.jsonl"), read_jsonl(tmp_path / "rows.jsonl")
    correct = sum(p["prediction"].strip() == r["answers"][0] for p, r in zip(preds, rows, strict=True))
    print(technique, correct, "of", len(rows))
    assert correct >= 3


def test_a_quantized_checkpoint_is_used_instead_of_quantizing(variants, tmp_path, monkeypatch):
    def refuse(*args):
        raise AssertionError("quantized although a checkpoint was given")

    monkeypatch.setattr(get("gptq4"), "make_variant", refuse)
    checkpoint = str(variants / "gptq4")
    write_technique_variant(
        "demo", "gptq4", "gptq4", variants / "baseline.json", tmp_path / "w", tmp_path / "v.json", {}, None, checkpoint
    )
    variant = json.loads((tmp_path / "v.json").read_text())
    assert variant["weights"] == str((variants / "gptq4").resolve())
    assert variant["gptq4"]["differs_from_base"] == []  # the demo model's own tokenizer, template and EOS
    assert json.loads((tmp_path / "w" / "checkpoint.json").read_text())["checkpoint"] == checkpoint
    model, _, _ = load_variant(tmp_path / "v.json", "cpu")
    assert type(model.model.layers[0].mlp.down_proj).__name__ != "Linear"  # loaded as a quantized layer
    # a checkpoint stands for the technique on the base model only: never made from another variant
    with pytest.raises(models.ModelError, match="technique of the base model"):
        write_technique_variant(
            "demo", "x+gptq4", "gptq4", tmp_path / "v.json", tmp_path / "w2", tmp_path / "v2.json", {}, None, checkpoint
        )


def test_a_group_size_that_does_not_divide_a_layer_is_refused_before_quantizing(variants, tmp_path):
    from lcopt.techniques.prune import PruneTarget, prune, random_scores

    model, tokenizer, _ = load_variant(variants / "baseline.json", "cpu", "float32")
    prune(model, random_scores(model), PruneTarget(hidden=0.75, intermediate=0.5))  # hidden 192
    model.save_pretrained(tmp_path / "pruned")
    tokenizer.save_pretrained(tmp_path / "pruned")
    write_variant("demo", "prune", str(tmp_path / "pruned"), tmp_path / "prune.json")
    with pytest.raises(ValueError, match=r"group_size 128 does not divide the input size of .*q_proj \(192\)"):
        write_technique_variant(
            "demo", "prune+gptq4", "gptq4", tmp_path / "prune.json", tmp_path / "w", tmp_path / "v.json", OPTIONS
        )
    assert not (tmp_path / "w").exists() and not (tmp_path / "v.json").exists()


def test_pruning_to_a_multiple_of_the_group_size_gives_a_runnable_4bit_model(variants, tmp_path):
    from lcopt.techniques.prune import PruneTarget, prune, random_scores

    model, tokenizer, _ = load_variant(variants / "baseline.json", "cpu", "float32")
    target = PruneTarget(hidden=0.75, intermediate=0.643, multiple_of=64)
    prune(model, random_scores(model), target)
    assert (model.config.hidden_size, model.config.intermediate_size) == (192, 320)
    model.save_pretrained(tmp_path / "pruned")
    tokenizer.save_pretrained(tmp_path / "pruned")
    write_variant("demo", "prune", str(tmp_path / "pruned"), tmp_path / "prune.json")
    options = OPTIONS | {"group_size": 64}
    write_technique_variant(
        "demo", "prune+rtn4", "rtn4", tmp_path / "prune.json", tmp_path / "w", tmp_path / "v.json", options
    )
    quantized, _, _ = load_variant(tmp_path / "v.json", "cpu")
    with torch.no_grad():
        logits = quantized(input_ids=torch.arange(5, 200)[None]).logits  # the CPU int4 kernel accepts every layer
    assert logits.shape[:2] == (1, 195) and torch.isfinite(logits).all()
