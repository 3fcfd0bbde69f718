"""Evaluation speed: pricer's batched price reader against the course's loop, side by side.

The course priced one item at a time: `generate(max_new_tokens=3)` after the prompt, then a
regex over the decoded text. pricer reads a whole price distribution for a batch of prompts
(one forward pass over the prompts, then a pruned digit search on the KV cache for digit
tokenizers). Both get the same model object (SmolLM2-135M from the GGUF, with an adapter if
given) and the same test items (pricer's curation of the real sample); both sets of predictions
are scored on those items. Reports items/s (median over repeats, the sides alternating), the
ratio, the MAE of each, and model FLOPs utilisation (2 x parameters x prompt tokens per second
against the measured matmul peak; pricer's digit search does work beyond that).

    python benchmarks/eval_speed.py --sample ../shared/data/amazon-2023-sample \\
        --gguf <SmolLM2-135M-Instruct.Q4_1.gguf> --adapter <run>/adapter --items 100 --repeats 3
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

from benchmarks.training_speed import count_params, machine

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


def load_model(args, precision: str):
    """The course's side, loaded as the course loaded it: transformers with bitsandbytes' NF4."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pricer.base_model import model_source
    from pricer.quantization import bnb_config

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    kwargs = {"dtype": dtype, "device_map": {"": torch.device("cpu")}}
    if args.quantization == "4bit":
        kwargs["quantization_config"] = bnb_config("4bit", "nf4", True, dtype)
    model = AutoModelForCausalLM.from_pretrained(model_source(str(args.gguf)), **kwargs)
    if args.adapter:
        model = PeftModel.from_pretrained(model, str(args.adapter))
    return model.eval()


def load_pricer_model(args, precision: str):
    """pricer's side, loaded as pricer loads every base (`load_base`), with the adapter merged
    into the weights when asked (`--merge`, full precision only)."""
    from peft import PeftModel

    from pricer.base_model import load_base

    dtype = "bfloat16" if precision == "bf16" else "float32"
    model = load_base(str(args.gguf), args.quantization, "nf4", True, dtype, "cpu")
    if args.adapter:
        model = PeftModel.from_pretrained(model, str(args.adapter))
        if args.merge:  # the adapter folded into full-precision weights: plain matmuls, no LoRA detour
            model = model.merge_and_unload()
    return model.eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, required=True, help="the raw data folder")
    parser.add_argument("--gguf", type=Path, required=True, help="the base model (a .gguf file or a folder)")
    parser.add_argument("--adapter", type=Path, help="a trained adapter folder (default: the bare base)")
    parser.add_argument("--categories", nargs="+", default=["Appliances"])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quantization", choices=["4bit", "none"], default="4bit")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the course loop's")
    parser.add_argument("--pricer-dtype", choices=["fp32", "bf16"], help="pricer's (default: --dtype)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="pricer's model: fold the adapter into the weights (with --quantization none)",
    )
    parser.add_argument("--beam", type=int, default=32, help="pricer's reader: prefixes kept per item")
    parser.add_argument(
        "--min-mass", type=float, default=1e-4, help="pricer's reader: prefixes dropped below"
    )
    parser.add_argument("--point", choices=["median", "mean"], default="median")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-gflops", type=float, help="the matmul peak (default: measured now)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    from benchmarks.matmul_peak import matmul_gflops
    from pricer.data import PriceDataModule
    from pricer.reading import PriceReader

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
    args.pricer_dtype = args.pricer_dtype or args.dtype
    models = {"course": load_model(args, args.dtype), "pricer": load_pricer_model(args, args.pricer_dtype)}
    reader = PriceReader(tokenizer, beam=args.beam, min_mass=args.min_mass)
    prompt_tokens = sum(int(b["prompt_mask"].sum()) for b in batches)

    times: dict[str, list[float]] = {"course": [], "pricer": []}
    predictions: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for side in ("course", "pricer"):
            started = time.perf_counter()
            if side == "course":
                predictions[side] = course_loop(models[side], tokenizer, prompts)
            else:
                predictions[side] = pricer_reader(models[side], reader, batches, args.point)
            times[side].append(time.perf_counter() - started)

    peaks = {
        d: matmul_gflops(torch.bfloat16 if d == "bf16" else torch.float32)
        for d in {args.dtype, args.pricer_dtype}
    }
    if args.peak_gflops:
        peaks = dict.fromkeys(peaks, args.peak_gflops)
    from transformers import AutoConfig

    from pricer.base_model import model_source

    params = count_params(AutoConfig.from_pretrained(model_source(str(args.gguf))))
    sides = {}
    for side in ("course", "pricer"):
        seconds = statistics.median(times[side])
        predicted = np.asarray(predictions[side], dtype=np.float64)
        sides[side] = {
            "items_per_s": len(prompts) / seconds,
            "median_seconds": seconds,
            "mae": float(np.abs(predicted - truth).mean()),
            "dtype": args.dtype if side == "course" else args.pricer_dtype,
            "mfu": 2
            * params
            * prompt_tokens
            / seconds
            / (peaks[args.dtype if side == "course" else args.pricer_dtype] * 1e9),
        }
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
                "quantization",
                "point",
                "repeats",
                "beam",
                "min_mass",
                "merge",
            )
        },
        "items": len(prompts),
        "prompt_tokens": prompt_tokens,
        "peak_gflops": peaks,
        **sides,
        "speedup": sides["pricer"]["items_per_s"] / sides["course"]["items_per_s"],
    }
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def print_table(report: dict) -> None:
    setup = report["setup"]
    print(f"Machine: {report['machine']}")
    print(
        f"SmolLM2-135M ({setup['quantization']}), adapter {setup['adapter'] or 'none'}"
        f"{' (merged for pricer)' if setup['merge'] else ''}, "
        f"{report['items']} test items ({report['prompt_tokens']:,} prompt tokens), pricer batch "
        f"{setup['batch_size']}, beam {setup['beam']}, min mass {setup['min_mass']:g}, {setup['point']} "
        f"read-out; median of {setup['repeats']}; matmul peak (GFLOP/s) "
        + ", ".join(f"{d} {g:.0f}" for d, g in report["peak_gflops"].items())
    )
    print("| evaluation | dtype | items/s | ratio | MFU (prompt) | MAE |")
    print("|---|---|---:|---:|---:|---:|")
    for side, name in (
        ("course", "course: generate(max_new_tokens=3) + regex, one item at a time"),
        ("pricer", "pricer: batched price reader"),
    ):
        s = report[side]
        ratio = s["items_per_s"] / report["course"]["items_per_s"]
        print(
            f"| {name} | {s['dtype']} | {s['items_per_s']:.2f} | {ratio:.2f}x | {100 * s['mfu']:.1f}% | "
            f"${s['mae']:.2f} |"
        )


if __name__ == "__main__":
    main()
