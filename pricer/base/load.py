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

from pricer.files import place_folder


def pricer_cache() -> Path:
    """pricer's cache under the Hugging Face home (`$HF_HOME/pricer`)."""
    return Path(constants.HF_HOME) / "pricer"


def is_gguf(name: str) -> bool:
    return name.lower().endswith(".gguf")


def _gguf_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return pricer_cache() / "models" / f"{gguf.stem}-{digest[:12]}"


GGUF_MAGIC = b"GGUF"  # the first four bytes of every GGUF file (the format's own magic)


def _check_gguf_bytes(path: Path, option: str = "base model") -> None:
    if path.is_dir():
        raise FileNotFoundError(f"{option}: {path} is a folder, not a .gguf file")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != GGUF_MAGIC:
        raise FileNotFoundError(
            f"{option}: {path} is not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r})"
        )


def _check_gguf(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"base model: GGUF file {path} does not exist")
    _check_gguf_bytes(path)
    return path


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
        place_folder(tmp, folder)
    return str(folder)


def tokenizer_digest(source: str) -> str:
    """A short SHA-256 of what a tokenizer does to text: its vocabulary, merges, normaliser,
    pre-tokenizer, special tokens, post-processor and decoder (the backend's JSON, less its
    padding and truncation settings) and whether decoding cleans up spaces. The same tokenizer
    read from a folder, the Hub cache or a GGUF file gives the same digest."""
    import json

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(source))
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    backend.pop("padding", None)
    backend.pop("truncation", None)
    backend["clean_up_tokenization_spaces"] = bool(tokenizer.clean_up_tokenization_spaces)
    return hashlib.sha256(json.dumps(backend, sort_keys=True).encode()).hexdigest()[:16]


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
        place_folder(tmp, folder)
    return str(folder)


def is_local(name: str) -> bool:
    """A base named by a path (a folder or a .gguf file), not by a Hub id."""
    return is_gguf(name) or name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def check_model_name(name: str | None, option: str, weights: bool = True) -> None:
    """Before any work: a local base or adapter is here, and offline a Hub model is in the cache.
    `weights=False`: only the base's tokenizer is needed (curate)."""
    if not name:
        return
    from huggingface_hub import constants, try_to_load_from_cache

    path = Path(name).expanduser()
    if is_local(name):
        if not path.exists():
            raise FileNotFoundError(
                f"{option}: {name} does not exist (neither a folder nor a .gguf file here)"
            )
        if is_gguf(name):
            _check_gguf_bytes(path, option)
        elif path.is_dir() and option.endswith("base_model"):
            needed = ("config.json",) if weights else ("config.json", "tokenizer_config.json")
            if not any((path / n).is_file() for n in needed):
                raise FileNotFoundError(
                    f"{option}: {name} is a folder without {' or '.join(needed)}: not a Hugging Face "
                    f"{'model' if weights else 'model or tokenizer'} folder"
                )
        elif not path.is_dir():
            raise FileNotFoundError(f"{option}: {name} is a file: name a model folder or a .gguf file")
        return
    cached = any(
        isinstance(try_to_load_from_cache(name, f), str) for f in ("config.json", "adapter_config.json")
    )
    if constants.HF_HUB_OFFLINE and not cached:
        raise FileNotFoundError(
            f"{option}: {name} is not in the local cache and HF_HUB_OFFLINE is set: download it once "
            "online, or name a local folder or .gguf file"
        )


def check_target_modules(base: str, targets: list[str], option: str = "model.lora.target_modules") -> None:
    """Before any work: every LoRA target names modules of the base (built on the meta device
    from its config, no weights read). peft itself stops only when none matches, and skips a
    misspelt one beside others silently."""
    if not targets or "all-linear" in targets:
        return
    from accelerate import init_empty_weights
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_source(base))
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise FileNotFoundError(
            f"{option}: {', '.join(missing)} not in {base}; its linear layers are {', '.join(linear)}"
        )


def check_adapter_files(folder: Path, option: str, base: str | None = None) -> None:
    """Before the base is loaded: an adapter folder holds peft's config and weights, the weights
    are a readable safetensors file, and their LoRA shapes are the config's rank and fit the
    base's layer sizes (when its config.json is here)."""
    import json

    config_file, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for needed in (config_file, weights):
        if not needed.is_file():
            raise FileNotFoundError(f"{option}: {folder} has no {needed.name}: not a peft adapter folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        rank = int(config["r"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FileNotFoundError(f"{option}: {config_file} cannot be read ({type(error).__name__})") from None
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors' own errors: a damaged header, a cut file
        raise FileNotFoundError(
            f"{option}: {weights} is not a readable safetensors file ({str(error).splitlines()[0][:160]})"
        ) from None
    lora = {k: v for k, v in shapes.items() if ".lora_A." in k or ".lora_B." in k}
    if not lora:
        raise FileNotFoundError(f"{option}: {weights} holds no LoRA weights")
    wrong = [k for k, v in lora.items() if len(v) != 2 or (v[0] if ".lora_A." in k else v[1]) != rank]
    if wrong:
        raise FileNotFoundError(
            f"{option}: {weights}: {wrong[0]} has shape {lora[wrong[0]]}, not rank {rank} as "
            f"{config_file.name} says"
        )
    base_config = Path(base).expanduser() / "config.json" if base and not is_gguf(base) else None
    if base_config is not None and base_config.is_file():
        sizes = _layer_sizes(json.loads(base_config.read_text()))
        outside = [k for k, v in lora.items() if (v[1] if ".lora_A." in k else v[0]) not in sizes]
        if sizes and outside:
            raise FileNotFoundError(
                f"{option}: {weights} does not fit the base {base}: {outside[0]} has shape "
                f"{lora[outside[0]]}, and the base's layers are {sorted(sizes)} wide"
            )


def _layer_sizes(config: dict) -> set[int]:
    """The widths a decoder's linear layers have: hidden, MLP, and the attention heads'."""
    config = config.get("text_config", config)
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    if not hidden or not heads:
        return set()
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads") or heads
    return {hidden, config.get("intermediate_size") or hidden, heads * head_dim, kv * head_dim}


def base_for_here(recipe) -> str:
    """The base model an adapter's recipe names, as this machine can load it: the name it was
    trained with when that is a Hub id or a path that is here, else its Hub id."""
    name = recipe.base_model
    if not is_local(name) or Path(name).expanduser().exists():
        return name
    if recipe.base_model_id:
        hub_id = recipe.base_model_id
        try:
            check_model_name(hub_id, "the adapter's base model")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"the adapter's base model {name} is not on this machine, and its Hub id {hub_id} "
                "cannot be read here (HF_HUB_OFFLINE is set and it is not in the cache): pass "
                "base_model= (PRICER_BASE_MODEL for the Space, --model.base_model for the CLI)"
            ) from None
        import warnings

        warnings.warn(
            f"the adapter's base model {name} is not on this machine; reading its Hub id {hub_id} instead",
            UserWarning,
            stacklevel=3,
        )
        return hub_id
    raise FileNotFoundError(
        f"the adapter's base model {name} is a local file that is not on this machine, and its "
        "pricer.json names no Hub id for it (base.base_model_id): pass base_model="
    )


def load_tokenizer(name: str):
    """The base model's tokenizer, with a padding token (Llama 3 ships none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(
    name: str,
    quantization: str = "4bit",
    quant_type: str = "nf4",
    double_quant: bool = True,
    compute_dtype: str = "auto",
    device=None,
):
    """The base model as pricer trains, reads and serves it, in one place: a Hub id, folder or
    `.gguf` file, in 4-bit (NF4 or FP4, with or without double quantization), 8-bit or full
    precision, in the device's compute dtype (fp16 on a T4, bf16 from Ampere on, fp32 on the
    CPU, or the one named). A gated, missing or offline model gets a message saying what to do.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from pricer.base.precision import resolve_dtype
    from pricer.base.quantization import bnb_config, check_bitsandbytes
    from pricer.hub_calls import explain_load_error

    device = torch.device(device) if device is not None else torch.device("cpu")
    check_bitsandbytes(quantization, device)
    dtype = resolve_dtype(compute_dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_source(name),
            quantization_config=bnb_config(quantization, quant_type, double_quant, dtype),
            dtype=dtype,
            device_map={"": device},
        )
    except (OSError, ValueError) as error:
        explained = explain_load_error(name, error)
        if explained is None:
            raise
        raise explained from error
    if quantization == "4bit" and device.type == "cpu":
        keep_4bit_weights_as_loaded(model)
    return model


# Non-reentrant checkpointing, said explicitly: peft hands transformers an empty dict of options,
# which transformers fills with this default only when it gets none, so torch would take its
# reentrant path (with a warning that it is to become an error).
CHECKPOINTING = {"use_reentrant": False}


def prepare_base(model, quantization: str, gradient_checkpointing: bool = False):
    """The loaded base as pricer computes with it, the same in training and in every read (fit's
    test, `test`, `predict`, the Space): no generation cache, every weight frozen, and a quantized
    base prepared by peft's `prepare_model_for_kbit_training` (the weights it does not quantize,
    norms, embeddings and LM head, in fp32). Reading a 4-bit base without that preparation
    computes its norms and head in 16-bit on a GPU, where fit's test read them in fp32."""
    model.config.use_cache = False
    if quantization != "none":
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=dict(CHECKPOINTING),
        )
    model.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(CHECKPOINTING))
    return model


def load_model(
    base_model: str,
    quantization: str,
    quant_type: str,
    double_quant: bool,
    compute_dtype: str,
    device,
    adapter: str | Path | None = None,
    trainable: bool = False,
    gradient_checkpointing: bool = False,
):
    """The one load training and every read share: the base, prepared as `prepare_base` says,
    with a trained adapter on it when one is given (trainable for a fit that goes on training)."""
    model = load_base(base_model, quantization, quant_type, double_quant, compute_dtype, device)
    model = prepare_base(model, quantization, gradient_checkpointing)
    if adapter is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)


def keep_4bit_weights_as_loaded(model) -> int:
    """Turn off bitsandbytes' CPU repacking of 4-bit weights; returns the layers changed.

    On a CPU with AVX-512 bf16, a 4-bit layer's first forward in eval mode repacks its weight for
    a bf16 kernel, rounding its scales (absmax) to bf16, and every `state_dict()` (a checkpoint,
    saving the adapter) unpacks it again, re-quantizing those rounded scales (and, without
    double quantization, leaving them in the packed layout). A run that validates and then saves
    would go on training, and measure its test split, on weights a reload does not have: fit's
    test read $5.301 where the saved adapter, reloaded, read $5.302 (tests/test_recipe.py).
    With repacking off, training, test, predict and the Space all compute with the weights
    exactly as loaded.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
