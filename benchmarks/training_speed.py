"""Training speed: pricer's training step against the course's path, TRL's SFTTrainer with the
loss on the completion only, side by side on the CPU.

Both sides get the same model (SmolLM2-135M from the GGUF, in 4-bit NF4), the same batches in the
same order (pricer's tokenization of the real sample, so the same sequence lengths), the same
initial LoRA weights (saved once, loaded by both), batch size, precision and hyperparameters
(AdamW, cosine schedule with warmup, gradient clipping; LoRA dropout 0 so the two runs can be
compared step by step). Each side runs in its own process, so peak memory is its own; the sides
alternate over the repeats. Reports samples/s and tokens/s (steady state, first steps
excluded), peak resident memory while training (the peak is reset once the model is loaded),
model FLOPs utilisation (4 x parameters x tokens per second
against the measured matmul peak) and the mean per-step loss difference.

    python benchmarks/training_speed.py --sample ../shared/data/amazon-2023-sample \\
        --gguf <SmolLM2-135M-Instruct.Q4_1.gguf> --steps 12 --batch-size 4 --repeats 3

`--sides pricer pricer-full-logits` compares pricer's LM head at the completion positions only
with the full logits at every position (the same loss and gradients, tests/test_model.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SIDES = {
    "pricer": "pricer: Lightning, LM head at the completion only",
    "pricer-full-logits": "pricer: Lightning, full logits at every position",
    "trl": "course: TRL SFTTrainer, completion-only loss",
}


def model_options(args) -> dict:
    return dict(
        base_model=str(args.gguf),
        quantization="4bit",
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.0,
        lora_target_modules=LORA_TARGETS,
        learning_rate=args.learning_rate,
        max_grad_norm=0.3,
        weight_decay=0.001,
        warmup_ratio=0.03,
        compute_dtype="bfloat16" if args.precision == "bf16" else "float32",
    )


def prepare(args, work: Path) -> None:
    """The batches both sides train on, in order, and the initial LoRA weights."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import save_file

    from pricer.data import PriceDataModule
    from pricer.model import PriceModel

    items = args.steps * args.batch_size
    datamodule = PriceDataModule(
        source=str(args.sample),
        categories=args.categories,
        tokenizer=str(args.gguf),
        train_size=items,
        val_size=10,
        test_size=10,
        cache_dir=str(work / "cache"),
        batch_size=args.batch_size,
        num_proc=1,
    )
    datamodule.setup("fit")
    rows = []
    for batch_index, batch in enumerate(datamodule.train_dataloader()):  # pricer's shuffled order
        for ids, labels, mask in zip(
            batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True
        ):
            n = int(mask.sum())
            rows.append({"input_ids": ids[:n].tolist(), "labels": labels[:n].tolist(), "batch": batch_index})
    pq.write_table(pa.Table.from_pylist(rows[:items]), work / "batches.parquet")
    model = PriceModel(**model_options(args))
    torch.manual_seed(args.seed)
    model.configure_model()
    lora = {k: v.detach().contiguous() for k, v in model.model.named_parameters() if v.requires_grad}
    save_file(lora, work / "lora_init.safetensors")


def examples(work: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(work / "batches.parquet").to_pylist()


class Clock:
    """Per-step wall times and losses, in whichever framework calls it."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.losses: list[float] = []
        self._started = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self, loss: float | None = None) -> None:
        self.times.append(time.perf_counter() - self._started)
        if loss is not None:
            self.losses.append(loss)


def load_lora_init(peft_model, work: Path) -> None:
    from safetensors.torch import load_file

    saved = load_file(work / "lora_init.safetensors")
    params = dict(peft_model.named_parameters())
    assert set(saved) == {k for k, v in params.items() if v.requires_grad}, "LoRA layouts differ"
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


def reset_peak_rss() -> None:
    """Linux keeps a process's peak resident memory (VmHWM); writing 5 to clear_refs resets it,
    so the peak read at the end is the training's, not the model loading's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_pricer(args, work: Path, completion_logits: bool = True) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader

    from pricer.batches import PadCollator
    from pricer.model import PriceModel

    rows = examples(work)
    model = PriceModel(**model_options(args), completion_logits=completion_logits)
    model.configure_model()
    load_lora_init(model.model, work)
    clock = Clock()

    class Timing(L.Callback):
        def on_train_start(self, trainer, pl_module):
            reset_peak_rss()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            clock.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.stop(float(outputs["loss"]))

    pad = model.reader.tokenizer.pad_token_id
    loader = DataLoader(rows, batch_size=args.batch_size, shuffle=False, collate_fn=PadCollator(pad))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=args.steps,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Timing()],
        default_root_dir=str(work / "lightning"),
    )
    trainer.fit(model, train_dataloaders=loader)
    return {"times": clock.times, "losses": clock.losses}


def run_trl(args, work: Path) -> dict:
    from datasets import Dataset
    from peft import get_peft_model, prepare_model_for_kbit_training
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from pricer.base_model import load_tokenizer, model_source
    from pricer.quantization import bnb_config, lora_config

    options = model_options(args)
    rows = examples(work)
    # The same tokens: prompt and completion as pricer tokenized them, the completion marked.
    dataset = Dataset.from_list(
        [
            {"input_ids": r["input_ids"], "completion_mask": [int(x != -100) for x in r["labels"]]}
            for r in rows
        ]
    )
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(
        model_source(options["base_model"]),
        quantization_config=bnb_config("4bit", "nf4", True, dtype),
        dtype=dtype,
        device_map={"": torch.device("cpu")},
    )
    base.config.use_cache = False
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    model = get_peft_model(base, lora_config(options["lora_r"], options["lora_alpha"], 0.0, LORA_TARGETS))
    load_lora_init(model, work)
    clock = Clock()

    class Timing(TrainerCallback):
        def on_train_begin(self, *_, **__):
            reset_peak_rss()

        def on_step_begin(self, *_, **__):
            clock.start()

        def on_step_end(self, *_, **__):
            clock.stop()

        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                clock.losses.append(float(logs["loss"]))

    class InOrder(SFTTrainer):  # the given order, as pricer's batches were drawn
        def _get_train_sampler(self, *_, **__):
            return SequentialSampler(self.train_dataset)

    config = SFTConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        learning_rate=options["learning_rate"],
        weight_decay=options["weight_decay"],
        warmup_steps=math.ceil(args.steps * options["warmup_ratio"]),
        lr_scheduler_type="cosine",
        max_grad_norm=0.3,
        optim="adamw_torch",
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        bf16=args.precision == "bf16",
        use_cpu=True,
        seed=args.seed,
        completion_only_loss=True,
        max_length=None,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    tokenizer = load_tokenizer(options["base_model"])
    trainer = InOrder(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.add_callback(Timing())
    trainer.train()
    return {"times": clock.times, "losses": clock.losses}


def child(args) -> None:
    work = Path(args.work)
    torch.manual_seed(args.seed)
    if args.side == "trl":
        result = run_trl(args, work)
    else:
        result = run_pricer(args, work, completion_logits=args.side == "pricer")
    result["peak_rss_mib"] = peak_rss_mib()
    result["tokens_per_step"] = tokens_per_step(work, args.batch_size)
    (work / f"{args.side}-{args.repeat}.json").write_text(json.dumps(result))


def tokens_per_step(work: Path, batch_size: int) -> list[int]:
    rows = examples(work)
    return [
        sum(len(r["input_ids"]) for r in rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)
    ]


def summarise(runs: list[dict], skip: int, batch_size: int, params: int, peak_gflops: float) -> dict:
    samples, tokens = [], []
    for run in runs:
        steady = run["times"][skip:]
        seconds = sum(steady)
        samples.append(batch_size * len(steady) / seconds)
        tokens.append(sum(run["tokens_per_step"][skip : len(run["times"])]) / seconds)
    tokens_s = statistics.median(tokens)
    return {
        "samples_per_s": statistics.median(samples),
        "tokens_per_s": tokens_s,
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
        "mfu": 4 * params * tokens_s / (peak_gflops * 1e9),
        "losses": runs[0]["losses"],
    }


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    memory = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")) / 2**20
    import lightning
    import peft
    import transformers
    import trl

    return (
        f"{cpu}, {torch.get_num_threads()} threads, {memory:.0f} GiB; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, peft {peft.__version__}, lightning "
        f"{lightning.__version__}, trl {trl.__version__}"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, required=True, help="the raw data folder")
    parser.add_argument("--gguf", type=Path, required=True, help="the base model (a .gguf file or a folder)")
    parser.add_argument("--categories", nargs="+", default=["Appliances"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the throughput")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--lora-r", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-gflops", type=float, help="the matmul peak (default: measured now)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=["pricer", "trl"])
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        child(args)
        return {}

    from benchmarks.matmul_peak import matmul_gflops

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(args, work)
        for repeat in range(args.repeats):
            for side in args.sides:
                command = [sys.executable, "-m", "benchmarks.training_speed", *(argv or sys.argv[1:])]
                command += ["--side", side, "--work", str(work), "--repeat", str(repeat)]
                subprocess.run(command, check=True, cwd=Path(__file__).resolve().parent.parent)
        results = {
            side: [json.loads((work / f"{side}-{r}.json").read_text()) for r in range(args.repeats)]
            for side in args.sides
        }
        dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
        peak = args.peak_gflops or matmul_gflops(dtype)
        from transformers import AutoConfig

        from pricer.base_model import model_source

        config = AutoConfig.from_pretrained(model_source(str(args.gguf)))
        params = count_params(config)
    summary = {
        side: summarise(runs, args.skip, args.batch_size, params, peak) for side, runs in results.items()
    }
    first, other = args.sides[0], args.sides[-1]
    steps = min(len(summary[first]["losses"]), len(summary[other]["losses"]))
    differences = [
        abs(a - b) / abs(b)
        for a, b in zip(summary[first]["losses"][:steps], summary[other]["losses"][:steps], strict=True)
    ]
    report = {
        "machine": machine(),
        "setup": {
            k: getattr(args, k)
            for k in ("steps", "batch_size", "skip", "precision", "lora_r", "repeats", "categories", "sides")
        },
        "params": params,
        "peak_gflops": peak,
        **summary,
        "loss_mean_relative_difference": sum(differences) / len(differences),
        "steps_compared": steps,
    }
    if "pricer" in summary and "trl" in summary:
        report["speedup"] = summary["pricer"]["samples_per_s"] / summary["trl"]["samples_per_s"]
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def count_params(config) -> int:
    """Parameters that take part in the matmuls (the tied input embedding is a lookup)."""
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def print_table(report: dict) -> None:
    setup = report["setup"]
    print(f"Machine: {report['machine']}")
    print(
        f"SmolLM2-135M 4-bit NF4 + LoRA r {setup['lora_r']} on q/k/v/o, {setup['precision']}, batch "
        f"{setup['batch_size']}, {setup['steps']} steps (first {setup['skip']} left out), median of "
        f"{setup['repeats']}; matmul peak {report['peak_gflops']:.0f} GFLOP/s"
    )
    print("| training path | samples/s | tokens/s | peak RSS in training | MFU | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    reference = report[setup["sides"][-1]]["samples_per_s"]
    for side in setup["sides"]:
        s = report[side]
        print(
            f"| {SIDES[side]} | {s['samples_per_s']:.3f} | {s['tokens_per_s']:.0f} | {s['peak_rss_mib']:,.0f} MiB | "
            f"{100 * s['mfu']:.1f}% | {s['samples_per_s'] / reference:.2f}x |"
        )
    print(
        f"Loss curves ({SIDES[setup['sides'][0]]} against {SIDES[setup['sides'][-1]]}): mean per-step "
        f"difference {100 * report['loss_mean_relative_difference']:.3f}% of the loss over "
        f"{report['steps_compared']} steps"
    )


if __name__ == "__main__":
    main()
