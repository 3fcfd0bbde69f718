"""The LightningModule: a base LLM in 4-bit with LoRA adapters, trained on the price."""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import lightning as L
import torch

from pricer.base.load import is_local, load_model
from pricer.base.precision import ComputeDtype
from pricer.base.quantization import Quantization, add_lora
from pricer.files import replace_folder
from pricer.hub.calls import adapter_folder
from pricer.options import OptionError, check_range
from pricer.read.blend import Blend, saved_blend
from pricer.read.dense import CpuRead
from pricer.read.reading import Point, PriceReader
from pricer.read.recipe import Recipe, base_differences, read_recipe
from pricer.read.tfidf import TfidfPrice
from pricer.train.evaluation import ReadingSteps
from pricer.train.loss import CompletionLoss
from pricer.train.passes import MicroBatchPasses
from pricer.train.resume import Resumable
from pricer.train.schedule import cosine_with_warmup


class PriceModel(CompletionLoss, MicroBatchPasses, ReadingSteps, Resumable, L.LightningModule):
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
        max_grad_norm: Clip the gradients' norm to this before each optimizer step (the course's
            0.3); null or 0 leaves them unclipped.
        micro_batch_size: Items per forward and backward pass; the gradients of a step's
            `data.batch_size` items are accumulated over passes of this many. Null: the whole
            batch in one pass, or what `FitBatchSize` finds. A pass that runs out of GPU memory
            is retried with half as many (same items, same step).
        completion_logits: Compute the LM head only where the loss is (the price tokens), not at
            every position: the same loss and gradients, less memory and time. False computes
            the full logits, as transformers does.
        adapter: A trained adapter folder to load instead of a new LoRA (for test and predict).
        point: The price read from the distribution: median (minimises absolute error) or mean.
        interval_coverage: Probability inside the reported interval (0.8: the 10th to 90th
            percentile).
        read_beam: Digit prefixes kept per item when numbers split into digits.
        read_min_mass: Digit prefixes less likely than this are dropped (their mass reported).
        read_shared_prefix: Read a batch's prompts from the KV cache of the tokens they all start
            with (the question), computed once, not once a prompt. The same prices in fp32; in
            16-bit the rounding moves them (a third of a trained adapter's test prices by more
            than $0.50 and 1% under bf16-mixed, for 6% less time), so it is off by default.
        cpu_read: How a 4-bit base is read on the CPU (validation, test, predict): dense: its
            exact 4-bit weights dequantized once a pass, the LoRA update merged in fp32 (kept
            as LoRA layers under a mixed precision); faster, the same prices to float rounding.
            4bit: layer by layer as trained. On a GPU it is always read in 4-bit.
        blend: At the end of fit, blend the LLM's price in log price with a classical
            partner fitted on the train split: the TF-IDF baseline's ridge and its 5 nearest
            train items, mixed in log price. The LLM's weight and the neighbours' share of the
            partner are those with the lowest MAE on the validation split; the weight may be 1,
            the LLM alone. The classical model is saved beside the adapter, and test, predict
            and the Space read the blend. False: the LLM alone, always.
        calibrate_interval: At the end of fit, when the interval's coverage on the validation
            split misses interval_coverage by more than 5 points, scale its width in log price
            to the coverage asked for (saved with the blend).
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
        max_grad_norm: float | None = 0.3,
        micro_batch_size: int | None = None,
        completion_logits: bool = True,
        adapter: str | None = None,
        point: Point = "median",
        interval_coverage: float = 0.8,
        read_beam: int = 32,
        read_min_mass: float = 1e-4,
        read_shared_prefix: bool = False,
        cpu_read: CpuRead = "dense",
        blend: bool = True,
        calibrate_interval: bool = True,
    ) -> None:
        super().__init__()
        if quant_type not in ("nf4", "fp4"):
            raise OptionError(f"model.quant_type must be nf4 or fp4, got {quant_type!r}")
        if lora_r <= 0:
            raise OptionError(f"model.lora_r must be positive, got {lora_r}")
        if not 0 <= lora_dropout < 1:
            raise OptionError(f"model.lora_dropout must be in [0, 1), got {lora_dropout}")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise OptionError(f"model.micro_batch_size must be positive or null, got {micro_batch_size}")
        check_range("model.lora_alpha", lora_alpha, 0, low_open=True)
        check_range("model.learning_rate", learning_rate, 0, low_open=True)
        check_range("model.weight_decay", weight_decay, 0)
        check_range("model.warmup_ratio", warmup_ratio, 0, 1, high_open=True)
        check_range("model.max_grad_norm", max_grad_norm, 0, null=True)
        check_range("model.interval_coverage", interval_coverage, 0, 1, low_open=True, high_open=True)
        check_range("model.read_beam", read_beam, 1)
        check_range("model.read_min_mass", read_min_mass, 0, 1, high_open=True)
        self.save_hyperparameters()
        # Each training step is one optimizer step over its batch, accumulated here in passes of
        # micro_batch_size items: a pass that runs out of memory can then be retried smaller
        # without skipping or repeating an item (Lightning's own accumulation cannot).
        self.automatic_optimization = False
        self.micro_batch_size = micro_batch_size
        self.micro_batch_size_restored = False
        self.lora_target_modules = list(lora_target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"])
        self.model = None
        self._reader: PriceReader | None = None
        self._dense: ExitStack | None = None
        self.weights_from: dict | None = None  # which step's weights fit saved, and why
        # the read-out on top of the LLM's: chosen at the end of fit, or loaded with an adapter
        self.blend = Blend()
        self.tfidf: TfidfPrice | None = None
        self.blend_report: dict | None = None
        self._val_rows: list[dict] = []
        self._val_reads: dict[int, list[dict]] = {}  # each validation's reads, by global step
        # the validation reads of the weights fit kept, or of a `validate` pass: validation.csv
        self.validation_rows: list[dict] = []
        self.test_rows: list[dict] = []
        # Checkpoints hold the LoRA weights only; the base comes from model.base_model.
        self.strict_loading = False

    @property
    def target_device(self) -> torch.device:
        trainer = self._trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def configure_model(self) -> None:
        if self.model is None:
            self.model = self._build_model()
            self.model.train()
        # transformers loads the base in eval mode, and Lightning (since 2.2) keeps the mode it
        # finds: the decoder layers would train in eval mode, where transformers skips gradient
        # checkpointing. Every fit starts in train mode; the evaluation loops switch to eval
        # and back by themselves.
        if self._trainer is not None and self.trainer.state.fn == "fit":
            self.model.train()

    def _build_model(self):
        hp = self.hparams
        folder = adapter_folder(hp.adapter) if hp.adapter else None
        if folder is not None:
            differences = base_differences(read_recipe(folder), hp)
            if differences:
                print(
                    f"pricer: warning: model.adapter {hp.adapter} was trained on another base: "
                    f"{', '.join(differences)}; it prices differently from how its run measured it",
                    file=sys.stderr,
                )
        quantized = (hp.quantization, hp.quant_type, hp.double_quant, hp.compute_dtype, self.target_device)
        model = load_model(
            hp.base_model,
            *quantized,
            folder,
            trainable=True,
            gradient_checkpointing=hp.gradient_checkpointing,
        )
        if folder is not None:
            self.blend, self.tfidf = saved_blend(folder)  # the read-out its run chose
            return model
        return add_lora(
            model, hp.lora_r, hp.lora_alpha, hp.lora_dropout, self.lora_target_modules, hp.base_model
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        step = {}
        started = time.perf_counter()

        def closure() -> torch.Tensor:
            loss = self.accumulate_gradients(batch)
            if not torch.isfinite(loss):
                # Stop before the optimizer spreads NaN into the adapter: the last checkpoint stays good.
                raise FloatingPointError(
                    f"loss is {loss.item()} at global step {self.global_step} (batch {batch_idx} of "
                    f"epoch {self.current_epoch}); the last good checkpoint is kept. Lower "
                    "model.learning_rate or check the precision."
                )
            step["loss"] = loss
            return loss

        optimizer.step(closure=closure)
        optimizer.zero_grad(set_to_none=True)
        scheduler = self.lr_schedulers()
        scheduler.step()
        size = len(batch["input_ids"])
        self.log("train_loss", step["loss"], prog_bar=True, batch_size=size)
        self.log("lr", scheduler.get_last_lr()[0], batch_size=size)
        tokens = float(batch["attention_mask"].sum())
        self.log("tokens_per_s", tokens / max(1e-9, time.perf_counter() - started), batch_size=size)
        if self.target_device.type == "cuda":
            self.log(
                "gpu_memory_gib", torch.cuda.max_memory_allocated(self.target_device) / 2**30, batch_size=size
            )
        return step["loss"]

    def on_before_optimizer_step(self, optimizer) -> None:
        # After the GradScaler has unscaled the gradients (16-mixed), before the step.
        if self.hparams.max_grad_norm:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm"
            )

    def cpu(self) -> PriceModel:
        """Left where it is. Lightning's teardown calls this at the end of every fit, test and
        predict, before `on_fit_end`: for the 8B job it would copy about 7.8 GB (the 4-bit
        weights, the fp32 embeddings and LM head) into host memory, more than a Colab T4 host
        can spare, and fit's test would move it all back. `.to("cpu")` still moves it."""
        return self

    def save_adapter(self, folder: Path, metrics: dict | None = None) -> Path:
        """The adapter, loadable with `PeftModel.from_pretrained(base, folder)`, and beside it its
        recipe, `pricer.json`: how it was trained and is read (`Pricer.from_adapter` uses it)."""
        self._stop_on_sigterm()
        # written whole beside it, then moved into place: a stop or a crash midway leaves the
        # previous adapter (or none), never half of one
        folder = Path(folder)
        partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        self.model.save_pretrained(partial)
        if self.tfidf is not None:
            self.tfidf.save(partial)
        self.recipe().with_metrics(metrics).save(partial)
        replace_folder(partial, folder)
        return folder

    def recipe(self) -> Recipe:
        """This model's recipe: its hyperparameters, the curation rules of the data it trained
        on, and the base's Hub id when it has one."""
        trainer = self._trainer
        rules = getattr(trainer.datamodule, "rules", None) if trainer is not None else None
        # HubPublisher.base_model_id names the Hub model a local base came from
        named = [getattr(c, "base_model_id", None) for c in (trainer.callbacks if trainer else [])]
        base_model_id = next((n for n in named if n), None)
        if base_model_id is None and not is_local(self.hparams.base_model):
            base_model_id = self.hparams.base_model
        precision = str(trainer.precision) if trainer is not None else "32-true"
        return Recipe.from_model(self.hparams, rules, base_model_id, self.blend, precision)

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
