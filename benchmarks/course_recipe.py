"""The course's recipe as a peer: its training (TRL's SFTTrainer, the loss on the completion only,
its LoRA and optimizer settings) and its read-out (greedy `generate` of 3 tokens, then its regex),
on the same base and the same curated splits as a pricer run, so the two compare item by item.

    python benchmarks/course_recipe.py train --splits <curated folder> --gguf $GGUF --out runs/study/course-s1 --seed 1
    python benchmarks/course_recipe.py read --splits <curated folder> --gguf $GGUF --out runs/study/course-s1
    python benchmarks/course_recipe.py read ... --split test     # once, after every choice: recorded in the ledger

The curated folder is the one `pricer curate` (or fit) printed, holding `data/`; its prompts
must be without neighbours (`data.neighbors 0`), the course's prompt. `train` writes the adapter
to `<out>/adapter` and `settings.json` (every setting, the installed TRL's defaults beside the
ones pinned); `read` writes `<out>/validation.csv` (or `predictions.csv` for the test split)
with title, price and predicted, the columns `benchmarks/compare_predictions.py` and
`benchmarks/objective_study.py` read. One epoch at the course's 4 items a step, as its notebook
trained, on the CPU (as pricer's study runs): paged AdamW needs CUDA, so the same AdamW unpaged.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.eval_speed import course_loop  # noqa: E402

# The course's training notebook: QLoRA on the attention projections, one epoch.
COURSE = {
    "lora_r": 32,
    "lora_alpha": 64,
    "lora_dropout": 0.1,
    "target_modules": ["q_proj", "v_proj", "k_proj", "o_proj"],
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,  # the course's warmup_ratio; transformers 5 takes a ratio here
    "weight_decay": 0.001,
    "max_grad_norm": 0.3,
    "optim": "paged_adamw_32bit",
}
# The settings whose defaults moved in TRL since the course, pinned to what it did.
PINNED = {
    "completion_only_loss": True,
    "packing": False,
    "padding_free": False,
    "gradient_checkpointing": False,
    "max_length": None,  # no truncation: the curated texts are already within their token cut
    "use_liger_kernel": False,
    "neftune_noise_alpha": None,
    "dataloader_num_workers": 0,
}


def split(folder: Path, name: str) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted((folder / "data").glob(f"{name}-*.parquet"))
    if not files:
        raise SystemExit(f"{folder}/data has no {name} split")
    rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    if any("Similar items" in r["prompt"] for r in rows):
        raise SystemExit(
            f"{folder}: its prompts show neighbours; the course's prompt has none (data.neighbors 0)"
        )
    return rows


def config_kwargs(args, out: Path) -> dict:
    lora = {"lora_r", "lora_alpha", "lora_dropout", "target_modules"}
    kwargs = {k: v for k, v in COURSE.items() if k not in lora} | PINNED
    kwargs.update(
        optim="adamw_torch",  # paged_adamw_32bit's moments live in CUDA managed memory
        output_dir=str(out / "trl"),
        bf16=args.precision == "bf16",
        use_cpu=True,
        seed=args.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=25,
    )
    if args.max_steps:
        kwargs["max_steps"] = args.max_steps
    return kwargs


def base(args):
    from transformers import AutoModelForCausalLM

    from pricer.base.load import model_source
    from pricer.base.quantization import bnb_config

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        model_source(str(args.gguf)),
        quantization_config=bnb_config("4bit", "nf4", True, dtype),
        dtype=dtype,
        device_map={"": torch.device("cpu")},
    )
    model.config.use_cache = False
    return model


def train(args) -> dict:
    import dataclasses

    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from pricer.base.load import load_tokenizer

    rows = split(args.splits, "train")[: args.limit or None]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    kwargs = config_kwargs(args, args.out)
    config = SFTConfig(**kwargs)
    lora = LoraConfig(
        r=COURSE["lora_r"],
        lora_alpha=COURSE["lora_alpha"],
        lora_dropout=COURSE["lora_dropout"],
        target_modules=COURSE["target_modules"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    defaults = {f.name: f.default for f in dataclasses.fields(SFTConfig)}
    settings = {
        "trl": trl.__version__,
        "items": len(rows),
        "lora": {k: COURSE[k] for k in ("lora_r", "lora_alpha", "lora_dropout", "target_modules")},
        "sft_config": {k: {"used": getattr(config, k), "trl_default": defaults.get(k)} for k in kwargs},
    }
    print(json.dumps(settings, indent=2, default=str), flush=True)
    trainer = SFTTrainer(
        model=base(args), args=config, train_dataset=dataset, processing_class=load_tokenizer(str(args.gguf)),
        peft_config=lora,
    )  # fmt: skip
    result = trainer.train()
    args.out.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(args.out / "adapter")
    settings["train"] = {"steps": result.global_step, "loss": result.training_loss}
    (args.out / "settings.json").write_text(json.dumps(settings, indent=2, default=str) + "\n")
    return settings


def read(args) -> Path:
    from peft import PeftModel

    from pricer.base.load import load_tokenizer
    from pricer.data.test_ledger import LEDGER, record_read

    rows = split(args.splits, args.split)[: args.limit or None]
    tokenizer = load_tokenizer(str(args.gguf))
    model = PeftModel.from_pretrained(base(args), str(args.out / "adapter")).eval()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with autocast:
        prices = course_loop(model, tokenizer, [r["prompt"] for r in rows])
    name = "validation.csv" if args.split == "validation" else "predictions.csv"
    path = args.out / name
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "price", "predicted"])
        writer.writerows([r["title"], r["price"], p] for r, p in zip(rows, prices, strict=True))
    if args.split == "test":
        before = record_read(args.splits / LEDGER, str(args.out), "course recipe", None, "course", len(rows))
        print(f"the test split had been read {before['count']} times before", flush=True)
    truth = [r["price"] for r in rows]
    mae = sum(abs(p - t) for p, t in zip(prices, truth, strict=True)) / len(rows)
    print(f"{args.split}: {len(rows)} items, MAE ${mae:.2f}: {path}", flush=True)
    return path


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["train", "read"])
    parser.add_argument("--splits", type=Path, required=True, help="the curated folder (holding data/)")
    parser.add_argument("--gguf", type=Path, required=True, help="the base model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--split", choices=["validation", "test"], default="validation")
    parser.add_argument("--limit", type=int, help="the first N items only (a smoke run)")
    parser.add_argument("--max-steps", type=int, help="stop after N steps (a smoke run)")
    args = parser.parse_args(argv)
    return train(args) if args.command == "train" else read(args)


if __name__ == "__main__":
    main()
