"""Training speed: pricer's training step against the course's path, TRL's SFTTrainer with the
loss on the completion only, side by side on the CPU.

Sides (`--sides`, any of):

- `pricer`: pricer's Lightning step, the LM head at the completion positions only.
- `pricer-full-logits`: the same, with the full logits at every position (the same loss and
  gradients, tests/test_model.py).
- `trl`: TRL's SFTTrainer as close to the course's run (an older TRL) as the installed TRL
  allows: every setting whose default changed since is pinned (gradient checkpointing off,
  precision as the run, fp32/bf16 flags, completion-only loss, no packing, no padding-free, no
  activation offloading, no Liger kernels, unfused AdamW, no truncation...) and printed at the start
  of the run. What TRL does not let you turn off is named in the row: its LoRA weights cast to
  bf16 for quantized models, and its fused, chunked LM head (at every position on CPU, where it
  has no Triton; at the completion positions on CUDA/XPU; recomputed in its backward).
- `trl-defaults`: the same trainer with TRL's own defaults (gradient checkpointing on, fused
  AdamW, ...), only the experiment pinned (batch, steps, schedule, seed, order, completion-only
  loss, a loss logged every step) and the precision, which follows `--precision` (TRL's default is
  bf16 whenever fp16 is off).

Equal work: every side gets the same model (SmolLM2-135M from the GGUF, in 4-bit NF4), the same
items in the same order and batches (pricer's tokenization of the real sample, so the same
sequence lengths; each batch padded to its longest), the same initial LoRA weights (saved once,
loaded by every side), batch size, precision and hyperparameters (AdamW, cosine schedule with
warmup, gradient clipping; LoRA dropout 0 so the runs can be compared step by step). The per-step
losses of every side are printed next to the first side's. Each side runs in its own process, so
peak memory is its own; the sides alternate over the repeats. Reports samples/s and tokens/s
(steady state, first steps excluded; tokens without padding), peak resident memory while training
(the peak is reset once the model is loaded), MFU and HFU.

FLOPs of a step (matmuls only; norms, rotary, softmax, SiLU, the 4-bit dequantization and the
optimizer are not counted). A batch of B sequences padded to T, so P = B*T positions through the
decoder; L layers; W = sum of in*out over a layer's linear layers (q, k, v, o, gate, up, down: the
frozen 4-bit base, dequantized and multiplied in the compute dtype); LoRA of rank r on q/k/v/o with
A = sum of (in + out) over them; n_h*d = the query heads times their size; H, V the hidden size and
vocabulary:

    decoder = L * (4*W*P                forward 2*W, input gradient 2*W: the frozen base gets
                                        no weight gradient
                   + 6*r*A*P            LoRA: forward, input gradient and weight gradient, 2 each
                   + 12*B*T^2*n_h*d)    QK^T and AV over the padded T x T square (an explicit
                                        padding mask), forward 4*T^2*n_h*d, backward twice that
    head    = 4*H*V*N                   LM head: forward 2, input gradient 2 (the tied embedding
                                        is frozen) at the N positions where logits are computed:
                                        the completion positions (pricer; TRL with Triton), B*T
                                        (pricer-full-logits), B*(T-1) (TRL on CPU)
    MFU     = (decoder + head) per second / the matmul peak of the compute dtype
    HFU     adds what is computed twice: TRL's chunked head recomputes its logits in backward
            (+2*H*V*N); gradient checkpointing reruns the decoder's forward
            (+L*(2*W*P + 2*r*A*P + 4*B*T^2*n_h*d)).

The peak is benchmarks/matmul_peak.py's, measured now (or `--peak-gflops`), in the dtype the
matmuls run in: fp32 for `--precision fp32`, bf16 for `--precision bf16` (autocast; the 4-bit
layers dequantize to bf16). Exceptions, named in the rows: TRL's bf16 LoRA (its matmuls run in
bf16 in an fp32 run) and, under bf16, TRL's head's input gradient, accumulated in fp32 on CPU.

    python benchmarks/training_speed.py --sample ../shared/data/amazon-2023-sample \\
        --gguf <SmolLM2-135M-Instruct.Q4_1.gguf> --steps 12 --batch-size 4 --repeats 3 \\
        --sides pricer pricer-full-logits trl trl-defaults --precision fp32
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
    "trl": "TRL {version} SFTTrainer closest to the course: no checkpointing, completion-only loss",
    "trl-defaults": "TRL {version} SFTTrainer, its defaults: gradient checkpointing, fused AdamW",
}
TRL_SIDES = ("trl", "trl-defaults")
# The settings that decide how much work a TRL step does and whose defaults moved since the
# course's TRL (or that TRL 1.16 defaults differently from transformers), pinned on the `trl`
# side to the course's behaviour; `trl-defaults` leaves them at the installed TRL's defaults.
COURSE_SETTINGS = {
    "gradient_checkpointing": False,  # TRL 1.16 defaults to True; the course's TRL did not checkpoint
    "activation_checkpointing": False,  # its new name in transformers 5 (the old one is an alias)
    "fp16": False,
    "completion_only_loss": True,  # the course's DataCollatorForCompletionOnlyLM
    "assistant_only_loss": False,
    "packing": False,
    "padding_free": False,
    "activation_offloading": False,
    "use_liger_kernel": False,
    "loss_type": "nll",
    "max_length": None,  # no truncation: pricer's sequences are already within its token budget
    "pad_to_multiple_of": None,
    "shuffle_dataset": False,
    "optim": "adamw_torch",  # transformers 5 defaults to adamw_torch_fused; pricer's is torch.optim.AdamW
    "torch_compile": False,
    "label_smoothing_factor": 0.0,
    "neftune_noise_alpha": None,
    "disable_tqdm": True,  # pricer's run has no progress bar either
    "dataloader_num_workers": 0,
}


def model_options(args) -> dict:
    """PriceModel's options for this benchmark, grouped as a config writes them (the TRL sides
    read them too)."""
    return dict(
        base_model=str(args.gguf),
        quantization={
            "weights": "4bit",
            "compute_dtype": "bfloat16" if args.precision == "bf16" else "float32",
        },
        lora={"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.0, "target_modules": LORA_TARGETS},
        optimizer={
            "learning_rate": args.learning_rate,
            "max_grad_norm": 0.3,
            "weight_decay": 0.001,
            "warmup_ratio": 0.03,
        },
    )


def prepare(args, work: Path) -> None:
    """The batches both sides train on, in order, and the initial LoRA weights."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import save_file

    from pricer.data.module import PriceDataModule
    from pricer.train.model import PriceModel

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

    from pricer.data.batches import PadCollator
    from pricer.train.model import PriceModel

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
    return {
        "times": clock.times,
        "losses": clock.losses,
        "lm_head": "completion" if completion_logits else "all",
        "lm_head_recomputed": False,
        "checkpointing": False,
        "lora_dtype": lora_dtype(model.model),
    }


def lora_dtype(peft_model) -> str:
    dtypes = {str(p.dtype).removeprefix("torch.") for p in peft_model.parameters() if p.requires_grad}
    return "/".join(sorted(dtypes))


def trl_config_kwargs(args, work: Path, defaults: bool) -> dict:
    """SFTConfig's arguments: the experiment's (both TRL sides), and the course's settings
    (`trl` only; `trl-defaults` keeps the installed TRL's defaults for them)."""
    options = model_options(args)
    kwargs = dict(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        learning_rate=options["optimizer"]["learning_rate"],
        weight_decay=options["optimizer"]["weight_decay"],
        warmup_steps=math.ceil(args.steps * options["optimizer"]["warmup_ratio"]),
        lr_scheduler_type="cosine",
        max_grad_norm=options["optimizer"]["max_grad_norm"],
        logging_steps=1,  # the loss of every step, to compare
        report_to="none",
        save_strategy="no",
        bf16=args.precision == "bf16",  # TRL's default is bf16 unless fp16; the run's precision here
        use_cpu=True,
        seed=args.seed,
        completion_only_loss=True,  # the task: TRL's default (None) would train on the prompt too here
        train_sampling_strategy="sequential",  # pricer's order, drawn once in prepare()
        remove_unused_columns=False,
    )
    if not defaults:
        kwargs.update(COURSE_SETTINGS)
    return kwargs


def trl_settings(args) -> list[tuple[str, object, object, object]]:
    """(setting, installed TRL's default, `trl`'s value, `trl-defaults`' value), as SFTConfig
    resolves them."""
    from trl import SFTConfig

    with tempfile.TemporaryDirectory() as tmp:
        course = SFTConfig(**trl_config_kwargs(args, Path(tmp), defaults=False))
        own = SFTConfig(**trl_config_kwargs(args, Path(tmp), defaults=True))
    fields = {f.name: f.default for f in dataclasses.fields(SFTConfig)}
    names = [*COURSE_SETTINGS, "bf16", "learning_rate", "logging_steps", "train_sampling_strategy"]

    def plain(value):  # an enum (optim) as its value
        return getattr(value, "value", value)

    return [(n, plain(fields[n]), plain(getattr(course, n)), plain(getattr(own, n))) for n in names]


def print_trl_settings(args) -> None:
    import trl

    print(f"TRL {trl.__version__} settings (as SFTConfig resolves them):")
    print(f"| setting | TRL {trl.__version__} default | trl (closest to the course) | trl-defaults |")
    print("|---|---|---|---|")
    for name, default, course, own in trl_settings(args):
        print(f"| {name} | {default!r} | {course!r} | {own!r} |")
    print(flush=True)


def run_trl(args, work: Path, defaults: bool = False) -> dict:
    from datasets import Dataset
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from trl.kernels.chunked_logprob import _use_triton

    from pricer.base.load import load_tokenizer, model_source
    from pricer.base.quantization import bnb_config, lora_config

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
    model = get_peft_model(
        base, lora_config(options["lora"]["r"], options["lora"]["alpha"], 0.0, LORA_TARGETS)
    )
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

    config = SFTConfig(**trl_config_kwargs(args, work, defaults))
    tokenizer = load_tokenizer(options["base_model"])
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.add_callback(Timing())
    lora = lora_dtype(trainer.model)  # after TRL's cast of a quantized model's LoRA to bf16
    trainer.train()
    return {
        "times": clock.times,
        "losses": clock.losses,
        # TRL's fused head scores only the completion positions with Triton (CUDA, XPU), every
        # position otherwise (trl/trainer/utils.py, add_fused_lm_head); it recomputes in backward.
        "lm_head": "completion" if _use_triton(torch.device("cpu")) else "shifted",
        "lm_head_recomputed": True,
        "checkpointing": checkpointing(trainer.model.get_base_model()),
        "lora_dtype": lora,
    }


def checkpointing(model) -> bool:
    """Whether the model recomputes activations in backward (transformers 5 renamed the flag)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def child(args) -> None:
    work = Path(args.work)
    torch.manual_seed(args.seed)
    if args.side in TRL_SIDES:
        result = run_trl(args, work, defaults=args.side == "trl-defaults")
    else:
        result = run_pricer(args, work, completion_logits=args.side == "pricer")
    result["peak_rss_mib"] = peak_rss_mib()
    (work / f"{args.side}-{args.repeat}.json").write_text(json.dumps(result))


@dataclasses.dataclass
class Dims:
    """What the FLOPs of a step depend on (see the module's docstring)."""

    layers: int
    layer_weights: int  # W: sum of in*out over one layer's linear layers
    lora_width: int  # A: sum of in+out over one layer's LoRA targets
    attention_width: int  # n_h*d: query heads times head size
    hidden: int
    vocab: int

    @classmethod
    def of(cls, config) -> Dims:
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        layer = model.get_decoder().layers[0]
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        head = model.get_output_embeddings()
        return cls(
            layers=config.num_hidden_layers,
            layer_weights=sum(m.in_features * m.out_features for m in linears.values()),
            lora_width=sum(
                m.in_features + m.out_features
                for n, m in linears.items()
                if n.rsplit(".", 1)[-1] in LORA_TARGETS
            ),
            attention_width=next(m.out_features for n, m in linears.items() if n.endswith("q_proj")),
            hidden=head.in_features,
            vocab=head.out_features,
        )


def step_shapes(work: Path, batch_size: int) -> list[dict]:
    """Per step: sequences, padded length, real tokens, completion positions."""
    rows = examples(work)
    shapes = []
    for i in range(0, len(rows), batch_size):
        batch = rows[i : i + batch_size]
        shapes.append(
            {
                "sequences": len(batch),
                "length": max(len(r["input_ids"]) for r in batch),
                "tokens": sum(len(r["input_ids"]) for r in batch),
                "completion": sum(sum(x != -100 for x in r["labels"][1:]) for r in batch),
            }
        )
    return shapes


def step_flops(dims: Dims, shape: dict, run: dict, lora_r: int) -> tuple[float, float]:
    """(model FLOPs, executed FLOPs) of one step, per the module's docstring."""
    b, t = shape["sequences"], shape["length"]
    positions = b * t
    linear = 2 * dims.layer_weights * positions
    lora = 2 * lora_r * dims.lora_width * positions
    attention = 4 * b * t * t * dims.attention_width
    forward = dims.layers * (linear + lora + attention)
    decoder = dims.layers * (2 * linear + 3 * lora + 3 * attention)
    head_positions = {"completion": shape["completion"], "all": positions, "shifted": b * (t - 1)}[
        run["lm_head"]
    ]
    head = 2 * dims.hidden * dims.vocab * head_positions
    model = decoder + 2 * head
    executed = model + (head if run["lm_head_recomputed"] else 0) + (forward if run["checkpointing"] else 0)
    return model, executed


def summarise(runs: list[dict], shapes: list[dict], skip: int, batch_size: int, dims, lora_r, peak) -> dict:
    samples, tokens, mfu, hfu = [], [], [], []
    for run in runs:
        steady = run["times"][skip:]
        seconds = sum(steady)
        steps = shapes[skip : len(run["times"])]
        flops = [step_flops(dims, s, run, lora_r) for s in steps]
        samples.append(batch_size * len(steady) / seconds)
        tokens.append(sum(s["tokens"] for s in steps) / seconds)
        mfu.append(sum(f[0] for f in flops) / seconds / (peak * 1e9))
        hfu.append(sum(f[1] for f in flops) / seconds / (peak * 1e9))
    first = runs[0]
    return {
        "samples_per_s": statistics.median(samples),
        "tokens_per_s": statistics.median(tokens),
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
        "mfu": statistics.median(mfu),
        "hfu": statistics.median(hfu),
        "losses": first["losses"],
        **{k: first[k] for k in ("lm_head", "lm_head_recomputed", "checkpointing", "lora_dtype")},
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

    settings = None
    if any(side in TRL_SIDES for side in args.sides):
        print_trl_settings(args)
        settings = [
            {"setting": n, "trl_default": repr(d), "trl": repr(c), "trl-defaults": repr(o)}
            for n, d, c, o in trl_settings(args)
        ]
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
        shapes = step_shapes(work, args.batch_size)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = args.peak_gflops or matmul_gflops(dtype)
    from transformers import AutoConfig

    from pricer.base.load import model_source

    dims = Dims.of(AutoConfig.from_pretrained(model_source(str(args.gguf))))
    summary = {
        side: summarise(runs, shapes, args.skip, args.batch_size, dims, args.lora_r, peak)
        for side, runs in results.items()
    }
    reference = args.sides[0]
    for s in summary.values():
        steps = min(len(s["losses"]), len(summary[reference]["losses"]))
        differences = [
            abs(a - b) / abs(b)
            for a, b in zip(s["losses"][:steps], summary[reference]["losses"][:steps], strict=True)
        ]
        s["loss_mean_relative_difference"] = sum(differences) / len(differences) if differences else 0.0
        s["steps_compared"] = steps
    report = {
        "machine": machine(),
        "setup": {
            k: getattr(args, k)
            for k in ("steps", "batch_size", "skip", "precision", "lora_r", "repeats", "categories", "sides")
        },
        "dims": dataclasses.asdict(dims),
        "peak_gflops": peak,
        "peak_dtype": args.precision,
        "trl_settings": settings,
        "loss_reference": reference,
        **summary,
    }
    if "pricer" in summary and "trl" in summary:
        report["speedup"] = summary["pricer"]["samples_per_s"] / summary["trl"]["samples_per_s"]
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def label(side: str, s: dict) -> str:
    """The side's name, and for TRL what it does that cannot be turned off."""
    import trl

    text = SIDES[side].format(version=trl.__version__)
    if side not in TRL_SIDES:
        return text
    head = {
        "completion": "at the completion positions",
        "shifted": "at every position",
    }[s["lm_head"]]
    forced = [f"LoRA cast to {s['lora_dtype']}" if s["lora_dtype"] != "float32" else "LoRA in float32"]
    forced.append(f"chunked LM head {head}, recomputed in backward")
    return f"{text}; forced: {', '.join(forced)}"


def print_table(report: dict) -> None:
    setup = report["setup"]
    sides = setup["sides"]
    print(f"Machine: {report['machine']}")
    print(
        f"SmolLM2-135M 4-bit NF4 + LoRA r {setup['lora_r']} on q/k/v/o, {setup['precision']}, batch "
        f"{setup['batch_size']}, {setup['steps']} steps (first {setup['skip']} left out), median of "
        f"{setup['repeats']}; MFU and HFU against the {report['peak_dtype']} matmul peak, "
        f"{report['peak_gflops']:.0f} GFLOP/s (FLOPs: the module's docstring)"
    )
    reference = "trl" if "trl" in sides else sides[-1]
    print(
        f"| training path | samples/s | tokens/s | peak RSS in training | MFU | HFU | ratio to {reference} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for side in sides:
        s = report[side]
        print(
            f"| {label(side, s)} | {s['samples_per_s']:.3f} | {s['tokens_per_s']:.0f} | "
            f"{s['peak_rss_mib']:,.0f} MiB | {100 * s['mfu']:.1f}% | {100 * s['hfu']:.1f}% | "
            f"{s['samples_per_s'] / report[reference]['samples_per_s']:.2f}x |"
        )
    first = report["loss_reference"]
    print(f"Per-step loss (first repeat), and its difference from {first}:")
    print("| step | " + " | ".join(sides) + " |")
    print("|---:|" + "---:|" * len(sides))
    steps = max(len(report[side]["losses"]) for side in sides)
    for step in range(steps):
        cells = []
        for side in sides:
            losses, base = report[side]["losses"], report[first]["losses"]
            if step >= len(losses):
                cells.append("")
            elif side == first or step >= len(base):
                cells.append(f"{losses[step]:.4f}")
            else:
                cells.append(
                    f"{losses[step]:.4f} ({100 * (losses[step] - base[step]) / abs(base[step]):+.2f}%)"
                )
        print(f"| {step + 1} | " + " | ".join(cells) + " |")
    for side in sides[1:]:
        s = report[side]
        print(
            f"Loss curves ({side} against {first}): mean per-step difference "
            f"{100 * s['loss_mean_relative_difference']:.3f}% of the loss over {s['steps_compared']} steps"
        )


if __name__ == "__main__":
    main()
