"""Keep rates of lcopt's demo LLMLingua-2 classifier, trained and untrained (docs/techniques.md, lingua2).

Trains the classifier exactly as the workflow does (`TrainConfig(seed=...)`), then runs LLMLingua-2
(llmlingua, through `lcopt.techniques.lingua2.compress_context`) at `--rate` on held-out rows
(`held_out_rows`: 8 rows of each task at 1,024 words, a seed the training stream never uses) with the
trained network and with the same network before training, and prints the share of fact words and of
filler words each keeps, one JSON line each.

    python tools/lingua2_demo_eval.py --seed 0 --out /tmp/lcopt-demo-lingua2-bert-base-multilingual-cased
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lcopt.techniques.lingua2 import (
    DEMO_DIRNAME,
    TrainConfig,
    held_out_rows,
    keep_rates,
    labelled_rows,
    load_compressor,
    new_classifier,
    train,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--out", type=Path, help=f"where to save the trained classifier (a name ending {DEMO_DIRNAME})")
    args = parser.parse_args()
    cfg = TrainConfig(seed=args.seed, eval_rate=args.rate)
    rows = held_out_rows(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        trained = args.out or Path(tmp) / DEMO_DIRNAME
        summary = train(trained, cfg)
        print(
            json.dumps(
                {
                    "classifier": "trained",
                    "train_seconds": summary["train_seconds"],
                    **keep_rates(load_compressor(trained), rows, args.rate),
                }
            ),
            flush=True,
        )
        # the same network (same seed, tokenizer and initialisation) before any training step
        texts = [r["context"] for r in labelled_rows(cfg.tokenizer_rows, f"tokenizer-{cfg.seed}", 64, 512)]
        tokenizer, model = new_classifier(
            texts, cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size, 0.0, cfg.seed
        )
        untrained = Path(tmp) / "untrained" / DEMO_DIRNAME
        tokenizer.save_pretrained(untrained)
        model.save_pretrained(untrained)
        print(json.dumps({"classifier": "untrained", **keep_rates(load_compressor(untrained), rows, args.rate)}))


if __name__ == "__main__":
    main()
