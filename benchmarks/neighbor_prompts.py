"""Neighbours in the prompt, before any training: what k costs in tokens and what the retrieved
items alone say, on the validation split.

For each k, every validation item's k nearest training items are retrieved as `data.neighbors`
retrieves them (pricer.data.neighbors.Retriever on the curated train split), and reported:
the prompt's tokens (mean, 95th percentile, max) with the base model's tokenizer, the time the
retrieval took, and the MAE of the neighbours' own prices as a prediction (their median; the
mean of their log prices). Every number is a validation number: this helps choose k for the
short training runs, it reports no test result. A second table, at the largest k, tries each
minimum similarity (`data.neighbor_min_similarity`): how many prompts keep all k, fewer or none,
and the MAE of the neighbours' median (the training median where none is left).

    python -m benchmarks.neighbor_prompts --splits <curated folder>/data --tokenizer <gguf or Hub id>
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.blend_partners import split_frame
from pricer.base.load import load_tokenizer
from pricer.data.neighbors import Retriever
from pricer.data.prompt import text_from_prompt, with_neighbors
from pricer.read.metrics import mean_interval

K_TRIED = (0, 3, 5, 10)
MIN_SIMILARITY_TRIED = (0.0, 0.05, 0.1, 0.2, 0.3)


def median_or(found: list[list[tuple[str, float]]], fallback: float) -> np.ndarray:
    """Each item's neighbours' median price, `fallback` for an item without any."""
    return np.array([np.median([p for _, p in items]) if items else fallback for items in found])


def main(argv: list[str] | None = None) -> dict[int, dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--splits", type=Path, required=True, help="the curated splits' data folder")
    parser.add_argument("--tokenizer", required=True, help="the base model (a .gguf file or Hub id)")
    parser.add_argument("--title-tokens", type=int, default=24)
    parser.add_argument("--k", type=int, nargs="+", default=list(K_TRIED))
    parser.add_argument("--min-similarity", type=float, nargs="+", default=list(MIN_SIMILARITY_TRIED))
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.tokenizer)
    train, validation = split_frame(args.splits, "train"), split_frame(args.splits, "validation")
    started = time.perf_counter()
    index = Retriever.fit(
        [text_from_prompt(p) for p in train["prompt"]],
        list(train["title"]),
        list(train["price"]),
        tokenizer,
        args.title_tokens,
    )
    built = time.perf_counter() - started
    prompts = list(validation["prompt"])
    texts = [text_from_prompt(p) for p in prompts]
    truth = validation["price"].to_numpy(dtype=np.float64)
    print(
        f"{len(train)} training items indexed in {built:.1f} s; {len(prompts)} validation items; "
        f"titles cut to {args.title_tokens} tokens"
    )
    print(
        "| k | tokens a prompt: mean | p95 | max | x k=0 | retrieval, s | neighbours' median: MAE | 95% CI | mean of log prices: MAE |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    base, results = None, {}
    for k in args.k:
        started = time.perf_counter()
        found = index.neighbors(texts, k)
        took = time.perf_counter() - started
        blocks = index.blocks(texts, k)
        shown = [with_neighbors(p, b) for p, b in zip(prompts, blocks, strict=True)]
        lengths = np.array([len(ids) for ids in tokenizer(shown, add_special_tokens=True)["input_ids"]])
        base = base or lengths.mean()
        row = [
            f"{k}",
            f"{lengths.mean():.0f}",
            f"{np.percentile(lengths, 95):.0f}",
            f"{lengths.max()}",
            f"{lengths.mean() / base:.2f}x",
            f"{took:.2f}",
        ]
        results[k] = {"tokens_mean": float(lengths.mean()), "tokens_max": int(lengths.max())}
        if k:
            fallback = float(np.median(train["price"]))
            median = median_or(found, fallback)
            log_mean = np.array(
                [np.expm1(np.log1p([p for _, p in items]).mean()) if items else fallback for items in found]
            )
            errors = np.abs(median - truth)
            low, high = mean_interval(errors)
            results[k].update(
                median_mae=float(errors.mean()), log_mean_mae=float(np.abs(log_mean - truth).mean())
            )
            row += [
                f"${errors.mean():.2f}",
                f"${low:.2f} to ${high:.2f}",
                f"${np.abs(log_mean - truth).mean():.2f}",
            ]
        else:
            row += ["", "", ""]
        print("| " + " | ".join(row) + " |")
    k = max(args.k)
    if k:
        results["min_similarity"] = similarity_sweep(index, texts, truth, k, args.min_similarity, train)
    return results


def similarity_sweep(index, texts, truth, k: int, tried: list[float], train) -> dict:
    fallback = float(np.median(train["price"]))
    print(
        f"\n| k={k}, minimum similarity | prompts with {k} | fewer | none | neighbours' median: MAE | 95% CI |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    results = {}
    for minimum in tried:
        found = index.neighbors(texts, k, minimum)
        counts = np.array([len(items) for items in found])
        errors = np.abs(median_or(found, fallback) - truth)
        low, high = mean_interval(errors)
        results[minimum] = {
            "with_k": int((counts == k).sum()),
            "fewer": int(((counts > 0) & (counts < k)).sum()),
            "none": int((counts == 0).sum()),
            "shown": int(counts.sum()),
            "median_mae": float(errors.mean()),
        }
        r = results[minimum]
        print(
            f"| {minimum:g} | {r['with_k']} | {r['fewer']} | {r['none']} | ${errors.mean():.2f} | "
            f"${low:.2f} to ${high:.2f} |"
        )
    return results


if __name__ == "__main__":
    main()
