"""Prompt building (`lcopt.prompts`): LongBench's middle truncation inside a token budget that counts
the chat template, on real LongBench rows and real tokenizers from ../shared/assets, plus the demo
model's word-level tokenizer on synthetic rows."""

import copy
import json
from functools import cache
from pathlib import Path

import pytest
from conftest import shared_tokenizer

from lcopt import synthetic
from lcopt.prompts import build_prompt, fill_template, kept_spans, middle_truncate
from lcopt.tasks import TASKS, get_task
from lcopt.tokenization import has_chat_template

HEAD = "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n"
TAIL = "\n\nNow, write a one-page summary of all the news.\n\nSummary:"
USER_HEADER = "<|start_header_id|>user<|end_header_id|>\n\n"
ASSISTANT_HEADER = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
HUGE = 10**7  # a budget no prompt reaches


@cache
def _rows(path: str) -> tuple[dict, ...]:
    with open(path, encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


@pytest.fixture
def multi_news(shared_assets) -> tuple[dict, ...]:
    path = shared_assets / "longbench" / "multi_news.jsonl"
    if not path.is_file():
        pytest.skip(f"LongBench multi_news not found at {path}")
    return _rows(str(path))


@pytest.fixture
def long_rows(multi_news) -> list[dict]:
    """The three rows with the longest contexts (each well over 8K Llama tokens)."""
    return sorted(multi_news, key=lambda r: len(r["context"]), reverse=True)[:3]


@pytest.fixture
def minitron_tokenizer(shared_assets):
    return shared_tokenizer(shared_assets, "nvidia--Llama-3.1-Minitron-4B-Width-Base")


def _n(tokenizer, text: str, add_special_tokens: bool) -> int:
    return len(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def _common_prefix(a: str, b: str) -> int:
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return i


def _user_part(text: str) -> str:
    """The user message of a Llama-3.1 chat prompt."""
    assert text.count(USER_HEADER) == 1 and text.endswith(ASSISTANT_HEADER)
    return text.split(USER_HEADER, 1)[1][: -len(ASSISTANT_HEADER)]


# --- real LongBench rows, real Llama-3.1 tokenizer -------------------------------------------------


@pytest.mark.parametrize("budget", [1024, 4096])
def test_truncated_llama_prompt_fits_and_keeps_both_ends(llama_tokenizer, long_rows, budget):
    tok = llama_tokenizer
    task = get_task("multi_news")
    for row in long_rows:
        ctx = row["context"]
        p = build_prompt(tok, task, row, budget)
        ids = tok(p.text, add_special_tokens=p.add_special_tokens)["input_ids"]

        # the budget is a hard limit on what reaches the model, and it is used almost fully
        assert budget - 16 <= len(ids) <= budget
        assert p.n_tokens == len(ids)
        assert p.truncated is True
        assert p.n_tokens_untruncated >= 2 * budget  # the sample really was much longer

        # the chat template was applied, once, with no second BOS added by the tokenizer
        assert p.chat_template is True and p.add_special_tokens is False
        assert p.text.startswith("<|begin_of_text|>") and p.text.count("<|begin_of_text|>") == 1
        assert ids[0] == tok.convert_tokens_to_ids("<|begin_of_text|>")
        assert ids.count(ids[0]) == 1
        assert "<|start_header_id|>user" in p.text
        assert p.text.endswith(ASSISTANT_HEADER)

        # head (task instruction) and tail (final instruction) are both kept
        assert "You are given several news passages" in p.text
        assert "Now, write a one-page summary of all the news." in p.text
        assert p.text.endswith("Summary:" + ASSISTANT_HEADER)

        # the middle of the context is gone
        mid = len(ctx) // 2
        assert ctx[mid : mid + 200] not in p.text
        assert ctx[mid : mid + 200] in build_prompt(tok, task, row, HUGE).text

        # the kept head is the start of the templated untruncated prompt, verbatim
        full = build_prompt(tok, task, row, HUGE)
        assert not full.truncated and full.n_tokens == p.n_tokens_untruncated
        head_len = full.text.index(HEAD) + len(HEAD) + 200
        assert full.text[head_len - 200 : head_len] == ctx[:200]
        assert p.text.startswith(full.text[:head_len])
        # ...and the kept tail is the end of it, verbatim
        tail_len = len(TAIL + ASSISTANT_HEADER) + 200
        assert full.text.endswith(ctx[-200:] + TAIL + ASSISTANT_HEADER)
        assert p.text.endswith(full.text[-tail_len:])


@pytest.mark.parametrize("budget", [1024, 4096])
def test_truncation_keeps_equal_halves_of_the_user_text(llama_tokenizer, long_rows, budget):
    """LongBench keeps the first and the last half of the budget: check the two kept pieces are
    (almost) the same number of tokens and together fill what the template leaves."""
    tok = llama_tokenizer
    task = get_task("multi_news")
    row = long_rows[0]
    p = build_prompt(tok, task, row, budget)
    user_full = task.template.format(context=row["context"], input=row["input"])
    user_kept = _user_part(p.text)
    assert user_full.startswith(user_kept[:1000]) and user_kept != user_full

    head = _common_prefix(user_kept, user_full)
    tail = _common_prefix(user_kept[::-1], user_full[::-1])
    assert head + tail >= len(user_kept) - 8  # at most a few characters at the cut are neither
    n_head = _n(tok, user_kept[:head], False)
    n_tail = _n(tok, user_kept[len(user_kept) - tail :], False)
    overhead = p.n_tokens - _n(tok, user_kept, False)
    assert 20 <= overhead <= 64  # Llama-3.1's system header and user/assistant headers
    room = budget - overhead
    assert abs(n_head - n_tail) <= 4
    assert abs(n_head - room // 2) <= 8 and abs(n_tail - room // 2) <= 8


def test_no_truncation_when_the_budget_is_large(llama_tokenizer, multi_news):
    tok = llama_tokenizer
    task = get_task("multi_news")
    for row in multi_news[:5]:
        p = build_prompt(tok, task, row, 200_000)
        user_text = task.template.format(context=row["context"], input=row["input"])
        assert p.truncated is False
        assert row["context"] in p.text
        assert _user_part(p.text) == user_text
        assert p.n_tokens == p.n_tokens_untruncated == _n(tok, p.text, p.add_special_tokens)
        assert p.n_tokens > _n(tok, user_text, False)  # the template's tokens are counted
        # a budget of exactly the prompt's length is still "fits"; one less truncates
        exact = build_prompt(tok, task, row, p.n_tokens)
        assert exact.truncated is False and exact.text == p.text
        assert build_prompt(tok, task, row, p.n_tokens - 1).truncated is True


def test_tokenizer_without_chat_template_counts_bos(minitron_tokenizer, long_rows):
    tok = minitron_tokenizer
    assert not has_chat_template(tok)
    task = get_task("multi_news")
    row = long_rows[0]
    budget = 2048
    p = build_prompt(tok, task, row, budget)
    assert p.chat_template is False
    assert p.add_special_tokens is True
    assert p.truncated is True
    ids = tok(p.text, add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.bos_token_id == 128000  # the BOS is there and counted
    assert p.n_tokens == len(ids)
    assert budget - 16 <= len(ids) <= budget
    # plain task template: no chat markup, both ends kept
    assert "<|start_header_id|>" not in p.text and "<|begin_of_text|>" not in p.text
    assert p.text.startswith(HEAD + row["context"][:200])
    assert p.text.endswith(row["context"][-200:] + TAIL)
    # the untruncated count includes the BOS too
    user_text = task.template.format(context=row["context"], input=row["input"])
    assert p.n_tokens_untruncated == _n(tok, user_text, False) + 1


def test_middle_truncate_keeps_first_and_last_half(llama_tokenizer, long_rows):
    tok = llama_tokenizer
    ctx = long_rows[1]["context"]
    enc = tok(ctx, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    assert len(ids) > 4000
    for max_tokens in (1000, 1001):
        half = max_tokens // 2
        out = middle_truncate(tok, ctx, max_tokens)
        head = tok.decode(ids[:half])
        tail = tok.decode(ids[len(ids) - half :])
        assert out == head + tail
        # the pieces are the original text up to / from the cut, found through the offsets
        assert head == ctx[: offsets[half - 1][1]]
        assert tail == ctx[offsets[len(ids) - half][0] :]
        assert tok(head, add_special_tokens=False)["input_ids"] == ids[:half]
        assert tok(tail, add_special_tokens=False)["input_ids"] == ids[len(ids) - half :]
        assert abs(_n(tok, out, False) - 2 * half) <= 2
    # short enough: the text comes back unchanged
    assert middle_truncate(tok, ctx, len(ids)) == ctx
    assert middle_truncate(tok, ctx[:500], 10_000) == ctx[:500]


def test_budget_too_small_for_the_template(llama_tokenizer, multi_news):
    tok = llama_tokenizer
    task = get_task("multi_news")
    row = multi_news[0]
    full = build_prompt(tok, task, row, HUGE)
    user_text = task.template.format(context=row["context"], input=row["input"])
    overhead = full.n_tokens - _n(tok, user_text, False)
    for budget in (1, 10, overhead, overhead + 1):
        with pytest.raises(ValueError, match="leaves no room"):
            build_prompt(tok, task, row, budget)
    p = build_prompt(tok, task, row, overhead + 2)  # the smallest budget that leaves 2 tokens
    assert p.truncated and p.n_tokens <= overhead + 2


# --- the content the support metrics read ------------------------------------------------------


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_fill_template_is_str_format_and_finds_the_fields(task_name):
    template = get_task(task_name).template
    fields = {"context": "CTX {not a field} ctx", "input": "the question?"}
    text, spans = fill_template(template, **fields)
    assert text == template.format(**fields)
    named = [name for name in ("context", "input") if "{" + name + "}" in template]  # summaries have no input
    assert "context" in named and [text[a:b] for a, b in spans] == [fields[name] for name in named]


def test_content_is_the_context_and_question_not_the_templates(llama_tokenizer, multi_news):
    """Issue 21: support was taken against the whole prompt, so Llama-3.1's chat header ("Cutting
    Knowledge Date: December 2023") supported a hallucinated "December 2023"."""
    from lcopt.metrics import unsupported_entity_rate, unsupported_token_rate

    tok = llama_tokenizer
    task = get_task("hotpotqa")
    row = {"_id": "x", "context": multi_news[0]["context"][:2000], "input": "Who led the protest?"}
    p = build_prompt(tok, task, row, HUGE)
    assert "Cutting Knowledge Date: December 2023" in p.text and "Answer the question" in p.text
    assert p.content == row["context"] + "\n\n" + row["input"]
    assert unsupported_entity_rate("December 2023", p.text) == 0.0  # the template's words supported it
    assert unsupported_entity_rate("December 2023", p.content) == 1.0
    assert unsupported_token_rate("Cutting Knowledge", p.content) == 1.0
    # multi_news has no question: the content is the context alone
    news = build_prompt(tok, get_task("multi_news"), multi_news[0], HUGE)
    assert news.content == multi_news[0]["context"]


@pytest.mark.parametrize("budget", [1024, 4096])
def test_truncated_content_is_what_the_truncation_kept(llama_tokenizer, long_rows, budget):
    """The content of a cut prompt is the context's kept head and tail and the question, character for
    character what the model read (Llama-3.1's byte-level BPE decodes back to the text)."""
    tok = llama_tokenizer
    task = get_task("hotpotqa")
    for row in long_rows:
        row = row | {"input": "Which city hosted the protest?"}
        p = build_prompt(tok, task, row, budget)
        assert p.truncated
        user_text, fields = fill_template(task.template, context=row["context"], input=row["input"])
        kept = kept_spans(tok, user_text, budget - (p.n_tokens_untruncated - _n(tok, user_text, False)))
        (head_start, head_end), (tail_start, tail_end) = kept
        assert head_start == 0 and tail_end == len(user_text)
        # the spans are exactly the user text that reached the model
        assert user_text[:head_end] + user_text[tail_start:] == _user_part(p.text)
        c0 = fields[0][0]
        head, tail = row["context"][: head_end - c0], row["context"][tail_start - c0 :]
        assert p.content == f"{head}\n\n{tail}\n\n{row['input']}"
        assert row["context"].startswith(head[:200]) and len(head) > 200 and len(tail) > 200
        mid = len(row["context"]) // 2
        assert row["context"][mid : mid + 200] not in p.content  # the cut middle is not support
        assert "Answer the question" not in p.content and "<|start_header_id|>" not in p.content


def test_demo_tokenizer_content_of_a_truncated_prompt(demo_tokenizer):
    """A word-level tokenizer (its decoder spaces words, lower-cases): the offsets still find the cut."""
    tok = demo_tokenizer
    task = get_task("passkey")
    row = next(synthetic.generate("passkey", 700, 1, seed=5))
    p = build_prompt(tok, task, row, 300)
    assert p.truncated
    words = p.content.split()
    kept = tok(p.text, add_special_tokens=False)["input_ids"]
    content_ids = tok(p.content, add_special_tokens=False)["input_ids"]
    assert 200 < len(content_ids) < 300 and len(words) == len(content_ids)
    assert p.content.endswith(row["input"]) and row["context"].startswith(p.content.split("\n\n")[0])
    # every content word is a word of what the model read, in order
    text_ids = iter(kept)
    assert all(any(i == j for j in text_ids) for i in content_ids)


def test_prompt_rows_carry_the_content(tmp_path):
    from lcopt.io import read_jsonl, write_jsonl_atomic
    from lcopt.models import DEMO_MODEL
    from lcopt.prompts import write_prompts

    rows = list(synthetic.generate("passkey", 200, 2, seed=0))
    write_jsonl_atomic(tmp_path / "rows.jsonl", rows)
    write_prompts(DEMO_MODEL, "passkey", tmp_path / "rows.jsonl", 4000, tmp_path / "p.jsonl")
    for row, prompt in zip(rows, read_jsonl(tmp_path / "p.jsonl"), strict=True):
        assert not prompt["truncated"] and prompt["content"] == row["context"] + "\n\n" + row["input"]
        assert "<|assistant|>" in prompt["prompt"] and "<|assistant|>" not in prompt["content"]


# --- the demo model's word-level tokenizer on synthetic rows ---------------------------------------


@pytest.fixture(scope="module")
def demo_tokenizer():
    from lcopt.demo_model import build_tokenizer

    return build_tokenizer()


@pytest.mark.parametrize("task_name", synthetic.TASKS)
def test_demo_tokenizer_covers_synthetic_prompts_and_answers(demo_tokenizer, task_name):
    tok = demo_tokenizer
    task = get_task(task_name)
    unk = tok.unk_token_id
    assert unk is not None
    for row in synthetic.generate(task_name, 700, 4, seed=5):
        p = build_prompt(tok, task, row, 4000)
        assert not p.truncated and p.chat_template and not p.add_special_tokens
        ids = tok(p.text, add_special_tokens=p.add_special_tokens)["input_ids"]
        assert unk not in ids, tok.convert_ids_to_tokens(ids)[:50]
        assert len(ids) == p.n_tokens
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        # every context word is its own token
        assert len(tok(row["context"], add_special_tokens=False)["input_ids"]) == len(row["context"].split())
        for answer in row["answers"]:
            answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
            assert unk not in answer_ids
            assert tok.decode(answer_ids) == answer


def test_demo_tokenizer_sees_an_unknown_word(demo_tokenizer):
    """Guard for the test above: a word outside the synthetic vocabulary does map to <unk>."""
    ids = demo_tokenizer("the river zzyzx", add_special_tokens=False)["input_ids"]
    assert ids[-1] == demo_tokenizer.unk_token_id


def test_demo_budget_too_small(demo_tokenizer):
    row = next(synthetic.generate("passkey", 200, 1, seed=0))
    with pytest.raises(ValueError, match="leaves no room"):
        build_prompt(demo_tokenizer, get_task("passkey"), row, 3)


@pytest.mark.parametrize("task_name", synthetic.TASKS)
def test_demo_truncated_prompt_fits(demo_tokenizer, task_name):
    tok = demo_tokenizer
    for row in synthetic.generate(task_name, 700, 3, seed=5):
        p = build_prompt(tok, get_task(task_name), row, 300)
        assert p.truncated
        ids = tok(p.text, add_special_tokens=p.add_special_tokens)["input_ids"]
        assert len(ids) == p.n_tokens and 300 - 16 <= p.n_tokens <= 300
        assert p.text.rstrip().endswith("<|assistant|>")


def test_demo_truncated_prompt_has_no_unk(demo_tokenizer):
    tok = demo_tokenizer
    assert middle_truncate(tok, "the river is old and the tower is warm", 4) == "the river is warm"
    for task_name in synthetic.TASKS:
        for row in synthetic.generate(task_name, 700, 3, seed=5):
            p = build_prompt(tok, get_task(task_name), row, 300)
            ids = tok(p.text, add_special_tokens=p.add_special_tokens)["input_ids"]
            assert tok.unk_token_id not in ids


# --- LongBench's own templates -------------------------------------------------------------------

LONGBENCH_CONFIG = json.loads((Path(__file__).parent / "data" / "longbench_config.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("task", sorted(LONGBENCH_CONFIG["dataset2prompt"]))
def test_longbench_templates_are_the_official_text_byte_for_byte(task):
    """tasks.py's template, generation budget and metric for every LongBench task lcopt supports equal
    LongBench's own config (tests/data/longbench_config.json names the commit), typos included."""
    from lcopt.tasks import LONGBENCH

    official = LONGBENCH_CONFIG["dataset2prompt"][task]
    assert LONGBENCH[task].template.encode() == official.encode()
    assert LONGBENCH[task].max_new_tokens == LONGBENCH_CONFIG["dataset2maxlen"][task]
    assert f"{LONGBENCH[task].metric}_score" == LONGBENCH_CONFIG["dataset2metric"][task]


def test_every_longbench_task_of_lcopt_is_checked_against_the_official_config():
    from lcopt.tasks import LONGBENCH

    assert set(LONGBENCH) == set(LONGBENCH_CONFIG["dataset2prompt"])
    assert "asconcisely" in LONGBENCH["narrativeqa"].template  # LongBench's typo, kept on purpose


def test_compressed_prompts_record_the_ratio_in_the_model_s_own_tokens(tmp_path):
    """The demo tokenizer has one token per word, so the model-token counts are word counts (hand-checkable);
    LLMLingua's own cl100k counts are carried unchanged beside them."""
    from lcopt.io import read_jsonl, write_jsonl_atomic
    from lcopt.models import DEMO_MODEL
    from lcopt.prompts import write_prompts

    rows = list(synthetic.generate("kv_retrieval", 200, 2, seed=0))
    compressed = [
        r
        | {
            "context": " ".join(r["context"].split()[::4]),  # every fourth word
            "original_tokens": 300,
            "compressed_tokens": 100,
            "compression_ratio": 3.0,
            "compression_seconds": 0.5,
            "compression_device": "cpu",
        }
        for r in rows
    ]
    write_jsonl_atomic(tmp_path / "rows.jsonl", rows)
    write_jsonl_atomic(tmp_path / "compressed.jsonl", compressed)
    write_prompts(
        DEMO_MODEL,
        "kv_retrieval",
        tmp_path / "compressed.jsonl",
        4000,
        tmp_path / "p.jsonl",
        original_rows_jsonl=tmp_path / "rows.jsonl",
    )
    for row, prompt in zip(rows, read_jsonl(tmp_path / "p.jsonl"), strict=True):
        n_words = len(row["context"].split())
        kept = len(row["context"].split()[::4])
        assert (prompt["model_original_tokens"], prompt["model_compressed_tokens"]) == (n_words, kept)
        assert prompt["model_compression_ratio"] == pytest.approx(n_words / kept)
        assert (prompt["compression_ratio"], prompt["compression_seconds"], prompt["compression_device"]) == (
            3.0,
            0.5,
            "cpu",
        )
    write_prompts(DEMO_MODEL, "kv_retrieval", tmp_path / "rows.jsonl", 4000, tmp_path / "full.jsonl")
    assert all("model_compression_ratio" not in p for p in read_jsonl(tmp_path / "full.jsonl"))
    write_jsonl_atomic(tmp_path / "other.jsonl", rows[:1])
    with pytest.raises(KeyError, match=r"is not in .*other\.jsonl"):
        write_prompts(
            DEMO_MODEL,
            "kv_retrieval",
            tmp_path / "compressed.jsonl",
            4000,
            tmp_path / "x.jsonl",
            original_rows_jsonl=tmp_path / "other.jsonl",
        )


# --- per-variant prompts: a released checkpoint's own tokenizer, template and context -----------------


def test_a_checkpoint_s_shorter_context_cuts_its_prompts(shared_assets, long_rows, tmp_path):
    """Mistral-NeMo-Minitron-8B-Base has 8,192 positions where Mistral-NeMo-Instruct has 1,024,000: with the
    same config budget (127,500) its prompts are cut to 8,192 less the answer (512 for multi_news), and
    each row says so."""
    from lcopt.io import read_jsonl, write_jsonl_atomic
    from lcopt.prompts import write_prompts

    write_jsonl_atomic(tmp_path / "rows.jsonl", long_rows)
    for folder in ("nvidia--Mistral-NeMo-Minitron-8B-Base", "mistralai--Mistral-Nemo-Instruct-2407"):
        source = shared_assets / "models" / folder
        if not (source / "tokenizer.json").is_file():
            pytest.skip(f"tokenizer not found in {source}")
        write_prompts(str(source), "multi_news", tmp_path / "rows.jsonl", 127_500, tmp_path / f"{folder}.jsonl")
    minitron = read_jsonl(tmp_path / "nvidia--Mistral-NeMo-Minitron-8B-Base.jsonl")
    instruct = read_jsonl(tmp_path / "mistralai--Mistral-Nemo-Instruct-2407.jsonl")
    assert {p["max_input_tokens"] for p in minitron} == {8192 - 512}
    assert {p["max_position_embeddings"] for p in minitron} == {8192}
    assert all(p["truncated"] and p["n_tokens"] <= 8192 - 512 for p in minitron)  # every row is over 8K tokens
    assert all(p["n_tokens"] > 8192 for p in instruct)
    assert {(p["max_input_tokens"], p["truncated"]) for p in instruct} == {(127_500, False)}
    # the Base model has no chat template: the plain task template; the instruct model's has [INST]
    assert not any(p["chat_template"] or "[INST]" in p["prompt"] for p in minitron)
    assert all(p["chat_template"] and "[INST]" in p["prompt"] for p in instruct)
    assert {p["tokenizer_sha256"] for p in minitron}.isdisjoint({p["tokenizer_sha256"] for p in instruct})


def test_input_budget_is_the_smaller_of_config_and_context():
    from lcopt.prompts import input_budget

    assert input_budget(127_500, 131_072, 512) == 127_500
    assert input_budget(127_500, 8192, 512) == 7680
    assert input_budget(4000, None, 32) == 4000  # a config without max_position_embeddings


def test_tokenizer_fingerprint_tells_template_and_vocabulary_apart(llama_tokenizer, minitron_tokenizer):
    """Llama-3.1-8B-Instruct and Minitron-4B-Width-Base share tokenizer.json but not the chat template."""
    from lcopt.tokenization import tokenizer_sha256

    assert llama_tokenizer.get_vocab() == minitron_tokenizer.get_vocab()
    assert tokenizer_sha256(llama_tokenizer) != tokenizer_sha256(minitron_tokenizer)
    same = copy.deepcopy(minitron_tokenizer)
    assert tokenizer_sha256(same) == tokenizer_sha256(minitron_tokenizer)
    same.add_tokens(["zzzunseen"])
    assert tokenizer_sha256(same) != tokenizer_sha256(minitron_tokenizer)


def test_models_and_prompts_do_not_import_each_other():
    """The tokenizer helpers both need live in lcopt.tokenization; prompts may use models, not the reverse."""
    from lcopt.provenance import _imported_lcopt_modules, _module_file

    assert "lcopt.prompts" not in _imported_lcopt_modules(_module_file("lcopt.models"))
    assert "lcopt.tokenization" in _imported_lcopt_modules(_module_file("lcopt.models"))
    assert "lcopt.tokenization" in _imported_lcopt_modules(_module_file("lcopt.prompts"))
