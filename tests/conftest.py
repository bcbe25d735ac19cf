import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_assets_dir() -> Path:
    """../shared/assets beside the checkout, or wherever LCOPT_SHARED_ASSETS points."""
    return Path(os.environ.get("LCOPT_SHARED_ASSETS", REPO.parent / "shared" / "assets"))


@pytest.fixture
def shared_assets() -> Path:
    path = shared_assets_dir()
    if not path.is_dir():
        pytest.skip(f"shared assets not found at {path} (set LCOPT_SHARED_ASSETS to the assets folder)")
    return path


@pytest.fixture
def llama_tokenizer(shared_assets):
    from transformers import AutoTokenizer

    path = shared_assets / "models" / "meta-llama--Llama-3.1-8B-Instruct"
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"Llama-3.1 tokenizer not found in {path}")
    return AutoTokenizer.from_pretrained(path)
