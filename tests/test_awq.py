"""awq4 on the demo model: AWQ through GPTQModel quantizes on a CPU, the variant is a standard AWQ
checkpoint that `from_pretrained` loads, and its outputs stay close to the unquantized model's."""

import json

import pytest
import torch

from lcopt.data import held_out_calibration
from lcopt.models import DEMO_MODEL, load_variant, write_technique_variant, write_variant

# Few, short calibration texts: the scale search is a forward pass per candidate scale and layer, slow
# on a loaded CPU (the config's 16 x 1,024 tokens took minutes per layer on 2 shared cores).
OPTIONS = {"group_size": 64, "calibration_samples": 4, "calibration_tokens": 256}
CALIBRATION = {"synthetic": "kv_retrieval", "words": 1024}


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    d = tmp_path_factory.mktemp("awq")
    write_variant("demo", "baseline", DEMO_MODEL, d / "baseline.json")
    calibration = held_out_calibration(CALIBRATION, OPTIONS["calibration_samples"], d)
    write_technique_variant(
        "demo", "awq4", "awq4", d / "baseline.json", d / "awq4", d / "awq4.json", OPTIONS, calibration
    )
    return d


def test_variant_is_a_4bit_awq_checkpoint_without_the_lm_head(variants):
    variant = json.loads((variants / "awq4.json").read_text())
    record = variant["awq4"]
    assert (record["method"], record["bits"], record["group_size"], record["zero_point"]) == ("awq", 4, 64, True)
    assert record["calibration_samples"] == 4 and record["device"] == "cpu"
    assert record["weight_bytes_after"] < 0.5 * record["weight_bytes_before"]
    assert variant["options"]["awq4"] == OPTIONS  # what the load hook gets
    qc = json.loads((variants / "awq4" / "config.json").read_text())["quantization_config"]
    assert (qc["quant_method"], qc["bits"], qc["group_size"]) == ("awq", 4, 64)
    model, _, _ = load_variant(variants / "awq4.json", "cpu")
    kinds = {n: type(m).__name__ for n, m in model.named_modules() if n.endswith(("proj", "lm_head"))}
    assert kinds.pop("lm_head") == "Linear"
    assert all(k != "Linear" for k in kinds.values()), kinds  # every other linear layer is quantized


def test_quantized_logits_stay_close_and_greedy_answers_hold(variants, tmp_path):
    """Next-token logits on text AWQ did not calibrate on within 10% of the unquantized model's (relative
    L2; measured 5.0%), and the quantized model still answers passkey at 1K words."""
    from lcopt import inference, synthetic
    from lcopt.io import read_jsonl, write_jsonl_atomic
    from lcopt.prompts import write_prompts

    base, tokenizer, _ = load_variant(variants / "baseline.json", "cpu", "float32")
    quantized, _, _ = load_variant(variants / "awq4.json", "cpu", "float32")
    text = held_out_calibration(CALIBRATION, 5, variants).texts[4]  # a text AWQ did not calibrate on
    ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=512)["input_ids"]
    with torch.no_grad():
        ref, got = base(input_ids=ids).logits, quantized(input_ids=ids).logits
    relative = ((got - ref).norm() / ref.norm()).item()
    print("relative logit error", relative)
    assert torch.isfinite(got).all() and 0 < relative < 0.1
    write_jsonl_atomic(tmp_path / "rows.jsonl", synthetic.generate("passkey", 1024, 2, seed=7))
    write_prompts(DEMO_MODEL, "passkey", tmp_path / "rows.jsonl", 4000, tmp_path / "prompts.jsonl")
    inference.run(variants / "awq4.json", tmp_path / "prompts.jsonl", tmp_path / "preds.jsonl", device="cpu")
    preds, rows = read_jsonl(tmp_path / "preds.jsonl"), read_jsonl(tmp_path / "rows.jsonl")
    assert [p["prediction"].strip() for p in preds] == [r["answers"][0] for r in rows]


@pytest.mark.device
def test_awq_variant_runs_on_a_gpu_kernel(variants):
    """For the lead's GPU run: the CPU-made checkpoint loads on CUDA with a GPU AWQ kernel."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model, tokenizer, _ = load_variant(variants / "awq4.json", "cuda", "float16")
    kinds = {type(m).__name__ for n, m in model.named_modules() if n.endswith("down_proj")}
    assert kinds and not kinds & {"Linear", "AwqTorchLinear"}, kinds
    ids = tokenizer("the code for", return_tensors="pt")["input_ids"].cuda()
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
