"""The LightningModule: a base LLM in 4-bit with LoRA adapters, trained on the price."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import lightning as L
import torch

from pricer import rng
from pricer.base_model import load_tokenizer, model_source
from pricer.hub import explain_load_error
from pricer.precision import ComputeDtype, resolve_dtype
from pricer.quantization import Quantization, bnb_config, check_bitsandbytes, lora_config
from pricer.reading import Point, PriceReader
from pricer.schedule import cosine_with_warmup


class PriceModel(L.LightningModule):
    """A 4-bit LoRA language model that reads a product's text and writes its price.

    The model is built in `configure_model()`, never in `__init__`, so printing or checking a
    config stays instant and offline.

    Args:
        base_model: The base LLM: a Hub id, a local folder, or a local `.gguf` file (converted
            once into a cached Hugging Face folder).
        quantization: Load the base in 4-bit (NF4, QLoRA), 8-bit, or full precision (none).
        quant_type: 4-bit data type: nf4 (QLoRA's) or fp4.
        double_quant: Quantize the 4-bit scales too (saves about 0.4 bits per weight).
        compute_dtype: dtype of the 4-bit matmuls; auto: fp16 on a T4, bf16 on Ampere and later,
            fp32 on the CPU.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        lora_dropout: Dropout on the LoRA input.
        lora_target_modules: Modules that get LoRA adapters.
        learning_rate: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: Fraction of the optimizer steps spent warming up.
        gradient_checkpointing: Recompute activations in backward to save memory.
        adapter: A trained adapter folder to load instead of a new LoRA (for test and predict).
        point: The price read from the distribution: median (minimises absolute error) or mean.
        interval_coverage: Probability inside the reported interval (0.8: the 10th to 90th
            percentile).
        read_beam: Digit prefixes kept per item when numbers split into digits.
        read_min_mass: Digit prefixes less likely than this are dropped (their mass reported).
    """

    def __init__(
        self,
        base_model: str = "meta-llama/Llama-3.1-8B",
        quantization: Quantization = "4bit",
        quant_type: str = "nf4",
        double_quant: bool = True,
        compute_dtype: ComputeDtype = "auto",
        lora_r: int = 32,
        lora_alpha: int = 64,
        lora_dropout: float = 0.1,
        lora_target_modules: list[str] | None = None,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.001,
        warmup_ratio: float = 0.03,
        gradient_checkpointing: bool = False,
        adapter: str | None = None,
        point: Point = "median",
        interval_coverage: float = 0.8,
        read_beam: int = 32,
        read_min_mass: float = 1e-4,
    ) -> None:
        super().__init__()
        if quant_type not in ("nf4", "fp4"):
            raise ValueError(f"model.quant_type must be nf4 or fp4, got {quant_type!r}")
        if lora_r <= 0:
            raise ValueError(f"model.lora_r must be positive, got {lora_r}")
        if not 0 <= lora_dropout < 1:
            raise ValueError(f"model.lora_dropout must be in [0, 1), got {lora_dropout}")
        self.save_hyperparameters()
        self.lora_target_modules = list(lora_target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"])
        self.model = None
        self._reader: PriceReader | None = None
        self.test_rows: list[dict] = []
        # Checkpoints hold the LoRA weights only; the base comes from model.base_model.
        self.strict_loading = False

    @property
    def target_device(self) -> torch.device:
        trainer = self._trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def configure_model(self) -> None:
        if self.model is not None:
            return
        from peft import get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM

        hp = self.hparams
        device = self.target_device
        check_bitsandbytes(hp.quantization, device)
        dtype = resolve_dtype(hp.compute_dtype, device)
        try:
            base = AutoModelForCausalLM.from_pretrained(
                model_source(hp.base_model),
                quantization_config=bnb_config(hp.quantization, hp.quant_type, hp.double_quant, dtype),
                dtype=dtype,
                device_map={"": device},
            )
        except (OSError, ValueError) as error:
            explained = explain_load_error(hp.base_model, error)
            if explained is None:
                raise
            raise explained from error
        base.config.use_cache = False
        if hp.quantization != "none":
            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=hp.gradient_checkpointing)
        elif hp.gradient_checkpointing:
            base.gradient_checkpointing_enable()
        if hp.adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(base, hp.adapter, is_trainable=True)
        else:
            self.model = get_peft_model(
                base, lora_config(hp.lora_r, hp.lora_alpha, hp.lora_dropout, self.lora_target_modules)
            )

    @property
    def reader(self) -> PriceReader:
        if self._reader is None:
            hp = self.hparams
            self._reader = PriceReader(
                load_tokenizer(hp.base_model), beam=hp.read_beam, min_mass=hp.read_min_mass
            )
        return self._reader

    def read_prices(self, batch: dict) -> list[tuple[float, float, float]]:
        """(predicted, low, high) for each prompt of a batch, from its price distribution."""
        hp = self.hparams
        distributions = self.reader.read(self.model, batch["prompt_ids"], batch["prompt_mask"])
        return [(d.point(hp.point), *d.interval(hp.interval_coverage)) for d in distributions]

    def forward(self, input_ids, attention_mask=None, labels=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
        if not torch.isfinite(loss):
            # Stop before the optimizer spreads NaN into the adapter: the last checkpoint stays good.
            raise FloatingPointError(
                f"loss is {loss.item()} at global step {self.global_step} (batch {batch_idx} of "
                f"epoch {self.current_epoch}); the last good checkpoint is kept. Lower "
                "model.learning_rate or check the precision."
            )
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        size = len(batch["input_ids"])
        loss = self(batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
        self.log("val_loss", loss, prog_bar=True, batch_size=size)
        # val_mae is the configured read-out; every read-out is logged beside it, from the same
        # distributions, so choosing one on the validation split takes a single pass.
        truth = batch["price"]
        distributions = self.reader.read(self.model, batch["prompt_ids"], batch["prompt_mask"])
        for kind in get_args(Point):
            predicted = torch.tensor(
                [d.point(kind) for d in distributions], dtype=truth.dtype, device=truth.device
            )
            mae = (predicted - truth).abs().mean()
            self.log(f"val_mae_{kind}", mae, batch_size=size)
            if kind == self.hparams.point:
                self.log("val_mae", mae, prog_bar=True, batch_size=size)
        return loss

    def on_test_epoch_start(self) -> None:
        self.test_rows = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        for i, (predicted, low, high) in enumerate(self.read_prices(batch)):
            self.test_rows.append(
                {
                    "title": batch["title"][i],
                    "category": batch["category"][i],
                    "price": float(batch["price"][i]),
                    "predicted": predicted,
                    "low": low,
                    "high": high,
                }
            )

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        # The final step is always checkpointed as last.ckpt, so `test --ckpt_path last` measures
        # what fit measured (periodic checkpoints alone would leave it up to N steps behind).
        # Saved here, mid-loop like ModelCheckpoint's own saves, so it is also a resume point.
        trainer = self.trainer
        callback = trainer.checkpoint_callback
        if callback is None or callback.dirpath is None:
            return
        by_steps = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        by_epochs = last_batch and trainer.current_epoch + 1 >= (trainer.max_epochs or 1)
        if by_steps or by_epochs:
            trainer.save_checkpoint(Path(callback.dirpath) / "last.ckpt")

    def on_train_start(self) -> None:
        # Lightning restores the data loader's place in the epoch in setup_data(), but
        # configure_optimizers already ran setup_data() (through estimated_stepping_batches) and
        # made the epoch's iterator before the checkpoint's loop state was read: a resumed run
        # would start its epoch over from the first batch. Apply the saved place now and make
        # the iterator again. tests/test_training.py checks the resumed losses match.
        loop = self.trainer.fit_loop
        if loop.restarting and loop._combined_loader_states_to_load:
            loop._load_combined_loader_states()
            iter(loop._data_fetcher)

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        return [
            {"title": batch["title"][i], "predicted": predicted, "low": low, "high": high}
            for i, (predicted, low, high) in enumerate(self.read_prices(batch))
        ]

    def trainable_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The base model is never written: an 8B job's checkpoint is megabytes, not gigabytes.
        keep = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["pricer_rng"] = rng.capture()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = set(checkpoint["state_dict"])
        expected = self.trainable_names()
        if saved != expected:
            raise ValueError(
                "checkpoint does not match this model's LoRA adapter: "
                f"{len(saved - expected)} unexpected and {len(expected - saved)} missing weights "
                f"(e.g. {sorted(saved ^ expected)[:3]}); check model.lora_* and model.base_model"
            )
        if "pricer_rng" in checkpoint:
            rng.restore(checkpoint["pricer_rng"])

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and self.trainer.default_root_dir:
            self.save_adapter(Path(self.trainer.default_root_dir) / "adapter")

    def save_adapter(self, folder: Path) -> Path:
        """The adapter alone, loadable with `PeftModel.from_pretrained(base, folder)`."""
        self.model.save_pretrained(folder)
        return folder

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if self.target_device.type == "cuda" and hp.quantization != "none":
            import bitsandbytes as bnb

            optimizer = bnb.optim.PagedAdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        # Optimizer steps = items / effective batch, known once fit starts (see schedule.py).
        factor = cosine_with_warmup(hp.warmup_ratio, lambda: self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
