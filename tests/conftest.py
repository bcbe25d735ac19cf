import os
from pathlib import Path

import pytest

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


def build_tiny_classifier(root: Path, texts: list[str]) -> Path:
    """A 2-layer BERT token classifier with a WordPiece vocabulary trained on `texts`, saved like a hub model.

    The directory name carries `bert-base-multilingual-cased`, as the real checkpoint's id does, so LLMLingua-2
    applies BERT's "##" word-piece rules. The vocabulary is kept small so that words split into several pieces
    and a 300-word context needs more than one 512-token classifier window.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    path = root / "tiny-llmlingua-2-bert-base-multilingual-cased-meetingbank"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(path)

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=2,
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    BertForTokenClassification(config).eval().save_pretrained(path)
    return path
