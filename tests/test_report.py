"""The report: its tables and run description (unit), and the whole `snakemake --report` of the default
run opened in headless Chromium as a person would (slow): no console error, every figure and the
table present, a full-page screenshot to look at."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from test_plots import fake_long

from lcopt import report
from lcopt.browser import Page, find_chromium

REPO = Path(__file__).resolve().parents[1]
CPU_PROVENANCE = {
    "config_sha256": "a" * 64,
    "seed": 0,
    "git_commit": "b" * 40,
    "git_dirty": False,
    "packages": {"lcopt": "0.1.0", "torch": "2.13.0", "snakemake": "9.27.1"},
    "python": "3.11.7",
    "platform": "Linux-x86_64",
    "gpus": "none",
    "torch_cuda": None,
    "config": {"bootstrap_resamples": 1000},
}
GPU_PROVENANCE = CPU_PROVENANCE | {
    "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_bytes": 141 * 2**30, "driver": "570.1"}],
    "torch_cuda": "12.8",
}


def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("headless Chromium not found: install Debian's `chromium` (apt-get install -y chromium)")
    return path


def test_per_sample_table_joins_depth_and_length(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"_id": "a", "context": "x y z", "length": 3, "depth": 0.25})
        + "\n"
        + json.dumps({"_id": "b", "context": "x y", "depth": 1.0})
        + "\n"
    )
    samples = tmp_path / "s.jsonl"
    samples.write_text(
        json.dumps({"_id": "b", "status": "ok", "score": 1.0}) + "\n" + json.dumps({"_id": "a", "status": "oom"}) + "\n"
    )
    table = report.per_sample_table([("m", "kivi4", "pk", "passkey")], [samples], {"pk": rows})
    assert table.to_dicts() == [
        {"model": "m", "stack": "kivi4", "dataset": "pk", "task": "passkey", "_id": "b", "status": "ok"}
        | {"score": 1.0, "length": 2, "depth": 1.0},
        {"model": "m", "stack": "kivi4", "dataset": "pk", "task": "passkey", "_id": "a", "status": "oom"}
        | {"score": None, "length": 3, "depth": 0.25},
    ]
    samples.write_text(json.dumps({"_id": "zz", "status": "ok", "score": 0.0}) + "\n")
    with pytest.raises(KeyError, match=r"'zz' has no row in .*rows\.jsonl"):
        report.per_sample_table([("m", "kivi4", "pk", "passkey")], [samples], {"pk": rows})


def test_results_table_has_one_row_per_cell_in_reading_units():
    long = fake_long()
    table = report.results_table(long)
    assert table.height == long.select("model", "stack", "dataset").unique().height == 24
    row = table.filter((pl.col("stack") == "gptq4") & (pl.col("dataset") == "passkey-1k")).to_dicts()[0]
    assert row["score"] == 85.0 and row["CI low"] == 80.0 and row["CI high"] == 90.0 and row["n"] == 8
    assert row["level"] == 1 and row["family"] == "retrieval" and row["score metric"] == "qa_f1"
    assert row["peak memory (MiB)"] == 300.0 and row["decode (ms/token)"] == 25.0 and row["TTFT (ms)"] == 102.4
    assert row["input tokens"] == 1331 and table["input tokens"].dtype == pl.Int64
    assert "failed" not in table.columns  # nothing failed: no column of zeros
    assert table["level"].to_list()[:6] == [0, 1, 1, 1, 2, 2]


def test_results_table_html_works_offline():
    html = report.results_table_html(fake_long())
    assert "<script src=" not in html and "cdn." not in html
    assert html.count("passkey-2k") >= 6  # every row is in the file, none downsampled


def test_results_table_sorts_in_chromium(tmp_path):
    chromium()
    page_file = tmp_path / "table.html"
    page_file.write_text(report.results_table_html(fake_long()))
    with Page() as page:
        page.open(page_file.as_uri(), settle=2)
        assert page.errors == []
        assert page.eval("document.querySelectorAll('table.dataTable tbody tr').length") == 24
        score_column = page.eval(
            "[...document.querySelectorAll('thead th')].findIndex(th => th.textContent == 'score')"
        )
        page.eval(f"document.querySelectorAll('thead th')[{score_column}].click()")
        page.wait(0.5)
        scores = page.eval(
            f"[...document.querySelectorAll('table.dataTable tbody tr')].map(r => +r.cells[{score_column}].textContent)"
        )
        assert scores == sorted(scores) and scores[0] == 32.0


def test_run_description_states_matrix_device_and_gpu_data():
    from docutils.core import publish_parts

    cpu = report.run_rst(CPU_PROVENANCE, fake_long())
    assert "1 model × 6 stacks × 4 datasets = 24 cells, up to 8 samples each" in cpu
    assert "Level 2 (stacks of 2): ``gptq4+kivi4``, ``prune+gptq4``" in cpu
    assert "CPU only" in cpu and "No GPU data in this run" in cpu and "torch 2.13.0" in cpu
    gpu = report.run_rst(GPU_PROVENANCE, fake_long(roofline=True))
    assert "1 × NVIDIA H200, 141 GiB each (driver 570.1, CUDA 12.8)" in gpu and "No GPU data" not in gpu
    for text in (cpu, gpu):  # valid reStructuredText: docutils raises on any warning at halt_level 2
        publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})


# ---------------------------------------------------------------------------------------------------
# the whole report of the default run, looked at in Chromium


def default_config(samples: int) -> dict:
    """The default config's matrix (every model, dataset and stack), with fewer samples per dataset."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    return config | {"samples": samples}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """A finished default run: LCOPT_REPORT_RUN names one (e.g. after `make run`, the checkout), else
    the default config runs here with 2 samples per dataset (same matrix, every figure; ~10 min)."""
    given = os.environ.get("LCOPT_REPORT_RUN")
    if given:
        return Path(given)
    from conftest import run_snakemake

    workdir = tmp_path_factory.mktemp("default-run")
    code, out = run_snakemake(workdir, default_config(samples=2), timeout=3000)
    assert code == 0, out[-4000:]
    return workdir


def build_report(run: Path, target: Path) -> None:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    config = run / "config.yaml" if (run / "config.yaml").is_file() else REPO / "config/config.yaml"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(run)]
    command += ["--configfile", str(config)]
    command += ["--report", str(target), "--report-stylesheet", str(REPO / "report/stylesheet.css")]  # as `make run`
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


@pytest.mark.slow
def test_report_of_the_default_run_reads_in_a_browser(default_run, tmp_path):
    chromium()
    html = tmp_path / "report.html"
    build_report(default_run, html)
    zipped = tmp_path / "report.zip"
    build_report(default_run, zipped)
    assert zipped.stat().st_size > 100_000
    provenance = json.loads((default_run / "results/tables/provenance.json").read_text())
    long = pl.read_parquet(default_run / "results/tables/long.parquet")
    dataset_families = {r["dataset"]: r["family"] for r in long.select("dataset", "family").unique().to_dicts()}
    plan = report.figures(sorted(long["model"].unique()), dataset_families)
    expected = {f"results/plots/{f.path}" for f in plan} | {"results/report/table.html"}
    shots = Path(os.environ.get("LCOPT_SCREENSHOTS", tmp_path))

    with Page(width=1400, height=1000) as page:
        page.open(html.as_uri(), settle=4)
        assert page.errors == [], page.errors
        assert set(page.eval("Object.keys(results)")) == expected
        # every figure decodes as an image in the browser
        sizes = page.eval(
            "Promise.all(Object.entries(results).filter(([p, r]) => p.endsWith('.png')).map(([p, r]) =>"
            " new Promise(ok => { const i = new Image(); i.onload = () => ok([p, i.naturalWidth]);"
            " i.onerror = () => ok([p, 0]); i.src = r.data_uri; })))"
        )
        assert len(sizes) == len(plan) and all(width > 300 for _, width in sizes), sizes
        # the landing page states the run: matrix, device, versions (report/workflow.rst + run.rst)
        text = page.eval("document.body.innerText")
        assert "This run" in text and "Matrix." in text and f"snakemake {provenance['packages']['snakemake']}" in text
        assert ("No GPU data in this run" in text) == (not report.has_gpu_data(long))
        page.screenshot(shots / "report-home.png")
        # a figure opened from its category, as a reader would, and the table
        page.eval("app.showCategory('Retrieval')")
        page.wait(1)
        assert page.errors == [], page.errors
        page.screenshot(shots / "report-category.png")
        first = next(p for p in sorted(expected) if p.endswith("retrieval/quality_vs_memory.png"))
        page.eval(f"app.setView({{content: 'img', contentPath: results['{first}'].data_uri, resultPath: '{first}'}})")
        page.wait(1)
        page.screenshot(shots / "report-figure.png")
        table = "results/report/table.html"
        page.eval(f"app.setView({{content: 'html', contentPath: results['{table}'].data_uri, resultPath: '{table}'}})")
        rows = 0
        for _ in range(60):  # DataTables renders the rows once its bundle has loaded inside the iframe
            rows = page.eval_in_frame("data:text/html", "document.querySelectorAll('table.dataTable tbody tr').length")
            if rows:
                break
            page.wait(0.5)
        assert rows == min(25, long.select("model", "stack", "dataset").unique().height)  # its first page
        assert page.errors == [], page.errors
        page.screenshot(shots / "report-table.png", full_page=False)

    # the table page on its own: DataTables ran and holds every (model, stack, dataset)
    with Page(width=1400, height=1000) as page:
        page.open((default_run / "results/report/table.html").as_uri(), settle=3)
        assert page.errors == [], page.errors
        info = page.eval("document.querySelector('.dt-info').textContent")
        cells = long.select("model", "stack", "dataset").unique().height
        assert f"of {cells} entries" in info, info
    for name in ("report-home", "report-category", "report-figure", "report-table"):
        assert (shots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_plan_needs_no_polars():
    """rules/report.smk lists the figures when the Snakefile is parsed: a GPU machine that only runs
    inference and scoring (polars not installed there) must parse the workflow."""
    import subprocess
    import sys

    code = "import sys; sys.modules['polars'] = None; from lcopt.report import figures; figures(['m'], {'d': 'qa'})"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
