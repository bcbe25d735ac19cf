"""The support metrics' gold floor on real LongBench rows, and committed predictions' rates beside it
(docs/metrics.md, "Support").

For every row of `$LCOPT_SHARED_ASSETS/longbench/multi_news.jsonl` the prompt is built as the prompts
stage builds it (task template, middle truncation to `--max-input-tokens`, the tokenizer's chat
template), and the gold summary's `unsupported_token_rate` and `unsupported_entity_rate` are measured
against the prompt's `content` with the template's words neutral (what the score stage reads) and, for
comparison, against the whole
prompt text (what it read before issue 21: templates included). Each `--predictions` file (a committed
`.jsonl` or `.jsonl.gz`) gets the same two figures over its finished rows. hotpotqa's file there has
answers but no contexts: for it the script counts the gold answers that have an entity at all.

It imports whichever lcopt comes first on the path, so an older checkout measures the old rules:

  python tools/support_floor.py --tokenizer DIR --max-input-tokens 7680 --predictions FILE.jsonl.gz
  PYTHONPATH=/path/to/old/checkout/src python tools/support_floor.py ...   # the old rules
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "src"))  # after PYTHONPATH: an older lcopt given there wins

from lcopt.metrics import entities, unsupported_entity_rate, unsupported_token_rate  # noqa: E402
from lcopt.prompts import build_prompt  # noqa: E402
from lcopt.tasks import get_task  # noqa: E402

try:
    from lcopt.metrics import Source  # indexes a source once for several texts
except ImportError:  # an lcopt from before issue 21 takes the text itself
    Source = str

ASSETS = Path(os.environ.get("LCOPT_SHARED_ASSETS", REPO.parent / "shared" / "assets")) / "longbench"


def read_rows(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mean(values) -> str:
    values = [v for v in values if v is not None]
    return f"{100 * statistics.fmean(values):5.1f} (n={len(values)})" if values else "  —"


def rates(texts: dict[str, str], sources: dict) -> str:
    ids = [i for i in texts if i in sources]
    token = mean(unsupported_token_rate(texts[i], sources[i]) for i in ids)
    entity = mean(unsupported_entity_rate(texts[i], sources[i]) for i in ids)
    return f"token {token}  entity {entity}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="a Hugging Face tokenizer directory")
    parser.add_argument("--max-input-tokens", type=int, required=True)
    parser.add_argument("--predictions", nargs="*", default=[], type=Path)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    task = get_task("multi_news")
    rows = read_rows(ASSETS / "multi_news.jsonl")
    prompts = {r["_id"]: build_prompt(tokenizer, task, r, args.max_input_tokens) for r in rows}
    whole = {i: Source(p.text) for i, p in prompts.items()}
    instructions = task.template.format(context="\n", input="\n")  # as the score stage reads it
    content = {i: Source(p.content, instructions) for i, p in prompts.items() if hasattr(p, "content")}
    truncated = sum(p.truncated for p in prompts.values())
    print(f"multi_news: {len(rows)} rows, {truncated} truncated to {args.max_input_tokens} tokens ({args.tokenizer})")
    print("unsupported rates ×100 (mean over the rows that have a value)")
    gold = {r["_id"]: r["answers"][0] for r in rows}
    print(f"  gold summaries vs content:      {rates(gold, content) if content else '(this lcopt has no content)'}")
    print(f"  gold summaries vs whole prompt: {rates(gold, whole)}")
    for path in args.predictions:
        ok = {p["_id"]: p["prediction"] for p in read_rows(path) if p["status"] == "ok"}
        print(f"  {path.name} ({len(ok)} finished):")
        if content:
            print(f"    vs content:      {rates(ok, content)}")
            print(f"    its rows' gold vs content: {rates({i: gold[i] for i in ok}, content)}")
        print(f"    vs whole prompt: {rates(ok, whole)}")
    hotpot = json.loads((ASSETS / "answers_only" / "hotpotqa.json").read_text())
    answers = [a for r in hotpot for a in r["answers"]]
    yes_no = sum(a.strip().lower() in ("yes", "no") for a in answers)
    with_entity = sum(bool(entities(a)) for a in answers)
    capitalized = sum(bool(entities(a.capitalize())) for a in answers if a.strip().lower() in ("yes", "no"))
    print(
        f"hotpotqa (no contexts here): {len(answers)} gold answers, {yes_no} yes/no; {with_entity} have an entity; "
        f"written 'Yes'/'No', {capitalized} of the yes/no answers would count as a name"
    )


if __name__ == "__main__":
    main()
