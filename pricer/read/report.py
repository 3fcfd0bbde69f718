"""The test report: metrics.json, predictions.csv and scatter.png in the run folder, and W&B."""

from __future__ import annotations

import csv
import json
import os
import unicodedata
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from pricer.data.test_ledger import record_read, run_name
from pricer.read.baselines import baseline_predictions
from pricer.read.blend import coverage
from pricer.read.metrics import coverage_below_nominal, mae_gap, metrics_table, price_metrics

COLUMNS = ("title", "category", "price", "predicted", "low", "high", "llm_predicted", "llm_low", "llm_high")
PREDICT_COLUMNS = ("title", "predicted", "low", "high")
VALIDATION_COLUMNS = ("title", "price", "predicted", "low", "high")


def write_predictions(rows: list[dict], path: Path, columns=COLUMNS, cents: bool = False) -> None:
    """One row per item. `cents`: prices to the cent and titles printable (predict's output,
    read by people and spreadsheets); the test report keeps full precision for comparisons."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            row = {k: row[k] for k in columns}
            if cents:
                row = {k: round(v, 2) if isinstance(v, float) else printable(v) for k, v in row.items()}
            writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) in a
# product title): such text cells are written with a leading apostrophe, as OWASP advises.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """Text a spreadsheet would run as a formula, made inert; numbers and other text as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def printable(value):
    """Text with every kind of space as one space and no control, format (bidi), private-use or
    unassigned characters, which a CSV viewer would act on or show as boxes; a number as it is."""
    if not isinstance(value, str):
        return value
    kept = [" " if c.isspace() else c for c in value if c.isspace() or unicodedata.category(c)[0] not in "CZ"]
    return " ".join("".join(kept).split())


def scatter(truth: np.ndarray, predicted: np.ndarray, metrics: dict, path: Path) -> dict:
    """Truth against prediction on log axes, coloured as the course did: green within $40 or
    20%, orange within $80 or 40%, red beyond, with a legend; y = x for reference. Returns the
    axes' scales and legend labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    error = np.abs(predicted - truth)
    green = (error < 40) | (error < 0.2 * truth)
    orange = ~green & ((error < 80) | (error < 0.4 * truth))
    red = ~green & ~orange
    # prices span $1 to $1,000: log axes show the cheap items, where most of them are
    low = max(0.5, float(min(truth.min(), predicted.min())) * 0.8)
    top = max(float(truth.max()), float(predicted.max()), 1.0) * 1.25
    figure, axes = plt.subplots(figsize=(7, 7))
    for mask, colour, label in (
        (green, "green", "within $40 or 20%"),
        (orange, "orange", "within $80 or 40%"),
        (red, "red", "further off"),
    ):
        axes.scatter(
            truth[mask], predicted[mask], s=8, c=colour, alpha=0.7, label=f"{label} ({int(mask.sum())})"
        )
    axes.plot([low, top], [low, top], color="steelblue", linewidth=1, label="predicted = true")
    axes.set(xscale="log", yscale="log", xlim=(low, top), ylim=(low, top))
    axes.set(xlabel="true price ($, log scale)", ylabel="predicted price ($, log scale)")
    axes.legend(loc="upper left", fontsize=9)
    axes.set_title(
        f"MAE ${metrics['mae']:,.2f}  RMSLE {metrics['rmsle']:.2f}  hits {100 * metrics['hit_rate']:.1f}%"
        f"  (n={metrics['n']})",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    shown = {
        "scales": (axes.get_xscale(), axes.get_yscale()),
        "legend": [t.get_text() for t in axes.get_legend().get_texts()],
    }
    plt.close(figure)
    return shown


def run_folder(trainer) -> Path:
    """The run folder a report is written in, made when it is not there yet."""
    folder = Path(trainer.default_root_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_validation(rows: list[dict], folder: Path) -> Path:
    """The LLM's reads of the validation split, an item a row: what validation chose with, kept
    so that two runs can be compared item by item (benchmarks/compare_predictions.py)."""
    path = folder / "validation.csv"
    titled = [{**r, "title": r["text"].split("\n", 1)[0]} for r in rows]
    write_predictions(titled, path, VALIDATION_COLUMNS)
    return path


class PriceReport(Callback):
    """After a test pass: metrics beside the baselines, predictions and a chart, in the run folder;
    after `predict`, `predict.csv` (title, predicted, low, high); after `validate`, and in
    fit for the weights it kept, `validation.csv` (title, price, and the LLM's predicted, low and
    high on the validation split).

    Writes `metrics.json` (n, mae, rmsle, hit_rate, smape, median_ae, mae_ci95, baselines,
    interval_coverage, and with a blend the LLM alone beside it), `predictions.csv` (each
    item's price, the read-out, the LLM's own and every baseline's) and `scatter.png` into
    `trainer.default_root_dir`, and logs the metrics, the chart and a predictions table to W&B.
    """

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.predicted: list[dict] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.predicted.extend(outputs)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.predicted:
            folder = run_folder(trainer)
            write_predictions(self.predicted, folder / "predict.csv", PREDICT_COLUMNS, cents=True)
            print(f"predictions for {len(self.predicted)} products: {folder / 'predict.csv'}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = getattr(pl_module, "validation_rows", None)
        if trainer.state.fn == "validate" and trainer.is_global_zero and rows:
            print(
                f"validation: {len(rows)} items read, each in {write_validation(rows, run_folder(trainer))}"
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # what validation chose with, whether or not fit goes on to read the test split
        rows = getattr(pl_module, "validation_rows", None)
        if trainer.is_global_zero and rows:
            write_validation(rows, run_folder(trainer))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = pl_module.test_rows
        if not trainer.is_global_zero or not rows:
            return
        folder = run_folder(trainer)
        truth = np.array([r["price"] for r in rows])
        predicted = np.array([r["predicted"] for r in rows])
        metrics = price_metrics(truth, predicted)
        metrics["baselines"], baseline_prices, fitted_on = self._baselines(
            trainer, pl_module, truth, predicted
        )
        if fitted_on:
            metrics["baselines_fitted_on"] = fitted_on
        prompts = getattr(trainer.datamodule, "neighbor_prompts", None)
        accounting = prompts.accounting if prompts is not None else None
        if accounting:
            metrics["neighbors"] = {"k": trainer.datamodule.neighbors, **accounting}
        blend = pl_module.blend
        served = getattr(pl_module, "served", None)
        if served:
            print(f"test: served {served}")
        metrics["read"] = {
            "served": served,
            "point": pl_module.hparams.read["point"],
            "interval": pl_module.hparams.read["interval_coverage"],
            "blend_weight": blend.weight,
            "interval_scale": blend.interval_scale,
            "blend_knn_share": blend.knn_share,
        }
        # what the interval means: the share of true prices inside it, beside what it claims
        low, high = np.array([r["low"] for r in rows]), np.array([r["high"] for r in rows])
        nominal, measured = pl_module.hparams.read["interval_coverage"], coverage(truth, low, high)
        metrics["interval_coverage"] = {"nominal": nominal, "measured": measured}
        below = coverage_below_nominal(measured, nominal, len(truth))
        if below:
            metrics["interval_coverage"]["below_nominal"] = below
            print(f"test: {below}")
        llm = np.array([r["llm_predicted"] for r in rows])
        metrics["blend"] = self._blend(pl_module, rows, truth, llm, baseline_prices)
        if getattr(pl_module, "weights_from", None):
            metrics["weights_from"] = pl_module.weights_from
        ledger = getattr(trainer.datamodule, "test_ledger", None)
        if callable(ledger):
            stage = getattr(trainer.state.fn, "value", str(trainer.state.fn))
            before = record_read(ledger(), str(folder), stage, folder / "config.yaml", served, len(rows))
            metrics["test_reads_before"] = {
                "count": before["count"],
                "runs": [run_name(r) for r in before["runs"]],
            }
            if before["count"]:
                print(
                    f"test: this test split had been read {before['count']} time(s) before, by "
                    f"{', '.join(metrics['test_reads_before']['runs'])}: its figures are no longer a clean test"
                )
        whole = self._test_items(trainer)
        if whole is not None and whole > len(rows):
            metrics["partial"] = f"the first {len(rows)} of {whole} test items (trainer.limit_test_batches)"
            print(f"test: measured on {metrics['partial']}")
        columns = (*COLUMNS, *baseline_prices)
        rows = [{**r, **{k: float(v[i]) for k, v in baseline_prices.items()}} for i, r in enumerate(rows)]
        write_predictions(rows, folder / "predictions.csv", columns)
        scatter(truth, predicted, metrics, folder / "scatter.png")
        # last, whole: a report with metrics.json is a finished one
        partial = folder / f".metrics.json.partial-{os.getpid()}"
        partial.write_text(json.dumps(metrics, indent=2) + "\n")
        os.replace(partial, folder / "metrics.json")
        print(metrics_table(metrics))
        for logger in trainer.loggers:
            logger.log_metrics(
                {f"test_{k}": metrics[k] for k in ("mae", "rmsle", "hit_rate", "smape", "median_ae")}
            )
            if isinstance(logger, WandbLogger):
                logger.log_image("test_scatter", [str(folder / "scatter.png")])
                logger.log_table(
                    "test_predictions", columns=list(COLUMNS), data=[[r[c] for c in COLUMNS] for r in rows]
                )

    @staticmethod
    def _test_items(trainer: L.Trainer) -> int | None:
        datamodule = trainer.datamodule
        datasets = getattr(datamodule, "datasets", {}) if datamodule is not None else {}
        return len(datasets["test"]) if "test" in datasets else None

    @staticmethod
    def _blend(pl_module, rows: list[dict], truth: np.ndarray, llm: np.ndarray, baselines: dict) -> dict:
        """The blend as fit chose it (its validation numbers when this run chose it), and the
        LLM alone on the same test items, with its gap to the read-out and to TF-IDF."""
        report = {**pl_module.blend.as_dict()}
        if pl_module.blend_report:
            report["validation"] = pl_module.blend_report["validation"]
        alone = price_metrics(truth, llm)
        alone["read_out_minus_llm"] = mae_gap(truth, [r["predicted"] for r in rows], llm)
        if "tfidf_linear_log_price" in baselines:
            alone.update(mae_gap(truth, llm, baselines["tfidf_linear_log_price"]))
        llm_low, llm_high = (np.array([r[k] for r in rows]) for k in ("llm_low", "llm_high"))
        alone["interval_coverage"] = coverage(truth, llm_low, llm_high)
        report["llm_alone"] = alone
        return report

    @staticmethod
    def _baselines(
        trainer: L.Trainer, pl_module: L.LightningModule, truth: np.ndarray, predicted: np.ndarray
    ) -> tuple[dict, dict, str]:
        """Each baseline's metrics, and the model's MAE minus the baseline's (paired, with its
        95% interval: below zero throughout means the model is better beyond the noise); each
        baseline's prices; what they were fitted on, in words. Fitted on the run's own training items when the model has them
        (saved with its adapter, whatever the data source), else on the source's train split."""
        datamodule = trainer.datamodule
        items, tfidf = getattr(pl_module, "train_items", None), None
        if items is not None:
            # the run's TF-IDF model, fitted on these items when it chose the blend: not again
            train, tfidf = (items.prices, items.texts), pl_module.tfidf
            origin = f"the run's {len(items.prices)} training items, saved with its adapter"
        else:
            train = datamodule.train_prices_and_texts() if datamodule is not None else None
            origin = f"the data source's train split ({len(train[0])} items)" if train else ""
        if train is None:
            skipped = "no training items: the data source has no train split and the model none saved"
            return {"skipped": skipped}, {}, ""
        # the items the model read: all of the test split, or its first batches when
        # trainer.limit_test_batches cut the pass short (the loader does not shuffle)
        texts = datamodule.test_texts()[: len(truth)]
        predictions = baseline_predictions(*train, texts, tfidf)
        prompts = getattr(datamodule, "neighbor_prompts", None)
        shown = prompts.median("test", len(truth)) if prompts is not None else None
        if shown is not None:  # the neighbours the prompts show, priced alone: same k, same retriever
            predictions["prompt_neighbors_median"] = shown
        metrics = {
            name: {**price_metrics(truth, values), **mae_gap(truth, predicted, values)}
            for name, values in predictions.items()
        }
        return metrics, predictions, origin
