"""Every stage of the default run that computes something, small, in this process: `python
tests/determinism_stages.py <out_dir>` writes each stage's output under `out_dir` and prints, as JSON, a
sha256 of each (tests/test_determinism.py runs it in two fresh processes and compares).

The stages use one torch thread, as the workflow's rules do (a result depends on the thread count)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from lcopt import synthetic
from lcopt.data import Calibration
from lcopt.inference import READINGS, run
from lcopt.io import read_jsonl, write_jsonl_atomic
from lcopt.models import DEMO_MODEL, write_technique_variant, write_variant
from lcopt.prompts import write_prompts
from lcopt.techniques import lingua2

STAGES = ("vocabulary", "classifier", "compressed", "prune", "gptq4", "rtn4", "predictions")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(out: Path) -> dict[str, str]:
    torch.set_num_threads(1)
    digests = {}
    texts = [r["context"] for r in synthetic.generate("kv_retrieval", 256, 4, seed=10_000)]
    digests["vocabulary"] = hashlib.sha256("\n".join(lingua2.wordpiece_vocabulary(texts, 200)).encode()).hexdigest()

    cfg = lingua2.TrainConfig(steps=3, batch_size=4, tokenizer_rows=40, eval_rows=1, eval_words=128, threads=1)
    classifier = out / lingua2.DEMO_DIRNAME
    summary = lingua2.train(classifier, cfg)
    summary.pop("train_seconds")
    digests["classifier"] = hashlib.sha256(
        "".join(
            [sha256(classifier / "model.safetensors"), sha256(classifier / "tokenizer.json"), json.dumps(summary)]
        ).encode()
    ).hexdigest()
    rows = list(synthetic.generate("passkey", 300, 2, seed=0))
    compressed = lingua2.compress_rows(rows, lingua2.load_compressor(classifier), rate=0.5)
    digests["compressed"] = hashlib.sha256(json.dumps([r["context"] for r in compressed]).encode()).hexdigest()

    write_variant("demo", "baseline", DEMO_MODEL, out / "baseline.json")
    calibration = Calibration(texts, {})
    prune = {"hidden": 0.75, "intermediate": 0.5, "heads": 1.0, "multiple_of": 64, "calibration_tokens": 256}
    gptq = {"group_size": 64, "desc_act": False, "calibration_tokens": 256}
    for name, options in (("prune", prune), ("gptq4", gptq), ("rtn4", gptq)):
        weights, variant = out / name, out / f"{name}.json"
        write_technique_variant("demo", name, name, out / "baseline.json", weights, variant, options, calibration)
        digests[name] = sha256(weights / "model.safetensors")

    data = out / "passkey.jsonl"
    write_jsonl_atomic(data, list(synthetic.generate("passkey", 300, 2, seed=0)))
    write_prompts(DEMO_MODEL, "passkey", data, 4000, out / "prompts.jsonl")
    run(out / "gptq4.json", out / "prompts.jsonl", out / "predictions.jsonl", device="cpu")
    measured = [{k: v for k, v in row.items() if k not in READINGS} for row in read_jsonl(out / "predictions.jsonl")]
    digests["predictions"] = hashlib.sha256(json.dumps(measured, sort_keys=True).encode()).hexdigest()
    return digests


if __name__ == "__main__":
    result = main(Path(sys.argv[1]))
    print(json.dumps(result), file=sys.__stdout__)
