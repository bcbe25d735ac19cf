"""The datasets stage (`lcopt.data`): LongBench from a local folder or the hub's data.zip (offline,
through a stand-in for `hf_hub_download`), its checks and errors, and synthetic datasets."""

import hashlib
import json
import logging
import zipfile
from pathlib import Path

import pytest

from lcopt.data import OFFICIAL_SHA256, DataError, build_dataset, load_longbench


@pytest.fixture
def longbench_dir(shared_assets) -> Path:
    path = shared_assets / "longbench"
    if not (path / "multi_news.jsonl").is_file():
        pytest.skip(f"LongBench multi_news not found in {path}")
    return path


def _official_sha256(longbench_dir: Path, name: str) -> str:
    """The sha256 for <name>.jsonl in SHA256SUMS.official (independent of lcopt's own table)."""
    for line in (longbench_dir / "SHA256SUMS.official").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, _size, file = line.split()
            if file == f"{name}.jsonl":
                return digest
    raise AssertionError(f"{name} not in SHA256SUMS.official")


def _raw_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- local LongBench ---------------------------------------------------------------------------


def test_local_multi_news_rows_and_provenance(longbench_dir, tmp_path):
    rows, prov = load_longbench("multi_news", "local", longbench_dir, cache_dir=tmp_path)
    assert len(rows) == 200
    for row in rows:
        assert isinstance(row["input"], str)
        assert isinstance(row["context"], str) and row["context"]
        assert isinstance(row["answers"], list) and row["answers"] and all(isinstance(a, str) for a in row["answers"])
    # the rows are the file's rows, in order, values unchanged
    raw = _raw_rows(longbench_dir / "multi_news.jsonl")
    assert [r["_id"] for r in rows] == [r["_id"] for r in raw]
    assert [(r["context"], r["answers"], r["input"]) for r in rows] == [
        (r["context"], r["answers"], r["input"]) for r in raw
    ]

    official = _official_sha256(longbench_dir, "multi_news")
    assert prov["file"] == str(longbench_dir / "multi_news.jsonl")
    assert prov["sha256"] == official == OFFICIAL_SHA256["multi_news"]
    assert prov["sha256"] == hashlib.sha256((longbench_dir / "multi_news.jsonl").read_bytes()).hexdigest()
    assert prov["official_sha256_match"] is True


def _modified_copy(longbench_dir: Path, tmp_path: Path) -> Path:
    """multi_news.jsonl with the first row's answer edited, in a folder of its own."""
    lines = (longbench_dir / "multi_news.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    first = json.loads(lines[0])
    first["answers"] = ["an edited answer"]
    local = tmp_path / "local"
    local.mkdir()
    (local / "multi_news.jsonl").write_text(json.dumps(first) + "\n" + "".join(lines[1:]), encoding="utf-8")
    return local


def test_a_modified_copy_is_an_error_naming_file_digests_and_the_way_out(longbench_dir, tmp_path):
    local = _modified_copy(longbench_dir, tmp_path)
    digest = hashlib.sha256((local / "multi_news.jsonl").read_bytes()).hexdigest()
    with pytest.raises(DataError) as err:
        load_longbench("multi_news", "local", local, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert message.startswith(f"{local / 'multi_news.jsonl'}: sha256 {digest} differs from LongBench's official ")
    assert OFFICIAL_SHA256["multi_news"] in message and "longbench.local_variants" in message
    with pytest.raises(DataError, match="local_variants"):
        build_dataset(
            {"longbench": "multi_news", "samples": 2},
            {"source": "local", "local_dir": str(local), "local_variants": ["qasper"]},  # another task's
            tmp_path / "cache",
        )


def test_a_declared_local_variant_loads_with_a_warning_and_is_flagged(longbench_dir, tmp_path, caplog):
    local = _modified_copy(longbench_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="lcopt.data"):
        rows, prov = load_longbench("multi_news", "local", local, cache_dir=tmp_path / "cache", local_variant=True)
    assert len(rows) == 200
    assert rows[0]["answers"] == ["an edited answer"]
    assert prov["sha256"] == hashlib.sha256((local / "multi_news.jsonl").read_bytes()).hexdigest()
    assert prov["sha256"] != OFFICIAL_SHA256["multi_news"]
    assert prov["official_sha256_match"] is False and prov["local_variant"] is True
    assert any("differs from LongBench's official" in r.getMessage() for r in caplog.records)
    spec = {"longbench": "multi_news", "samples": 2}
    longbench = {"source": "local", "local_dir": str(local), "local_variants": ["multi_news"]}
    rows, prov = build_dataset(spec, longbench, tmp_path / "cache")
    assert len(rows) == 2 and prov["local_variant"] is True


def test_a_hub_file_that_is_not_official_is_an_error(longbench_dir, tmp_path, fake_hub):
    local = _modified_copy(longbench_dir, tmp_path)
    fake_hub.archive = _zip(tmp_path / "data.zip", {"data/multi_news.jsonl": local / "multi_news.jsonl"})
    with pytest.raises(DataError, match=r"the hub's data\.zip is not the official release"):
        load_longbench("multi_news", "hub", None, cache_dir=tmp_path / "cache", local_variant=True)


# --- hub LongBench, offline ----------------------------------------------------------------------


def _zip(path: Path, members: dict[str, Path | str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            if isinstance(content, Path):
                zf.write(content, name)
            else:
                zf.writestr(name, content)
    return path


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace huggingface_hub.hf_hub_download; `fake_hub.archive` is what it returns."""
    import huggingface_hub

    class Hub:
        def __init__(self):
            self.archive: Path | None = None
            self.calls: list = []

        def download(self, repo_id, filename, **kwargs):
            self.calls.append((repo_id, filename, kwargs))
            return str(self.archive)

    hub = Hub()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.download)
    return hub


def test_hub_path_extracts_the_member_from_data_zip(longbench_dir, tmp_path, fake_hub):
    src = longbench_dir / "multi_news.jsonl"
    other = _write_jsonl(tmp_path / "other.jsonl", [{"_id": "r0", "input": "q", "context": "c", "answers": ["a"]}])
    fake_hub.archive = _zip(
        tmp_path / "data.zip", {"data/qasper.jsonl": other, "data/multi_news.jsonl": src, "README": "x"}
    )
    cache = tmp_path / "cache" / "longbench"  # does not exist yet

    rows, prov = load_longbench("multi_news", "hub", None, cache_dir=cache)

    assert len(fake_hub.calls) == 1
    repo_id, filename, kwargs = fake_hub.calls[0]
    assert (repo_id, filename, kwargs.get("repo_type")) == ("THUDM/LongBench", "data.zip", "dataset")
    extracted = cache / "multi_news.jsonl"
    assert extracted.read_bytes() == src.read_bytes()
    assert prov == {"file": str(extracted), "sha256": OFFICIAL_SHA256["multi_news"], "official_sha256_match": True}

    local_rows, _ = load_longbench("multi_news", "local", longbench_dir, cache_dir=tmp_path / "c2")
    assert len(rows) == 200
    assert rows == local_rows


def test_hub_zip_without_the_member(tmp_path, fake_hub):
    other = _write_jsonl(tmp_path / "other.jsonl", [{"_id": "r0", "input": "q", "context": "c", "answers": ["a"]}])
    fake_hub.archive = _zip(tmp_path / "data.zip", {"data/qasper.jsonl": other})
    with pytest.raises(DataError, match=r"no member data/multi_news\.jsonl") as err:
        load_longbench("multi_news", "hub", None, cache_dir=tmp_path / "cache")
    assert str(fake_hub.archive) in str(err.value)
    assert "data/qasper.jsonl" in str(err.value)  # says what the archive does hold
    assert not (tmp_path / "cache" / "multi_news.jsonl").exists()


# --- errors --------------------------------------------------------------------------------------


def test_missing_local_file_names_the_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_longbench("qasper", "local", tmp_path, cache_dir=tmp_path / "cache")
    assert str(tmp_path / "qasper.jsonl") in str(err.value)
    assert "not found" in str(err.value)


GOOD_ROW = {"_id": "r0", "input": "q", "context": "c", "answers": ["a"]}


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        (json.dumps(GOOD_ROW) + "\n\nthis is not json {\n", 3, "Expecting value"),
        (json.dumps(GOOD_ROW) + "\n" + json.dumps(GOOD_ROW | {"_id": "r1"})[:30], 2, "Unterminated string"),
    ],
    ids=["bad-line", "truncated"],
)
def test_malformed_jsonl_names_the_file_and_line(tmp_path, text, line, why):
    path = tmp_path / "multi_news.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=f"line {line} is not valid JSON \\({why}") as err:
        load_longbench("multi_news", "local", tmp_path, cache_dir=tmp_path / "cache")
    assert str(err.value).startswith(f"{path}: ")


def test_an_empty_file_has_no_rows(tmp_path):
    (tmp_path / "qasper.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"qasper\.jsonl: no rows"):
        load_longbench("qasper", "local", tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"context": None}, "row 1 ('r1'): field 'context' has no value, expected a string"),
        ({"input": 3}, "row 1 ('r1'): field 'input' has type int, expected a string"),
        ({"_id": None}, "row 1: field '_id' has no value, expected a string"),
        ({"answers": []}, "row 1 ('r1'): answers must be a non-empty list of strings, got []"),
        ({"_id": "r0"}, "duplicate _id ['r0']"),
    ],
)
def test_a_bad_row_is_named(tmp_path, bad, message):
    """One bad row among good ones: the error names the file, the row and the field, before any job uses it."""
    rows = [GOOD_ROW, GOOD_ROW | {"_id": "r1"} | bad, GOOD_ROW | {"_id": "r2"}]
    path = _write_jsonl(tmp_path / "qasper.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_longbench("qasper", "local", tmp_path, cache_dir=tmp_path / "cache")
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_rows_without_context_list_the_missing_field(tmp_path):
    path = _write_jsonl(
        tmp_path / "hotpotqa.jsonl", [{"_id": f"r{i}", "input": f"q{i}", "answers": ["a"]} for i in range(3)]
    )
    with pytest.raises(DataError, match=r"lack field\(s\) \['context'\]") as err:
        load_longbench("hotpotqa", "local", tmp_path, cache_dir=tmp_path / "cache")
    assert str(path) in str(err.value)


def test_answers_must_be_a_list(tmp_path):
    path = _write_jsonl(
        tmp_path / "hotpotqa.jsonl",
        [{"_id": f"r{i}", "input": f"q{i}", "context": "c", "answers": "a"} for i in range(3)],
    )
    with pytest.raises(DataError, match="answers of type str, expected a list") as err:
        load_longbench("hotpotqa", "local", tmp_path, cache_dir=tmp_path / "cache")
    assert str(path) in str(err.value) and "row 0" in str(err.value)


def test_local_source_needs_a_local_dir(tmp_path):
    with pytest.raises(DataError, match="local_dir is not set"):
        load_longbench("multi_news", "local", None, cache_dir=tmp_path)


def test_unknown_source_lists_the_allowed_ones(tmp_path):
    with pytest.raises(DataError, match="allowed: hub, local") as err:
        load_longbench("multi_news", "s3", tmp_path, cache_dir=tmp_path)
    assert "'s3'" in str(err.value)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_a_file_without_an_official_sha256_is_not_official(tmp_path):
    _write_jsonl(tmp_path / "my_task.jsonl", [{"_id": "r0", "input": "q", "context": "c", "answers": ["a", "b"]}])
    rows, prov = load_longbench("my_task", "local", tmp_path, cache_dir=tmp_path / "cache")
    assert rows == [{"_id": "r0", "input": "q", "context": "c", "answers": ["a", "b"]}]
    assert prov["official_sha256_match"] is False


# --- build_dataset -------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["passkey", "kv_retrieval"])
def test_synthetic_dataset_is_deterministic_and_sized(task, tmp_path):
    spec = {"synthetic": task, "words": 600, "samples": 6, "seed": 11}
    rows, prov = build_dataset(spec, {}, tmp_path)
    again, prov_again = build_dataset(dict(spec), {}, tmp_path)
    assert rows == again and prov == prov_again
    assert len(rows) == 6 and len({r["_id"] for r in rows}) == 6
    assert prov == {"generator": f"lcopt.synthetic/{task}", "words": 600, "seed": 11}
    other, _ = build_dataset({**spec, "seed": 12}, {}, tmp_path)
    assert [r["context"] for r in other] != [r["context"] for r in rows]
    for row in rows:
        assert row["dataset"] == task
        assert 600 <= row["length"] <= 640
        answer = row["answers"][0]
        assert answer in row["context"].split()
        if task == "passkey":
            assert f"the pass key is {answer} ." in row["context"]
        else:
            key = row["input"].split()[-2]
            assert f"the code for {key} is the number {answer} ." in row["context"]
    assert len(build_dataset({**spec, "samples": 2}, {}, tmp_path)[0]) == 2


def test_longbench_dataset_is_cut_and_labelled(longbench_dir, tmp_path):
    spec = {"longbench": "multi_news", "samples": 7}
    rows, prov = build_dataset(spec, {"source": "local", "local_dir": str(longbench_dir)}, tmp_path)
    assert len(rows) == 7
    assert all(r["dataset"] == "multi_news" for r in rows)
    raw = _raw_rows(longbench_dir / "multi_news.jsonl")[:7]
    assert [r["_id"] for r in rows] == [r["_id"] for r in raw]
    assert [r["answers"] for r in rows] == [r["answers"] for r in raw]
    assert prov["official_sha256_match"] is True


def test_longbench_dataset_overwrites_a_foreign_dataset_label(tmp_path):
    local = tmp_path / "lb"
    _write_jsonl(
        local / "hotpotqa.jsonl",
        [
            {"_id": f"r{i}", "input": f"q{i}", "context": "c", "answers": ["a"], "dataset": "something_else"}
            for i in range(5)
        ],
    )
    rows, _ = build_dataset(
        {"longbench": "hotpotqa", "samples": 3},
        {"source": "local", "local_dir": str(local), "local_variants": ["hotpotqa"]},
        tmp_path / "cache",
    )
    assert [r["dataset"] for r in rows] == ["hotpotqa"] * 3
    assert [r["input"] for r in rows] == ["q0", "q1", "q2"]


def test_longbench_dataset_from_the_hub(longbench_dir, tmp_path, fake_hub):
    fake_hub.archive = _zip(tmp_path / "data.zip", {"data/multi_news.jsonl": longbench_dir / "multi_news.jsonl"})
    rows, prov = build_dataset({"longbench": "multi_news", "samples": 3}, {"source": "hub"}, tmp_path / "cache")
    assert len(rows) == 3 and all(r["dataset"] == "multi_news" for r in rows)
    assert prov["file"] == str(tmp_path / "cache" / "multi_news.jsonl")
    assert len(fake_hub.calls) == 1


def test_local_load_writes_nothing_into_local_dir(tmp_path):
    local = tmp_path / "lb"
    _write_jsonl(local / "hotpotqa.jsonl", [{"_id": "r0", "input": "q", "context": "c", "answers": ["a"]}])
    load_longbench("hotpotqa", "local", local, cache_dir=tmp_path / "cache", local_variant=True)
    assert sorted(p.name for p in local.iterdir()) == ["hotpotqa.jsonl"]


# --- calibration: held-out text, never a scored row --------------------------------------------


def test_longbench_calibration_is_the_unscored_tail_and_records_its_ids(longbench_dir, tmp_path):
    from lcopt.data import held_out_calibration

    longbench = {"source": "local", "local_dir": str(longbench_dir)}
    scored = {"mn": {"longbench": "multi_news", "samples": 50}, "mn-100": {"longbench": "multi_news", "samples": 100}}
    calibration = held_out_calibration(
        {"longbench": "multi_news"}, 64, tmp_path, scored, longbench, name="mn", key="gptq.calibration_dataset"
    )
    file_ids = [r["_id"] for r in _raw_rows(longbench_dir / "multi_news.jsonl")]
    assert calibration.record["ids"] == file_ids[-64:]  # the last rows: none of the first 100 that are scored
    assert not set(calibration.record["ids"]) & set(file_ids[:100])
    assert calibration.texts[0] == _raw_rows(longbench_dir / "multi_news.jsonl")[-64]["context"]
    assert calibration.record["disjoint_from"] == ["mn", "mn-100"]
    assert calibration.record["sha256"] == OFFICIAL_SHA256["multi_news"]


def test_calibration_fails_when_every_row_is_scored(longbench_dir, tmp_path):
    """paper.yaml's old setting: qasper has 200 rows, 200 were scored and 128 calibrated GPTQ."""
    from lcopt.data import held_out_calibration

    longbench = {"source": "local", "local_dir": str(longbench_dir)}
    with pytest.raises(DataError) as err:
        held_out_calibration(
            {"longbench": "multi_news"},
            128,
            tmp_path,
            {"multi_news": {"longbench": "multi_news", "samples": 200}},
            longbench,
            name="multi_news",
            key="gptq.calibration_dataset",
        )
    message = str(err.value)
    for part in ["gptq.calibration_dataset 'multi_news'", "200 rows and 0 of them", "calibration_samples"]:
        assert part in message, (part, message)
    assert "calibration_datasets" in message and "samples" in message


def test_synthetic_calibration_is_another_seed_and_a_scored_seed_is_refused(tmp_path):
    from lcopt.data import CALIBRATION_SEED_OFFSET, held_out_calibration

    spec = {"synthetic": "kv_retrieval", "words": 200}
    scored = {"kv": spec | {"samples": 8}}
    calibration = held_out_calibration(spec, 4, tmp_path, scored, name="kv")
    assert calibration.record["ids"] == [f"kv_retrieval-200-{CALIBRATION_SEED_OFFSET}-{i}" for i in range(4)]
    scored_ids = {r["_id"] for r in build_dataset(scored["kv"], {}, tmp_path)[0]}
    assert not scored_ids & set(calibration.record["ids"])
    # a dataset of the run that scores the calibration stream's very seed
    clash = scored | {"kv-other": spec | {"seed": CALIBRATION_SEED_OFFSET, "samples": 2}}
    with pytest.raises(DataError, match=r"2 calibration rows .* are scored rows of kv-other"):
        held_out_calibration(spec, 4, tmp_path, clash, name="kv", key="prune.calibration_dataset")
