"""A price head on a fine-tuned model's last hidden state, measured on validation before it is
built into pricer: does a ridge regression on the features the LLM already computes beat, or
add to, the price it writes?

    python -m benchmarks.hidden_head runs/study/baseline-s1 --splits <curated folder>/data \\
        --base-model $GGUF --out benchmarks/hidden_head.json

The head is pricer's own (`pricer.read.price_head.PriceHead`, `model.blend.head_layers`), on
the features pricer's reader computes (`PriceReader.features`): the final norm's output at the
prompt's last token, the position whose logits give the first price token (`last`), and beside
it the outputs of the two layers before the last (`last3`: the last three layers, as the course
lineage's regression head read them), from one forward pass of the prompt the adapter reads
(its neighbours retrieved from its saved index, as `Pricer.quote_prompt` builds it), under the
run's precision. Each head is a ridge regression on log1p(price) over the standardised features
of the train split, its strength chosen by 5-fold cross-validation on train alone. On the
validation split (the run's `validation.csv` holds the LLM's own prices there) it reports, for
each head, the head alone, the LLM alone, and their mix in log price at each weight 0, 0.1,
..., 1: the best weight in sample, and cross-fitted (the
weight chosen on the even items scored on the odd, and the other way round), with the paired
95% interval of the cross-fitted mix against the LLM alone, and writes each item's prices to
`<run>/hidden_head.csv` (title, price, the LLM's, and each head's and cross-fitted mix: `head`
and `mix` for `last`, `head_last3` and `mix_last3`) for `benchmarks/objective_study.py` to pool
over seeds. The test split is never read.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from benchmarks.blend_partners import split_frame
from benchmarks.figures import report
from benchmarks.training_speed import machine
from pricer.read.metrics import mae_gap
from pricer.read.price_head import PriceHead

WEIGHTS = np.round(np.linspace(0, 1, 11), 2)
ITEMS = "hidden_head.csv"  # each validation item's prices, beside the run's validation.csv
# each head's features: how many of the last layers' outputs at the prompt's last token
LAYERS = {"last": 1, "last3": 3}


def column(name: str, variant: str) -> str:
    """A head's column in ITEMS: `head` and `mix` for `last`, `head_last3` and `mix_last3`."""
    return name if variant == "last" else f"{name}_{variant}"


def prompts_of(pricer, texts: list[str]) -> list[str]:
    """Each text's prompt as the adapter reads it (`Pricer.quote_prompt`)."""
    from pricer.data.prompt import make_prompt, neighbor_block, with_neighbors

    prompts = []
    for text in texts:
        prompt = make_prompt(text)
        if pricer.retriever is not None:
            (found,) = pricer.retriever.neighbors([text], pricer.neighbors, pricer.neighbor_min_similarity)
            prompt = with_neighbors(prompt, neighbor_block(found, pricer.neighbor_format))
        prompts.append(prompt)
    return prompts


def features(pricer, prompts: list[str], batch_size: int) -> dict[str, np.ndarray]:
    """Each head's features of each prompt (`LAYERS`), as pricer's price head reads them, from
    left-padded batches: the deepest head's, and the others their first blocks."""
    tokenizer = pricer.tokenizer
    tokenizer.padding_side = "left"
    deepest = max(LAYERS.values())
    rows = []
    for start in range(0, len(prompts), batch_size):
        encoded = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        rows.append(
            pricer.reader.features(pricer.model, encoded["input_ids"], encoded["attention_mask"], deepest)
        )
    x = np.concatenate(rows)
    width = x.shape[1] // deepest
    return {name: x[:, : width * layers] for name, layers in LAYERS.items()}


def mix(llm: np.ndarray, head: np.ndarray, weight: float) -> np.ndarray:
    return np.expm1((1 - weight) * np.log1p(llm) + weight * np.log1p(head))


def mae(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.abs(predicted - truth).mean())


def cross_fitted(truth: np.ndarray, llm: np.ndarray, head: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The mix at the weight chosen on the other half, for each half (even and odd items)."""
    out, chosen = np.empty_like(truth), []
    halves = [np.arange(len(truth)) % 2 == 0, np.arange(len(truth)) % 2 == 1]
    for choose, score in (halves, halves[::-1]):
        best = min(WEIGHTS, key=lambda w: mae(truth[choose], mix(llm[choose], head[choose], w)))
        out[score] = mix(llm[score], head[score], best)
        chosen.append(float(best))
    return out, chosen


def run(args) -> dict:
    from pricer.data.prompt import text_from_prompt
    from pricer.read.serving import Pricer

    with (args.run / "validation.csv").open(newline="") as handle:
        validation = list(csv.DictReader(handle))
    splits = {name: split_frame(args.splits, name) for name in ("train", "validation")}
    train = splits["train"][: args.train_items or None]
    val = splits["validation"]
    if len(val) != len(validation) or any(
        abs(float(r["price"]) - p) > 0.005 for r, p in zip(validation, val["price"], strict=True)
    ):
        raise SystemExit(
            f"{args.run / 'validation.csv'}: not the validation items of {args.splits}, in order"
        )
    pricer = Pricer.from_adapter(str(args.run / "adapter"), base_model=args.base_model, device="cpu")
    started = time.perf_counter()
    x_train = features(
        pricer, prompts_of(pricer, [text_from_prompt(p) for p in train["prompt"]]), args.batch_size
    )
    x_val = features(
        pricer, prompts_of(pricer, [text_from_prompt(p) for p in val["prompt"]]), args.batch_size
    )
    seconds = time.perf_counter() - started
    truth = np.asarray(val["price"], dtype=np.float64)
    llm = np.array([float(r["predicted"]) for r in validation])
    heads, columns = {}, {"title": list(val["title"]), "price": truth, "llm": llm}
    for variant in LAYERS:
        head = PriceHead.fit(x_train[variant], np.asarray(train["price"], dtype=np.float64), LAYERS[variant])
        from_head = head.predict(x_val[variant])
        by_weight = {float(w): mae(truth, mix(llm, from_head, w)) for w in WEIGHTS}
        crossed, chosen = cross_fitted(truth, llm, from_head)
        columns[column("head", variant)], columns[column("mix", variant)] = from_head, crossed
        heads[variant] = {
            "feature_size": int(x_train[variant].shape[1]),
            "ridge_alpha": head.alpha,
            "head_mae": mae(truth, from_head),
            "mix_mae_by_weight": by_weight,
            "best_weight_in_sample": min(by_weight, key=by_weight.get),
            "cross_fitted_weights": chosen,
            "cross_fitted_mae": mae(truth, crossed),
            "cross_fitted_minus_llm": mae_gap(truth, crossed, llm),
            "head_minus_llm": mae_gap(truth, from_head, llm),
        }
    with (args.run / ITEMS).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values(), strict=True))
    return {
        "run": str(args.run),
        "machine": machine(),
        "train_items": len(train),
        "validation_items": len(val),
        "seconds_for_features": round(seconds, 1),
        "llm_mae": mae(truth, llm),
        "heads": heads,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder: adapter/ and validation.csv")
    parser.add_argument(
        "--splits", type=Path, required=True, help="the data folder of the run's curated splits"
    )
    parser.add_argument("--base-model", help="a local copy of the recipe's base (a GGUF file, say)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-items", type=int, help="the first N training items (default: all)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = run(args)
    return report(result, args.out)


if __name__ == "__main__":
    main()
