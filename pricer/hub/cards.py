"""Dataset and model cards, rendered from the Jinja templates in `cards/` with huggingface_hub's
card classes (front matter from DatasetCardData / ModelCardData / EvalResult)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pricer.read.metrics import metrics_table

RAW_REPO = "McAuley-Lab/Amazon-Reviews-2023"


def template(name: str, folder: str | None = None) -> Path:
    """A card template: from `folder` if given, else the one shipped in the wheel, else the
    repository's `cards/`."""
    candidates = [Path(folder) / name] if folder else []
    package = Path(__file__).resolve().parent.parent  # pricer/, above pricer/hub/
    candidates += [package / "cards" / name, package.parent / "cards" / name]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"card template {name} not found in {', '.join(map(str, candidates))}")


def price_histogram(prices, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4))
    axes.hist(np.asarray(prices, dtype=float), bins=50, color="steelblue")
    axes.set(xlabel="price ($)", ylabel="items", title=title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def size_category(n: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return name
    return "1M<n<10M"


def dataset_card(
    repo_id: str, curation: dict, accounting, splits: dict[str, int], template_dir: str | None = None
):
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        language="en",
        license="other",
        license_name="none-assigned-research-use",
        pretty_name=f"pricer: {', '.join(curation['categories'])} prices",
        task_categories=["text-generation"],
        size_categories=size_category(sum(splits.values())),
        source_datasets=[RAW_REPO],
        tags=["pricer", "price-prediction", "amazon-reviews-2023"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits if splits[s] > 0],
            }
        ],
    )
    return DatasetCard.from_template(
        data,
        template_path=str(template("dataset_card.md", template_dir)),
        pretty_name=data.pretty_name,
        repo_id=repo_id,
        categories=curation["categories"],
        source=curation["source"],
        revision=curation.get("revision"),
        commit=curation.get("commit"),
        tokenizer=curation["tokenizer"],
        rules={k: v for k, v in curation["rules"].items()},
        accounting_table=accounting.table(),
        splits=splits,
        seed=curation["seed"],
    )


def model_card(
    repo_id: str,
    base_model: str,
    dataset_repo: str | None,
    categories: list[str],
    hyperparameters: dict,
    metrics: dict | None,
    license: str | None,
    training_time: str,
    hardware: str,
    price_range: tuple[float, float],
    template_dir: str | None = None,
    recipe=None,
):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    results = []
    if metrics:
        for key in ("mae", "rmsle", "hit_rate", "smape", "median_ae"):
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="price prediction",
                    # a dataset a reader can open: the published splits, else the raw source
                    dataset_type=dataset_repo or RAW_REPO,
                    dataset_name=f"{', '.join(categories)} test split",
                    dataset_split="test",
                    metric_type=key,
                    metric_name=key,
                    # as people read them: dollars to the cent, ratios to 3 places
                    metric_value=round(float(metrics[key]), 2 if key in ("mae", "median_ae") else 3),
                )
            )
    data = ModelCardData(
        base_model=base_model,
        library_name="peft",
        datasets=[dataset_repo or RAW_REPO],  # always one: the published splits, else the raw source
        pipeline_tag="text-generation",
        tags=["pricer", "lora", "qlora", "price-prediction"],
        license=license,
        model_name=repo_id,
        eval_results=results or None,
    )
    return ModelCard.from_template(
        data,
        template_path=str(template("model_card.md", template_dir)),
        model_name=repo_id,
        repo_id=repo_id,
        base_model=base_model,
        categories=categories,
        metrics=metrics,
        results_table=metrics_table(metrics, "this adapter") if metrics else "",
        read_note=_read_note(metrics) if metrics else "",
        hyperparameters=hyperparameters,
        training_time=training_time,
        hardware=hardware,
        min_price=price_range[0],
        max_price=price_range[1],
        quantization_note=_quantization_note(recipe),
        point=recipe.read["point"] if recipe else "median",
        neighbors=recipe.neighbors if recipe else 0,
        neighbor_title_tokens=recipe.neighbor_title_tokens if recipe else 24,
        neighbor_format=recipe.neighbor_format if recipe else "lines",
        neighbor_min_similarity=recipe.neighbor_min_similarity if recipe else 0.0,
    )


def _quantization_note(recipe) -> str:
    weights = recipe.quantization["weights"] if recipe else "4bit"
    if weights == "4bit":
        kind, double = (
            (recipe.quantization["type"], recipe.quantization["double_quant"]) if recipe else ("nf4", True)
        )
        return f"4-bit {kind.upper()}{' with double quantization' if double else ''}"
    return "8-bit" if weights == "8bit" else "full precision"


def _read_note(metrics: dict) -> str:
    read = metrics.get("read", {})
    return f"the {read.get('point', 'median')} of the price distribution the adapter reads"
