"""What fit decides when training ends, as callbacks: which weights become the adapter
(`BestWeights`), the blend and interval scale read on top of the LLM's price (`ChooseBlend`),
and the adapter saved with its recipe (`SaveAdapter`). `python -m pricer fit` adds them (a
config lists one only to give it other settings), so every run ends with an adapter.

They run in that order, after the checkpoint callbacks: ModelCheckpoint's own `on_train_end`
writes last.ckpt when it has not yet, and last.ckpt must hold the final step's weights (for
resuming), not the best ones loaded here.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint

from pricer.read.adapter_files import TrainItems, describe
from pricer.read.blend import Blend, blend_summary, choose_blend
from pricer.read.price_head import PriceHead
from pricer.read.tfidf import TfidfPrice
from pricer.train import stopping


class EndOfFit(Callback):
    """A decision at the end of fit; `order` places it among the others."""

    order = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # a new list, so the loop calling `setup` on the old one goes on undisturbed
        trainer.callbacks = after_the_checkpoints(trainer.callbacks)


def after_the_checkpoints(callbacks: list[Callback]) -> list[Callback]:
    """The callbacks with pricer's end-of-fit ones moved after every checkpoint callback, in
    their order."""
    ends = sorted((c for c in callbacks if isinstance(c, EndOfFit)), key=lambda c: c.order)
    others = [c for c in callbacks if not isinstance(c, EndOfFit | Checkpoint)]
    return others + [c for c in callbacks if isinstance(c, Checkpoint)] + ends


def end_of_fit_callbacks(present: list[Callback]) -> list[Callback]:
    """The end-of-fit callbacks `present` lacks, to be added to a fit."""
    kinds = (BestWeights, ChooseBlend, SaveAdapter)
    return [kind() for kind in kinds if not any(isinstance(c, kind) for c in present)]


class BestWeights(EndOfFit):
    """At the end of fit, the adapter is the best on validation by val_mae (the configured
    read-out), when a checkpoint callback monitors it; last.ckpt, written at the final step,
    stays for resuming. Without one, the final step's weights."""

    order = 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopping.stop_here(trainer)
        pl_module.weights_from = {"step": trainer.global_step, "chosen_by": "the final step"}
        best = best_on_validation(trainer)
        if best is None:
            return
        checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        keep = pl_module.trainable_names()
        weights = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        if set(weights) != keep:
            raise ValueError(f"{best.best_model_path} does not hold this model's LoRA weights")
        pl_module.load_state_dict(weights, strict=False)
        score, name = float(best.best_model_score), Path(best.best_model_path).name
        step = int(checkpoint["global_step"])
        pl_module.weights_from = {"step": step, "chosen_by": "val_mae", "val_mae": score, "checkpoint": name}
        print(
            f"fit: the adapter is the best on validation: val_mae ${score:.2f} at step {step} of "
            f"{trainer.global_step} ({name}); last.ckpt keeps the final step for resuming"
        )


def best_on_validation(trainer: L.Trainer):
    """The checkpoint callback that keeps the best weights by val_mae, when it saved any."""
    for callback in trainer.checkpoint_callbacks:
        monitor, best = getattr(callback, "monitor", None), getattr(callback, "best_model_path", "")
        if monitor == "val_mae" and best and Path(best).is_file():
            return callback
    return None


class ChooseBlend(EndOfFit):
    """At the end of fit, the blend and interval scale for the weights fit keeps, chosen on the
    validation split (pricer/read/blend.py) as `model.blend.enabled`, `model.blend.calibrate_interval`
    and `model.blend.head_layers` ask: on the reads of that step's validation, or on a pass made
    now (a resumed run); the price head fitted first, on a pass over the train split."""

    order = 2

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = (pl_module.weights_from or {}).get("step", trainer.global_step)
        pl_module.validation_rows = pl_module.kept_validation_reads(step)
        self.choose(trainer, pl_module, step)

    def choose(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        blend, coverage = pl_module.group("blend"), pl_module.group("read").interval_coverage
        pl_module.blend, pl_module.tfidf, pl_module.blend_report = Blend(), None, None
        pl_module.price_head = None
        datamodule = trainer.datamodule
        # saved with the adapter: a test on any source gets the baselines of the fit's own
        train = datamodule.train_prices_and_texts() if hasattr(datamodule, "train_prices_and_texts") else None
        pl_module.train_items = TrainItems(*train, datamodule.train_titles()) if train is not None else None
        # the prompts' neighbour index is the classical model's features: fitted once, saved
        # with the adapter whether or not the blend reads it
        prompts = (
            getattr(datamodule, "neighbor_prompts", None) if getattr(datamodule, "neighbors", 0) else None
        )
        index = prompts.index if prompts is not None and prompts.own_index else None
        features = (index.vectorizer, index.rows) if index is not None else None
        if features is not None:
            pl_module.tfidf = TfidfPrice.fit(train[1], train[0], features)
        pl_module.served = (
            "the LLM alone: model.blend.enabled and model.blend.calibrate_interval are false, "
            "model.blend.head_layers 0"
        )
        if not (blend.enabled or blend.calibrate_interval or blend.head_layers):
            return
        datasets = getattr(datamodule, "datasets", {}) if datamodule is not None else {}
        if "validation" not in datasets:
            pl_module.served = "the LLM alone: no validation split to choose a blend on"
            print("fit: no validation split: the LLM's price is read alone, its interval as it is")
            return
        rows = pl_module.kept_validation_reads(step) or read_validation(trainer, pl_module)
        head = None
        if blend.head_layers and train is not None:
            pl_module.price_head, head = fit_price_head(trainer, pl_module, blend.head_layers, rows)
        train = train if blend.enabled else None
        stopping.stop_here(trainer)
        pl_module.forget_validation_reads()
        pl_module.validation_rows = rows
        truth = [r["price"] for r in rows]
        point, low, high = (np.array([r[k] for r in rows]) for k in ("predicted", "low", "high"))
        if train is not None and pl_module.tfidf is None:
            pl_module.tfidf = TfidfPrice.fit(train[1], train[0])
        texts = [r["text"] for r in rows]
        tfidf = pl_module.tfidf.predict(texts) if pl_module.tfidf is not None else None
        knn = pl_module.tfidf.predict_knn(texts) if pl_module.tfidf is not None else None
        pl_module.blend, report = choose_blend(
            truth, point, low, high, tfidf, coverage, blend.enabled, blend.calibrate_interval, knn, head
        )
        pl_module.blend_report = {"validation": report, **pl_module.blend.as_dict()}
        pl_module.served = describe(pl_module.blend, "fit chose on validation")
        if trainer.is_global_zero:
            print(blend_summary(report, coverage))
        for logger in trainer.loggers:
            logger.log_metrics(
                {f"val_blend_{k}": v for k, v in report.items() if isinstance(v, (int, float))},
                step=trainer.global_step,
            )


def validation_batches(trainer: L.Trainer, total: int) -> int:
    """How many batches of the whole (unsharded) validation loader `trainer.limit_val_batches`
    stands for: a share of it, or that many batches on each process of a distributed run; all of
    it when validation does not run during training (0), as the blend still needs it."""
    limit = trainer.limit_val_batches
    if not limit:
        return total
    if isinstance(limit, int):
        return min(total, limit * trainer.world_size)
    return int(total * float(limit))


@contextmanager
def reading_pass(trainer: L.Trainer, pl_module: L.LightningModule):
    """The model in eval mode, read as validation reads it (its dense CPU weights, the run's
    precision), for a pass over a split; as it was afterwards."""
    model = pl_module.model
    training = model.training
    model.eval()
    pl_module.read_dense()
    try:
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            yield model
    finally:
        pl_module.read_4bit_again()
        model.train(training)


def batches_of(trainer: L.Trainer, pl_module: L.LightningModule, loader, limit: int):
    """The loader's first `limit` batches on the module's device, a stop request honoured at each."""
    for index, batch in enumerate(loader):
        stopping.stop_here(trainer)
        if index >= limit:
            break
        yield pl_module.transfer_batch_to_device(batch, pl_module.target_device, 0)


def read_validation(trainer: L.Trainer, pl_module: L.LightningModule) -> list[dict]:
    """The validation split read once with the current weights, as validation reads it. Under
    DDP every process reads the whole split, not its shard, so every process chooses the same
    blend on all of it."""
    loader = trainer.datamodule.val_dataloader()
    rows: list[dict] = []
    with reading_pass(trainer, pl_module) as model:
        reading = pl_module.reading()
        for batch in batches_of(trainer, pl_module, loader, validation_batches(trainer, len(loader))):
            distributions = reading.distributions(model, batch["prompt_ids"], batch["prompt_mask"])
            rows.extend(pl_module.validation_reads(batch, distributions))
    return rows


def fit_price_head(
    trainer: L.Trainer, pl_module: L.LightningModule, layers: int, rows: list[dict]
) -> tuple[PriceHead, list[float]]:
    """The price head (pricer/read/price_head.py) fitted on the train split's features with the
    current weights, and its prices of the validation `rows`, from a pass over each split."""
    features, prices, texts = {}, {}, {}
    with reading_pass(trainer, pl_module) as model:
        reading = pl_module.reading()
        for split in ("train", "validation"):
            loader = trainer.datamodule.reading_dataloader(split)
            found, prices[split], texts[split] = [], [], []
            for batch in batches_of(trainer, pl_module, loader, len(loader)):
                found.append(reading.features(model, batch["prompt_ids"], batch["prompt_mask"], layers))
                prices[split] += batch["price"].tolist()
                texts[split] += batch["text"]
            features[split] = np.concatenate(found)
    head = PriceHead.fit(features["train"], prices["train"], layers)
    by_text = dict(zip(texts["validation"], head.predict(features["validation"]), strict=True))
    return head, [float(by_text[row["text"]]) for row in rows]


class SaveAdapter(EndOfFit):
    """At the end of fit, the adapter fit tests and publishes is saved in `<run>/adapter`,
    loadable with `PeftModel.from_pretrained(base, folder)`, with its recipe `pricer.json` beside
    it (how it was trained and is read) and the blend's partner when it has one. Saved before
    Lightning's teardown: nothing the run chose waits on a later hook."""

    order = 3

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and trainer.default_root_dir:
            pl_module.save_adapter(Path(trainer.default_root_dir) / "adapter")
