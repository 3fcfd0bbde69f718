"""The T4 check: the 8B job's batch search, training steps and price read on a CUDA GPU that
emulates a 16 GB T4, in one script that writes its JSON after each phase.

    PYTHONPATH=. python benchmarks/t4_check.py --out $OUT       # a CUDA GPU: Llama-3.1-8B's shape
    python benchmarks/t4_check.py --toy --out /tmp/t4            # anywhere, a tiny Llama (CI)
    python benchmarks/t4_check.py --arithmetic --json benchmarks/t4_arithmetic.json  # by arithmetic

What it runs, all through pricer's own code (PriceModel, FitBatchSize, PriceReader):
- a model of Llama-3.1-8B's exact architecture (benchmarks/llama-3.1-8b.json), random bf16
  weights drawn from N(0, 0.02) on the GPU (norms at 1), saved as safetensors shards, then
  loaded by `PriceModel.configure_model` in 4-bit NF4 with double quantization (so peft's fp32
  upcast of the embeddings and LM head is counted: memory does not depend on the weights);
- the T4 emulated: fp16 (`16-mixed`, fp16 4-bit compute) whatever the card, its attention
  kernels (flash and cuDNN attention off on a newer card), and FitBatchSize's T4 memory budget
  (14.0 GiB) as the cap on torch's allocator;
- LoRA r 32 on q/k/v/o, gradient checkpointing, paged AdamW 32-bit, synthetic sequences as long
  as the appliances job's longest (measured with Llama 3's tokenizer in prompt_lengths.json: 178
  tokens, 340 with its five neighbours at the longest line each; the completion is the last 3
  tokens), 16 items per optimizer step;
- the batch search, then `--steps` optimizer steps at the size found, then `--course-steps` at
  the course's 4 items a pass (the same 16 a step) for the ratio, then one read of prices with
  whole-number tokens (a stand-in tokenizer writing 0-999 as one token each, as Llama 3's does).

It needs torch, transformers, peft, lightning and bitsandbytes only (no jsonargparse, datasets
or wandb), so it runs from source on a lent GPU machine with bitsandbytes carried as a wheel.
On a CPU Lightning turns `16-mixed` into bf16, so the fp16 path itself runs only on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.t4_memory import arithmetic_estimate, arithmetic_table  # noqa: E402

GIB = 2**30
LLAMA_8B = REPO / "benchmarks" / "llama-3.1-8b.json"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
NUMBER_OFFSET = 16  # the stand-in tokenizer's id of "0"; "999" is 1015
APPLIANCES = REPO / "configs" / "appliances.yaml"
# The appliances job's sequence lengths, measured with Llama 3's real tokenizer on the sample
# (python -m benchmarks.prompt_lengths writes it).
PROMPT_LENGTHS = REPO / "benchmarks" / "prompt_lengths.json"


def appliances_seq_len(config: Path = APPLIANCES, lengths: Path = PROMPT_LENGTHS) -> int:
    """The appliances job's longest training sequence in tokens, from the measured lengths: the
    longest without neighbours (its text cut at the rules' max_tokens), plus, at the config's
    `data.neighbors`, the block's header, its blank line and k of the longest neighbour line
    (measured at one title budget; `data.neighbor_title_tokens` moves each line by the
    difference)."""
    import yaml

    bound = json.loads(lengths.read_text())["bound"]
    data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    k = int(data.get("neighbors", 0))
    title = int(data.get("neighbor_title_tokens", bound["neighbor_title_tokens"]))
    if not k:
        return bound["longest_sequence_k0"]
    line = bound["longest_line"] + title - bound["neighbor_title_tokens"]
    return bound["longest_sequence_k0"] + bound["block_header_tokens"] + bound["separator_tokens"] + k * line


def toy_config() -> dict:
    """A two-layer Llama with room for the 1,000 whole-number tokens."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 1100,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


class WholeNumbers:
    """Stands in for Llama 3's tokenizer where the reader looks: each of 0-999 is one token."""

    pad_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if text.isdigit() and str(int(text)) == text and int(text) < 1000:
            return [NUMBER_OFFSET + int(text)]
        return [3, 4]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [str(i - NUMBER_OFFSET) if i >= NUMBER_OFFSET else f"<{i}>" for i in ids]


def write_random_model(config: dict, folder: Path, device: torch.device, shard_gib: float = 2.0) -> dict:
    """A HF model folder of `config`'s architecture with random bf16 weights drawn on `device`,
    one tensor at a time (a T4 never holds the 16 GB of an 8B model in bf16), in shards."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    started = time.perf_counter()
    llama = LlamaConfig(**config)
    with torch.device("meta"):
        shapes = {name: p.shape for name, p in LlamaForCausalLM(llama).named_parameters()}
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device).manual_seed(0)
    parts, shard, size, total = [], {}, 0, 0
    for index, (name, shape) in enumerate(shapes.items()):
        if name.endswith("norm.weight"):
            tensor = torch.ones(shape, dtype=torch.bfloat16, device=device)
        else:
            tensor = torch.empty(shape, dtype=torch.bfloat16, device=device).normal_(
                0, 0.02, generator=generator
            )
        shard[name] = tensor.cpu()
        size += tensor.numel() * 2
        if size >= shard_gib * GIB or index == len(shapes) - 1:
            part = folder / f"part-{len(parts)}.safetensors"
            save_file(shard, part, metadata={"format": "pt"})
            parts.append((part, list(shard)))
            total += size
            shard, size = {}, 0
    weight_map = {}
    for number, (part, names) in enumerate(parts, start=1):
        final = folder / f"model-{number:05d}-of-{len(parts):05d}.safetensors"
        part.rename(final)
        weight_map.update(dict.fromkeys(names, final.name))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    llama.save_pretrained(folder)
    return {
        "parameters": sum(math.prod(s) for s in shapes.values()),
        "bytes": total,
        "shards": len(parts),
        "seconds": time.perf_counter() - started,
    }


# Synthetic sequences are up to this many tokens shorter than the longest, as the appliances
# job's are with neighbours (prompt_lengths.json: a median 12 tokens under the longest), so
# batches are padded, and masked, as real ones.
LENGTH_SPREAD = 16


def synthetic_items(count: int, seq_len: int, completion: int, vocab: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    items = []
    for index in range(count):
        length = seq_len - index % LENGTH_SPREAD
        ids = torch.randint(NUMBER_OFFSET + 1000, vocab, (length,), generator=generator).tolist()
        labels = [-100] * (length - completion) + ids[length - completion :]
        items.append({"input_ids": ids, "labels": labels})
    return items


def datamodule(items: list[dict], batch_size: int):
    import lightning as L
    from torch.utils.data import DataLoader

    from pricer.data.batches import PadCollator, longest_batch

    class Synthetic(L.LightningDataModule):
        """Synthetic token ids, batched and padded as pricer's DataModule does."""

        def __init__(self) -> None:
            super().__init__()
            self.batch_size = batch_size
            self.collate = PadCollator(pad_token_id=0)

        def train_dataloader(self):
            return DataLoader(items, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate)

        def trial_batch(self, size: int) -> dict:
            return longest_batch(items, size, pad_token_id=0)

    return Synthetic()


def memory(device: torch.device) -> dict:
    """torch's own counters, and the driver's view (`mem_get_info`): a T4 runs out when the card
    is full, which includes what torch's allocator never sees (the CUDA context, paged AdamW's
    managed memory)."""
    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    reserved = torch.cuda.memory_reserved(device)
    return {
        "allocated_gib": torch.cuda.memory_allocated(device) / GIB,
        "peak_allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
        "reserved_gib": reserved / GIB,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
        "card_used_gib": (total - free) / GIB,
        "outside_torch_gib": (total - free - reserved) / GIB,
    }


def cuda_context_gib(device: torch.device) -> float | None:
    """What the card holds before torch allocates anything: the CUDA context and its kernels."""
    if device.type != "cuda":
        return None
    torch.cuda.init()
    torch.empty(1, device=device)  # the context is made lazily, by the first allocation
    free, total = torch.cuda.mem_get_info(device)
    return (total - free - torch.cuda.memory_reserved(device)) / GIB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def meter(result: dict, phase: str, save, device: torch.device, deadline: float):
    """A callback that times each optimizer step and records memory, then saves the JSON."""
    import lightning as L

    class Meter(L.Callback):
        def __init__(self) -> None:
            self.times, self.tokens, self.losses = [], [], []
            self.loaded = time.perf_counter()

        def setup(self, trainer, pl_module, stage):
            self.loaded = time.perf_counter()

        def on_fit_start(self, trainer, pl_module):  # the model is loaded; the search comes next
            result[phase]["load_seconds"] = time.perf_counter() - self.loaded
            result[phase]["after_load"] = memory(device)
            self.search_started = time.perf_counter()
            save()

        def on_train_start(self, trainer, pl_module):
            result[phase]["search_seconds"] = time.perf_counter() - self.search_started
            result[phase]["after_search"] = memory(device)
            # on the host: a copy on the card would sit inside the budget the run is measured in
            self.lora = {
                n: p.detach().to("cpu", copy=True) for n, p in pl_module.named_parameters() if p.requires_grad
            }
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            save()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync(device)
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(device)
            self.times.append(time.perf_counter() - self.started)
            self.tokens.append(int(batch["attention_mask"].sum()))
            self.losses.append(float(outputs["loss"]))
            if time.monotonic() > deadline:
                trainer.should_stop = True

        def on_train_end(self, trainer, pl_module):
            steady = slice(min(2, max(0, len(self.times) - 1)), None)  # the first steps warm up
            seconds = sum(self.times[steady])
            scaler = getattr(trainer.precision_plugin, "scaler", None)
            changed = max(
                float((p.detach().cpu() - self.lora[n]).abs().max())
                for n, p in pl_module.named_parameters()
                if n in self.lora
            )
            result[phase].update(
                {
                    "steps": len(self.times),
                    "tokens_per_s": sum(self.tokens[steady]) / seconds if seconds else None,
                    "seconds_per_step": seconds / len(self.times[steady]) if seconds else None,
                    "losses": self.losses,
                    "micro_batch_size": pl_module.micro_batch_size,
                    "optimizer": type(trainer.optimizers[0]).__name__,
                    "precision": str(trainer.precision),
                    "grad_scaler_scale": float(scaler.get_scale()) if scaler is not None else None,
                    "lora_max_change": changed,
                    "training": memory(device),
                }
            )
            save()

    return Meter()


def trainer_for(device: torch.device, steps: int, callbacks: list, root: Path):
    import lightning as L

    return L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="16-mixed",  # the T4's; Lightning makes it bf16 on a CPU
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
        default_root_dir=str(root),
    )


def versions() -> dict:
    import lightning
    import peft
    import transformers

    found = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    found["lightning"] = lightning.__version__
    try:
        import bitsandbytes

        found["bitsandbytes"] = bitsandbytes.__version__
    except Exception as error:  # a broken native library reads the same as a missing one here
        found["bitsandbytes"] = f"unavailable: {error}"
    found["python"] = platform.python_version()
    return found


class Phases:
    """Each phase in its own guard: its result, or its error, is in the JSON before the next
    phase starts, so a phase that fails (out of memory, a crash in a library) loses nothing
    measured before it and stops nothing after it that does not need it."""

    def __init__(self, result: dict, save) -> None:
        self.result, self.save = result, save

    def run(self, name: str, work, needs: tuple[str, ...] = ()) -> None:
        missing = [n for n in needs if not self.ok(n)]
        if missing:
            self.result[name] = {"skipped": f"needs {', '.join(missing)}, which did not finish"}
        else:
            self.result.setdefault(name, {})
            try:  # any failure is recorded in the JSON, never lost
                work()
            except Exception as error:  # noqa: BLE001
                self.result[name]["error"] = f"{type(error).__name__}: {error}"[:2000]
        self.save()

    def ok(self, name: str) -> bool:
        phase = self.result.get(name)
        return isinstance(phase, dict) and "error" not in phase and "skipped" not in phase


def t4_attention(device: torch.device) -> str | None:
    """A T4's attention kernels on a newer card: a T4 (compute capability 7.5) has no flash
    attention and no cuDNN attention, so SDPA falls to the memory-efficient kernel, or the math
    one where that refuses (grouped-query attention without a mask); both are turned off here so
    the check runs what the T4 would."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 0):
        return None
    torch.backends.cuda.enable_flash_sdp(False)
    if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        torch.backends.cuda.enable_cudnn_sdp(False)
    return "flash and cuDNN attention off, as on a T4"


def run(args) -> dict:
    from pricer.base.options import LoraOptions, QuantizationOptions
    from pricer.read.distribution import PriceReader
    from pricer.train.batch_size import T4_BUDGET_GIB, FitBatchSize, apply_memory_budget
    from pricer.train.model import PriceModel
    from pricer.train.options import OptimizerOptions

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    deadline = time.monotonic() + args.deadline_s
    config = toy_config() if args.toy else json.loads(args.config.read_text())
    budget = args.budget_gib if args.budget_gib is not None else T4_BUDGET_GIB
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = device.type == "cuda"
    result: dict = {
        "scale": "toy" if args.toy else f"{args.config.name} architecture",
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
        "card_memory_gib": torch.cuda.get_device_properties(device).total_memory / GIB if cuda else None,
        "cuda_context_gib": cuda_context_gib(device),
        "budget_gib": budget,
        "versions": versions(),
        "setup": {
            k: getattr(args, k)
            for k in ("seq_len", "completion_tokens", "effective_batch", "steps", "course_steps", "lora_r")
        },
        "arithmetic": arithmetic_estimate(
            config, args.seq_len, args.completion_tokens, args.lora_r, budget, TARGETS
        ),
        "attention": t4_attention(device),
    }

    def save() -> None:
        (args.out / "t4_check.json").write_text(json.dumps(result, indent=2))
        (args.out / "t4_check.md").write_text(table(result))

    save()
    phases = Phases(result, save)
    items = synthetic_items(
        args.effective_batch * max(args.steps, args.course_steps), args.seq_len, args.completion_tokens,
        config["vocab_size"], seed=0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        folder = Path(tmp) / "model"
        state: dict = {}

        def build() -> None:
            result["build"] = write_random_model(config, folder, device)
            state["module"] = PriceModel(
                base_model=str(folder),
                quantization=QuantizationOptions("4bit", "nf4", True, "float16" if cuda else "auto"),
                lora=LoraOptions(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.1, target_modules=TARGETS),
                optimizer=OptimizerOptions(learning_rate=1e-4, max_grad_norm=0.3),
                gradient_checkpointing=True,
            )

        def found() -> None:
            finder = FitBatchSize(
                effective_batch_size=args.effective_batch,
                memory_budget_gib=budget,
                max_val=args.effective_batch,
                steps_per_trial=args.steps_per_trial,
            )
            state["finder"] = finder
            callbacks = [meter(result, "found", save, device, deadline), finder]
            fit = trainer_for(device, args.steps, callbacks, Path(tmp))
            try:
                fit.fit(
                    state["module"],
                    datamodule=datamodule(items[: args.effective_batch * args.steps], args.effective_batch),
                )
            finally:  # what the search tried is kept even when training then fails
                result["found"].update({"search_found": finder.found, "search_tried": finder.tried})

        def course() -> None:
            if time.monotonic() > deadline or not args.course_steps:
                result["course"]["skipped"] = "no time left" if args.course_steps else "--course-steps 0"
                return
            apply_memory_budget(budget, device)
            module = state["module"]
            data = datamodule(items[: args.effective_batch * args.course_steps], args.effective_batch)
            module.micro_batch_size = 4  # the course's per-device batch, the same 16 a step
            callbacks = [meter(result, "course", save, device, deadline)]
            trainer_for(device, args.course_steps, callbacks, Path(tmp)).fit(module, datamodule=data)
            found, four = result["found"].get("tokens_per_s"), result["course"].get("tokens_per_s")
            result["ratio_found_to_course_batch"] = found / four if found and four else None

        def read() -> None:
            if time.monotonic() > deadline:
                result["read"]["skipped"] = "no time left"
                return
            module = state["module"]
            module.to(device)  # wherever a fit's teardown left it: the prompts go to the device
            prompts = torch.tensor(
                [i["input_ids"][: args.seq_len - args.completion_tokens] for i in items[: args.read_items]]
            ).to(device)
            mask = torch.ones_like(prompts)
            reader = PriceReader(WholeNumbers())
            module.model.eval()
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            autocast = torch.autocast(device.type, dtype=torch.float16 if cuda else torch.bfloat16)
            with torch.no_grad(), autocast:
                sync(device)
                started = time.perf_counter()
                distributions = reader.read(module.model, prompts, mask)
                sync(device)
                seconds = time.perf_counter() - started
            result["read"].update(
                {
                    "kind": reader.kind,
                    "items": len(distributions),
                    "items_per_s": len(distributions) / seconds,
                    "placed_mass": [round(1 - d.left_out, 4) for d in distributions],
                    "medians": [d.median for d in distributions],
                    **memory(device),
                }
            )

        phases.run("build", build)
        phases.run("found", found, needs=("build",))
        phases.run("course", course, needs=("build",))
        phases.run("read", read, needs=("build",))
    result["finished"] = True
    save()
    return result


def table(result: dict) -> str:
    """The RESULTS.md table for one run."""
    found, course, arithmetic = result.get("found", {}), result.get("course", {}), result["arithmetic"]

    def gib(value) -> str:
        return f"{value:.2f} GiB" if isinstance(value, (int, float)) else "-"

    def number(value, digits=0) -> str:
        return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else "-"

    lines = [
        f"Device: {result['device']} (compute capability {result['capability']}, "
        f"{number(result['card_memory_gib'], 1)} GiB reported), emulating a T4: budget "
        f"{result['budget_gib']} GiB, 16-mixed; {result['scale']}; versions {result['versions']}",
        "",
        "| measured | value |",
        "|---|---:|",
        f"| batch search tried | {found.get('search_tried', '-')} |",
        f"| pass size found (of {result['setup']['effective_batch']} a step) | {found.get('search_found', '-')} |",
        f"| peak allocated / reserved while training | {gib(found.get('training', {}).get('peak_allocated_gib'))} / "
        f"{gib(found.get('training', {}).get('peak_reserved_gib'))} |",
        f"| tokens/s at the size found | {number(found.get('tokens_per_s'))} |",
        f"| tokens/s at the course's 4 a pass | {number(course.get('tokens_per_s'))} |",
        f"| ratio | {number(result.get('ratio_found_to_course_batch'), 2)}x |",
        f"| optimizer, precision, GradScaler scale | {found.get('optimizer', '-')}, {found.get('precision', '-')}, "
        f"{found.get('grad_scaler_scale', '-')} |",
        f"| steps, LoRA max change | {found.get('steps', '-')}, {found.get('lora_max_change', '-')} |",
        f"| price read: items/s | {number(result.get('read', {}).get('items_per_s'), 1)} |",
        f"| CUDA context (outside torch's counters) | {gib(result.get('cuda_context_gib'))} |",
        f"| card memory used while training (driver) | {gib(found.get('training', {}).get('card_used_gib'))} |",
        *(
            f"| {phase}: did not finish | {str(result[phase].get('error') or result[phase].get('skipped'))[:200]} |"
            for phase in ("build", "found", "course", "read")
            if isinstance(result.get(phase), dict)
            and ("error" in result[phase] or "skipped" in result[phase])
        ),
        "",
        *arithmetic_table(arithmetic, result["budget_gib"], result["setup"]["seq_len"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for t4_check.json and t4_check.md")
    parser.add_argument("--arithmetic", action="store_true", help="print the arithmetic estimate only")
    parser.add_argument("--json", type=Path, help="with --arithmetic: write it here (benchmarks/tables.py)")
    parser.add_argument("--config", type=Path, default=LLAMA_8B, help="the architecture (a HF config.json)")
    parser.add_argument("--toy", action="store_true", help="a tiny Llama instead (CI, any machine)")
    parser.add_argument("--work", default=os.environ.get("TMPDIR"), help="where the random model is written")
    parser.add_argument(
        "--seq-len", type=int, default=appliances_seq_len(), help="default: the appliances config's prompt"
    )
    parser.add_argument("--completion-tokens", type=int, default=3)
    parser.add_argument("--effective-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--course-steps", type=int, default=10)
    parser.add_argument("--steps-per-trial", type=int, default=3)
    parser.add_argument("--read-items", type=int, default=16)
    parser.add_argument("--lora-r", type=int, default=32)
    parser.add_argument("--budget-gib", type=float, help="default: FitBatchSize's T4 budget")
    parser.add_argument("--deadline-s", type=float, default=270, help="stop starting new work after this")
    args = parser.parse_args(argv)
    if args.arithmetic:
        config = toy_config() if args.toy else json.loads(args.config.read_text())
        from pricer.train.batch_size import T4_BUDGET_GIB

        budget = args.budget_gib if args.budget_gib is not None else T4_BUDGET_GIB
        estimate = arithmetic_estimate(
            config, args.seq_len, args.completion_tokens, args.lora_r, budget, TARGETS
        )
        print("\n".join(arithmetic_table(estimate, budget, args.seq_len)))
        if args.json:
            saved = {"estimate": estimate, "budget_gib": budget, "seq_len": args.seq_len}
            args.json.write_text(json.dumps(saved, indent=1) + "\n")
        return estimate
    if args.out is None:
        parser.error("--out is required (or --arithmetic)")
    result = run(args)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
