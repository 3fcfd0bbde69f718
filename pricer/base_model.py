"""Naming the base model once: a Hub id, a local folder, or a local `.gguf` file.

A GGUF-loaded model cannot be saved or quantized as it is (transformers marks it as GGUF
"quantized"), so a `.gguf` base is converted once into an ordinary Hugging Face folder in the
cache, and everything downstream, the tokenizer, bitsandbytes and peft, uses that folder.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from pathlib import Path

from huggingface_hub import constants


def pricer_cache() -> Path:
    """pricer's cache under the Hugging Face home (`$HF_HOME/pricer`)."""
    return Path(constants.HF_HOME) / "pricer"


def is_gguf(name: str) -> bool:
    return name.lower().endswith(".gguf")


def _gguf_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return pricer_cache() / "models" / f"{gguf.stem}-{digest[:12]}"


def _check_gguf(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"base model: GGUF file {path} does not exist")
    return path


def _replace_folder(tmp: Path, final: Path) -> None:
    """Move a finished folder into place, so a half-written conversion is never used."""
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def tokenizer_source(name: str) -> str:
    """What `AutoTokenizer.from_pretrained` takes for a base model; converts a GGUF's once."""
    if not is_gguf(name):
        return name
    gguf = _check_gguf(name)
    folder = _gguf_folder(gguf) / "tokenizer"
    if not (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tmp = folder.with_name(f"tokenizer.tmp-{os.getpid()}")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer.save_pretrained(tmp)
        _replace_folder(tmp, folder)
    return str(folder)


def model_source(name: str) -> str:
    """What `AutoModelForCausalLM.from_pretrained` takes; converts a GGUF's weights once."""
    if not is_gguf(name):
        return name
    gguf = _check_gguf(name)
    folder = _gguf_folder(gguf) / "model"
    if not (folder / "config.json").is_file():
        import torch
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        # A plain model of the same architecture takes the de-quantized weights and, unlike the
        # GGUF-loaded one, can be saved as safetensors and loaded again in 4-bit.
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), strict=True)
        tmp = folder.with_name(f"model.tmp-{os.getpid()}")
        plain.save_pretrained(tmp)
        shutil.copytree(tokenizer_source(name), tmp, dirs_exist_ok=True)
        _replace_folder(tmp, folder)
    return str(folder)


def load_tokenizer(name: str):
    """The base model's tokenizer, with a padding token (Llama 3 ships none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
