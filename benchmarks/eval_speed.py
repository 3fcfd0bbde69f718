"""Evaluation speed: pricer's test read against the course's loop, on the same NF4 weights.

Sides (`--sides`), each as its own project runs it, all in the same compute dtype (`--dtype`):
- `course`: the course's tester, one item at a time: `generate(max_new_tokens=3)` greedily after
  the prompt, then a regex over the decoded text. Loaded as the course loaded it: transformers
  with bitsandbytes NF4 (double quantization) in the dtype, the adapter unmerged, bitsandbytes'
  own CPU settings.
- `pricer-4bit`: pricer's batched price reader (a distribution per item: one forward over the
  left-padded prompts, then the pruned digit search on the KV cache) on the same NF4 weights
  loaded by `load_base`, layer by layer in 4-bit.
- `pricer`: the same reader and model with the dense CPU read that `test`, `predict` and the
  Space use (pricer/read/dense.py): the same 4-bit weights dequantized once, the adapter merged
  in fp32 (unmerged in 16-bit). The swap is timed with the read.
- `pricer-shared`: `pricer` with the shared prefix (`model.read_shared_prefix`, off by default):
  the question every prompt starts with computed once a batch, the prompts read from its KV
  cache.

Every side reads the same test items (pricer's curation of the real sample); the predictions are
kept and compared item by item (`--json`), and each side's MAE is reported. Items/s are medians
over repeats, the sides alternating, after one untimed pass of each side that counts its FLOPs
(torch's FlopCounterMode over what the side computed, with bitsandbytes' 4-bit matmuls and the
CPU's fused attention added: benchmarks/flops.py) and whose prices every timed pass must repeat;
against the measured matmul peak of the dtype the matmuls run in.

    python benchmarks/eval_speed.py --sample ../shared/data/amazon-2023-sample \\
        --gguf <SmolLM2-135M-Instruct.Q4_1.gguf> --adapter <run>/adapter --items 64 --repeats 3 \\
        --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.flops import flop_counter
from benchmarks.training_speed import machine
from pricer.read.metrics import prices_agree

SIDES = ("course", "pricer-4bit", "pricer", "pricer-shared")
LABELS = {
    "course": "course: generate(max_new_tokens=3) + regex, one item at a time, NF4",
    "pricer-4bit": "pricer: batched price reader, NF4 layer by layer",
    "pricer": "pricer test read: batched price reader, NF4 weights dequantized once (dense)",
    "pricer-shared": "pricer test read, the shared question computed once a batch (read_shared_prefix)",
}
PREFIX = "Price is $"


def course_price(text: str) -> float:
    """The course's extract_price: the first number after "Price is $", else 0."""
    if PREFIX not in text:
        return 0.0
    contents = text.split(PREFIX)[1].replace(",", "")
    match = re.search(r"[-+]?\d*\.\d+|\d+", contents)
    return float(match.group()) if match else 0.0


@torch.no_grad()
def course_loop(model, tokenizer, prompts: list[str]) -> list[float]:
    """One item at a time, as the course's tester did."""
    prices = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=True)
        out = model.generate(
            inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            max_new_tokens=3,
            num_return_sequences=1,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        prices.append(course_price(tokenizer.decode(out[0], skip_special_tokens=True)))
    return prices


@torch.no_grad()
def pricer_reader(model, reader, loader, point: str) -> list[float]:
    """pricer's path: the test loader's left-padded prompts, read as distributions."""
    prices = []
    for batch in loader:
        distributions = reader.read(model, batch["prompt_ids"], batch["prompt_mask"])
        prices += [d.point(point) for d in distributions]
    return prices


def torch_dtype(name: str) -> torch.dtype:
    return torch.bfloat16 if name == "bf16" else torch.float32


def load_course_model(args):
    """The course's side, loaded as the course loaded it: transformers with bitsandbytes' NF4
    and its default CPU settings, the adapter unmerged."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pricer.base.load import model_source
    from pricer.base.quantization import bnb_config

    dtype = torch_dtype(args.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        model_source(str(args.gguf)),
        quantization_config=bnb_config("4bit", "nf4", True, dtype),
        dtype=dtype,
        device_map={"": torch.device("cpu")},
    )
    if args.adapter:
        model = PeftModel.from_pretrained(model, str(args.adapter))
    return model.eval()


def load_pricer_model(args):
    """pricer's side, loaded as pricer loads every base (`load_base`), with the adapter."""
    from peft import PeftModel

    from pricer.base.load import load_base

    model = load_base(
        str(args.gguf), "4bit", "nf4", True, "bfloat16" if args.dtype == "bf16" else "float32", "cpu"
    )
    if args.adapter:
        model = PeftModel.from_pretrained(model, str(args.adapter))
    return model.eval()


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """How two sides' predictions of the same items compare."""
    gap = np.abs(a - b)
    close = prices_agree(a, b)
    return {
        "within_50c_or_1pct": float(close.mean()),
        "mean_abs_difference": float(gap.mean()),
        "max_abs_difference": float(gap.max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, required=True, help="the raw data folder")
    parser.add_argument("--gguf", type=Path, required=True, help="the base model (a .gguf file or a folder)")
    parser.add_argument("--adapter", type=Path, help="a trained adapter folder (default: the bare base)")
    parser.add_argument("--categories", nargs="+", default=["Appliances"])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--dtype", choices=["fp32", "bf16"], default="bf16", help="every side's compute dtype"
    )
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--beam", type=int, default=32, help="pricer's reader: prefixes kept per item")
    parser.add_argument(
        "--min-mass", type=float, default=1e-4, help="pricer's reader: prefixes dropped below"
    )
    parser.add_argument("--point", choices=["median", "mean"], default="median")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-gflops", type=float, help="the matmul peak (default: measured now)")
    parser.add_argument("--json", type=Path, help="write the results and every prediction here")
    args = parser.parse_args(argv)

    from benchmarks.matmul_peak import matmul_gflops
    from pricer.data.module import PriceDataModule
    from pricer.read.dense import dense_weights
    from pricer.read.distribution import PriceReader

    with tempfile.TemporaryDirectory() as cache:
        datamodule = PriceDataModule(
            source=str(args.sample),
            categories=args.categories,
            tokenizer=str(args.gguf),
            train_size=10,
            val_size=10,
            test_size=args.items,
            cache_dir=cache,
            eval_batch_size=args.batch_size,
            num_proc=1,
        )
        datamodule.setup("test")
        test = datamodule.load_splits()["test"]
        prompts, truth = list(test["prompt"]), np.asarray(test["price"], dtype=np.float64)
        batches = list(datamodule.test_dataloader())  # collated once: the same tensors every repeat
    tokenizer = datamodule.tokenizer
    course = load_course_model(args) if "course" in args.sides else None
    pricer = load_pricer_model(args) if set(args.sides) - {"course"} else None
    reader = PriceReader(tokenizer, beam=args.beam, min_mass=args.min_mass)
    shared = PriceReader(tokenizer, beam=args.beam, min_mass=args.min_mass, share_prefix=True)

    def run(side: str) -> list[float]:
        if side == "course":
            return course_loop(course, tokenizer, prompts)
        if side == "pricer-4bit":
            return pricer_reader(pricer, reader, batches, args.point)
        with dense_weights(pricer):  # as test does: swapped in once for the pass, timed with it
            return pricer_reader(pricer, shared if side == "pricer-shared" else reader, batches, args.point)

    times: dict[str, list[float]] = {side: [] for side in args.sides}
    flops: dict[str, float] = {}
    predictions: dict[str, list[float]] = {}
    for side in args.sides:  # counted once, untimed: the counter slows every op it sees
        with flop_counter() as counter:
            predictions[side] = run(side)
        flops[side] = counter.get_total_flops()
    for repeat in range(args.repeats):
        for side in args.sides if repeat % 2 == 0 else args.sides[::-1]:
            started = time.perf_counter()
            timed = run(side)
            times[side].append(time.perf_counter() - started)
            if timed != predictions[side]:
                raise SystemExit(f"{side}: the counted pass and a timed pass priced the items differently")

    peak = args.peak_gflops or matmul_gflops(torch_dtype(args.dtype))
    sides = {}
    for side in args.sides:
        seconds = statistics.median(times[side])
        predicted = np.asarray(predictions[side], dtype=np.float64)
        sides[side] = {
            "items_per_s": len(prompts) / seconds,
            "median_seconds": seconds,
            "seconds": times[side],
            "mae": float(np.abs(predicted - truth).mean()),
            "gflop_per_item": flops[side] / len(prompts) / 1e9,
            "mfu": flops[side] / seconds / (peak * 1e9),
        }
    compared = {}
    pairs = (
        ("pricer-shared", "pricer"),
        ("pricer", "pricer-4bit"),
        ("pricer", "course"),
        ("pricer-4bit", "course"),
    )
    for a, b in pairs:
        if a in sides and b in sides:
            compared[f"{a} vs {b}"] = agreement(np.asarray(predictions[a]), np.asarray(predictions[b]))
    report = {
        "machine": machine(),
        "setup": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k
            in (
                "adapter",
                "categories",
                "items",
                "batch_size",
                "dtype",
                "point",
                "repeats",
                "beam",
                "min_mass",
            )
        },
        "items": len(prompts),
        "prompt_tokens": sum(int(b["prompt_mask"].sum()) for b in batches),
        "peak_gflops": peak,
        "sides": sides,
        "compared": compared,
        "ratios": {s: sides[s]["items_per_s"] / sides["course"]["items_per_s"] for s in sides}
        if "course" in sides
        else {},
    }
    print_table(report)
    if args.json:
        args.json.write_text(
            json.dumps({**report, "truth": truth.tolist(), "predictions": predictions}, indent=2)
        )
    return report


def print_table(report: dict) -> None:
    setup = report["setup"]
    print(f"Machine: {report['machine']}")
    print(
        f"SmolLM2-135M in NF4, adapter {setup['adapter'] or 'none'}, compute {setup['dtype']} on every side, "
        f"{report['items']} test items ({report['prompt_tokens']:,} prompt tokens), pricer batch "
        f"{setup['batch_size']}, beam {setup['beam']}, min mass {setup['min_mass']:g}, {setup['point']} "
        f"read-out; median of {setup['repeats']}; {setup['dtype']} matmul peak {report['peak_gflops']:.0f} GFLOP/s"
    )
    print("| evaluation | items/s | x course | GFLOP an item | MFU | MAE |")
    print("|---|---:|---:|---:|---:|---:|")
    for side, s in report["sides"].items():
        ratio = report["ratios"].get(side)
        print(
            f"| {LABELS[side]} | {s['items_per_s']:.2f} | {f'{ratio:.2f}x' if ratio else '-'} | "
            f"{s['gflop_per_item']:.1f} | {100 * s['mfu']:.1f}% | ${s['mae']:.2f} |"
        )
    for pair, c in report["compared"].items():
        print(
            f"- {pair}: {100 * c['within_50c_or_1pct']:.1f}% of items within $0.50 or 1%, mean |difference| "
            f"${c['mean_abs_difference']:.2f}, largest ${c['max_abs_difference']:.2f}"
        )


if __name__ == "__main__":
    main()
