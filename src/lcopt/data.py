"""The datasets stage: LongBench v1 rows (hub or local JSONL) or synthetic rows, as one JSONL each.

The hub copy of THUDM/LongBench is a `data.zip` of JSONL files (its loading script no longer runs
under today's `datasets`), so the hub path downloads that archive with `huggingface_hub`, takes the
task's member out of it and reads it with `datasets.load_dataset("json", ...)`, the same reader the
local path uses. Every file read is checked against the official sha256 where one is known; a
mismatch stops the job unless the config lists the task in `longbench.local_variants`.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lcopt import synthetic
from lcopt.io import read_jsonl

log = logging.getLogger(__name__)

LONGBENCH_REPO = "THUDM/LongBench"
# sha256 of data/<name>.jsonl in the hub's data.zip (see ../shared/assets/longbench/SHA256SUMS.official).
OFFICIAL_SHA256 = {
    "multi_news": "f8817c00af317c2d7f81128f334bcfe5780c6c2a515d5c96811aa0ddf8b5ee6b",
    "qasper": "29aa07d2a63f36f4fb8e8cd200a3428ee3126d750bde6af1c8f9bc41c2366854",
    "2wikimqa": "dda279cf93a99e1e5bfa3291fb199fd55978d10a1feb31822953cf77a1742e37",
    "hotpotqa": "a0005ab2a1bc2ac3a70352dccbf96cccc4e0aac6bb677f6a55180fa51b92ef6f",
    "gov_report": "d28112beb3a9b41d80aa390837fa1a31c9e3da84a5262009c97585cc49f597c4",
    "narrativeqa": "0fb8d08ba5cdad4b74244224b0dc2e8b41ee6b850d954a13eb2d282621ce2f71",
}
REQUIRED_FIELDS = ("_id", "input", "context", "answers")


class DataError(ValueError):
    """A dataset file that is missing or malformed; the message names the file and what is wrong."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_jsonl(name: str, cache_dir: Path) -> Path:
    """Download LongBench's data.zip from the hub (cached by huggingface_hub) and extract one task."""
    from huggingface_hub import hf_hub_download

    archive = hf_hub_download(LONGBENCH_REPO, "data.zip", repo_type="dataset")
    member = f"data/{name}.jsonl"
    target = cache_dir / f"{name}.jsonl"
    with zipfile.ZipFile(archive) as zf:
        if member not in zf.namelist():
            raise DataError(f"{archive}: no member {member}; it has {', '.join(sorted(zf.namelist())[:8])}...")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(member))
    return target


def _check_row(path: Path, i: int, row: dict) -> None:
    """A LongBench row has a string `_id`, `input` and `context` and a non-empty list of string answers."""
    where = f"{path}: row {i}" + (f" ({row['_id']!r})" if row.get("_id") is not None else "")
    for field in ("_id", "input", "context"):
        if not isinstance(row.get(field), str):
            got = "no value" if row.get(field) is None else f"type {type(row[field]).__name__}"
            raise DataError(f"{where}: field {field!r} has {got}, expected a string")
    answers = row["answers"]
    if not isinstance(answers, list):
        raise DataError(f"{where} has answers of type {type(answers).__name__}, expected a list")
    if not answers or not all(isinstance(a, str) for a in answers):
        raise DataError(f"{where}: answers must be a non-empty list of strings, got {answers!r}")


def read_longbench_jsonl(path: Path, cache_dir: Path) -> list[dict]:
    """Rows of one LongBench JSONL file through `datasets`, validated row by row."""
    import datasets

    if not path.is_file():
        raise DataError(f"{path}: LongBench file not found (longbench.local_dir must hold <task>.jsonl files)")
    try:
        table = datasets.load_dataset(
            "json", data_files=str(path), split="train", cache_dir=str(cache_dir / "hf-datasets")
        )
    except Exception as exc:
        try:  # name the first bad line when there is one
            if not read_jsonl(path):
                raise DataError(f"{path}: no rows (the file is empty)") from exc
        except ValueError as bad_line:
            raise DataError(str(bad_line)) from exc
        raise DataError(f"{path}: not readable as JSON lines ({type(exc).__name__}: {exc})") from exc
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    missing = [f for f in REQUIRED_FIELDS if f not in table.column_names]
    if missing:
        raise DataError(f"{path}: rows lack field(s) {missing}; LongBench rows have {list(REQUIRED_FIELDS)}")
    rows = table.to_list()
    for i, row in enumerate(rows):
        _check_row(path, i, row)
    duplicates = sorted(k for k, n in Counter(r["_id"] for r in rows).items() if n > 1)
    if duplicates:
        raise DataError(f"{path}: duplicate _id {duplicates[:3]}; every row needs its own")
    return rows


def load_longbench(
    name: str, source: str, local_dir: Path | None, cache_dir: Path, local_variant: bool = False
) -> tuple[list[dict], dict]:
    """Rows of LongBench task `name` and a provenance record (file, sha256, official or not).

    A file whose sha256 differs from LongBench's official one is an error (numbers from it would not be
    LongBench's), unless `local_variant` says it is a deliberate local variant (config
    `longbench.local_variants`, source local only); then it loads with a warning and the provenance
    says so."""
    if source == "hub":
        path = hub_jsonl(name, cache_dir)
    elif source == "local":
        if local_dir is None:
            raise DataError("longbench.source is 'local' but longbench.local_dir is not set")
        path = Path(local_dir) / f"{name}.jsonl"
    else:
        raise DataError(f"longbench.source is {source!r}; allowed: hub, local")
    rows = read_longbench_jsonl(path, cache_dir)
    digest = sha256_of(path)
    official = OFFICIAL_SHA256.get(name)
    if official and digest != official:
        if not (local_variant and source == "local"):
            how = (
                f"list {name!r} in longbench.local_variants if the file is a deliberate local variant"
                if source == "local"
                else "the hub's data.zip is not the official release (longbench.local_variants applies to "
                "source local only)"
            )
            raise DataError(f"{path}: sha256 {digest} differs from LongBench's official {official}; {how}")
        log.warning("%s: sha256 %s differs from LongBench's official %s (a local variant)", path, digest, official)
    provenance = {"file": str(path), "sha256": digest, "official_sha256_match": digest == official}
    return rows, provenance | ({"local_variant": True} if local_variant else {})


# Synthetic calibration rows come from the generator's stream at the dataset's seed plus this: rows no
# scored dataset holds unless one sets that very seed, which `held_out_calibration` would refuse.
CALIBRATION_SEED_OFFSET = 10_000


@dataclass(frozen=True)
class Calibration:
    """Held-out text a model-side technique calibrates on, and the record of it kept in `variant.json`
    (its dataset, source, ids and the scored datasets its ids were checked against)."""

    texts: list[str]
    record: dict


def held_out_calibration(
    spec: dict,
    n: int,
    cache_dir: Path,
    scored: dict[str, dict] | None = None,
    longbench: dict | None = None,
    name: str = "calibration",
    key: str = "calibration_dataset",
) -> Calibration:
    """`n` rows of `spec`'s source (dataset `name`, chosen by config key `key`) that no dataset of
    `scored` (name -> its spec with `samples`: the run's datasets drawn from the same source) scores.

    Synthetic: the generator's rows at the dataset's seed + CALIBRATION_SEED_OFFSET. LongBench: the last
    `n` rows of the task file that no dataset scores (the tail beyond `samples`); fewer is an error.
    Either way the ids are checked against the ids the scored datasets are built with (`build_dataset`,
    as their rows are made) before anything calibrates on them."""
    scored, longbench = scored or {}, longbench or {}
    scored_by = {}
    for dataset, dataset_spec in scored.items():
        for row in build_dataset(dataset_spec, longbench, cache_dir)[0]:
            scored_by.setdefault(row["_id"], dataset)
    if "synthetic" in spec:
        seed = spec.get("seed", 0) + CALIBRATION_SEED_OFFSET
        rows = list(synthetic.generate(spec["synthetic"], spec["words"], n, seed))
        source = {"generator": f"lcopt.synthetic/{spec['synthetic']}", "words": spec["words"], "seed": seed}
    else:
        every, source = _load_configured(spec["longbench"], longbench, cache_dir)
        unscored = [r for r in every if r["_id"] not in scored_by]
        if len(unscored) < n:
            samples = ", ".join(f"{d} scores {s['samples']}" for d, s in scored.items())
            raise DataError(
                f"{key} {name!r}: LongBench {spec['longbench']} has {len(every)} rows and {len(unscored)} of them "
                f"are not scored ({samples}); {n} calibration rows (calibration_samples) need {n}. Calibrate on "
                "text that is never scored: a dataset of calibration_datasets (e.g. a LongBench task outside "
                "the run), or score fewer rows (samples, datasets.<name>.samples)"
            )
        rows = unscored[-n:]
    overlap = sorted({r["_id"] for r in rows} & scored_by.keys())
    if overlap:
        owners = sorted({scored_by[i] for i in overlap})
        raise DataError(
            f"{key} {name!r}: {len(overlap)} calibration rows (e.g. {overlap[0]!r}) are scored rows of "
            f"{', '.join(owners)}; calibrate on text that is never scored (another seed or dataset)"
        )
    record = {"dataset": name, **source, "ids": [r["_id"] for r in rows], "disjoint_from": sorted(scored)}
    return Calibration([r["context"] for r in rows], record)


def calibration_batches(tokenizer, texts: list[str], max_tokens: int, device: str) -> list[dict]:
    """The calibration texts tokenized one per batch, each cut to `max_tokens`."""
    return [
        tokenizer(t, return_tensors="pt", truncation=True, max_length=max_tokens).to(device) for t in texts if t.strip()
    ]


def _load_configured(name: str, longbench: dict, cache_dir: Path) -> tuple[list[dict], dict]:
    """`load_longbench` as the config's longbench block says (source, local_dir, local_variants)."""
    local_dir = longbench.get("local_dir")
    variant = name in longbench.get("local_variants", [])
    return load_longbench(name, longbench["source"], Path(local_dir) if local_dir else None, cache_dir, variant)


def build_dataset(spec: dict, longbench: dict, cache_dir: Path) -> tuple[list[dict], dict]:
    """The rows a dataset entry of the config names, cut to its sample count."""
    n = spec["samples"]
    if "synthetic" in spec:
        rows = list(synthetic.generate(spec["synthetic"], spec["words"], n, spec.get("seed", 0)))
        return rows, {
            "generator": f"lcopt.synthetic/{spec['synthetic']}",
            "words": spec["words"],
            "seed": spec.get("seed", 0),
        }
    name = spec["longbench"]
    rows, provenance = _load_configured(name, longbench, cache_dir)
    for row in rows:
        row["dataset"] = name
    return rows[:n], provenance
