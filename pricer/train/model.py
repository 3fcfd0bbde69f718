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
from jsonargparse.typing import NonNegativeFloat, PositiveInt

from pricer.base.load import is_local, load_model
from pricer.base.options import LoraOptions, QuantizationOptions
from pricer.base.quantization import add_lora
from pricer.files import replace_folder
from pricer.hub_calls import adapter_folder
from pricer.read.adapter_files import ReadOut, TrainItems, saved_hashes, saved_read_out
from pricer.read.blend import Blend
from pricer.read.distribution import PriceReader
from pricer.read.options import BlendOptions, ReadOptions
from pricer.read.price_head import PriceHead
from pricer.read.recipe import PROMPT_OPTIONS, Recipe, base_differences, read_recipe, stamp_recipe
from pricer.read.tfidf import TfidfPrice
from pricer.train import stopping
from pricer.train.distance import PriceDistance
from pricer.train.evaluation import ReadingSteps
from pricer.train.loss import completion_loss
from pricer.train.options import GROUPS, OptimizerOptions, as_groups
from pricer.train.passes import Processes, StepPasses
from pricer.train.resume import Resumable
from pricer.train.schedule import cosine_with_warmup


class PriceModel(ReadingSteps, Resumable, L.LightningModule):
    """A 4-bit LoRA language model that reads a product's text and writes its price.

    The model is built in `configure_model()`, never in `__init__`, so printing or checking a
    config stays instant and offline.

    Args:
        base_model: The base LLM: a Hub id, a folder or a `.gguf` file. A `.gguf` file is
            converted once into a cached Hugging Face folder.
        quantization: How the base model's weights are loaded.
        lora: The LoRA adapter trained on the frozen base.
        optimizer: The optimizer and its learning-rate schedule.
        read: How a price is read from the model's distribution.
        blend: What fit chooses on validation at its end.
        micro_batch_size: Items a forward and backward pass. A step's `data.batch_size` items are
            accumulated over passes of this many. Null: the whole batch in one pass, or what
            `FitBatchSize` finds. A pass that runs out of GPU memory is retried with half as many
            (same items, same step).
        gradient_checkpointing: Recompute activations in backward. Less memory, more time.
        completion_logits: The LM head at the price tokens only. The same loss and gradients,
            less memory and time; false: at every position, as transformers does.
        price_distance: Distance-aware loss weight. The expected distance between the model's
            distribution over number tokens and the true number (0 to 1, pricer/train/distance.py)
            is added to cross-entropy at each price token with this weight; 0: cross-entropy alone.
        adapter: A trained adapter to read (test, predict). Loaded instead of a new LoRA.
    """

    def __init__(
        self,
        base_model: str = "meta-llama/Llama-3.1-8B",
        quantization: QuantizationOptions = QuantizationOptions(),
        lora: LoraOptions = LoraOptions(),
        optimizer: OptimizerOptions = OptimizerOptions(),
        read: ReadOptions = ReadOptions(),
        blend: BlendOptions = BlendOptions(),
        micro_batch_size: PositiveInt | None = None,
        gradient_checkpointing: bool = False,
        completion_logits: bool = True,
        price_distance: NonNegativeFloat = 0.0,
        adapter: str | None = None,
    ) -> None:
        super().__init__()
        # each group as the config writes it: checkpoints and W&B hold the same names
        groups = as_groups(quantization=quantization, lora=lora, optimizer=optimizer, read=read, blend=blend)
        micro_batch_size = None if micro_batch_size is None else int(micro_batch_size)  # a plain int
        self.save_hyperparameters(
            {
                "base_model": base_model,
                **groups,
                "micro_batch_size": micro_batch_size,
                "gradient_checkpointing": gradient_checkpointing,
                "completion_logits": completion_logits,
                "price_distance": float(price_distance),
                "adapter": adapter,
            }
        )
        lora_target_modules = groups["lora"]["target_modules"]
        # Each training step is one optimizer step over its batch, accumulated here in passes of
        # micro_batch_size items: a pass that runs out of memory can then be retried smaller
        # without skipping or repeating an item (Lightning's own accumulation cannot).
        self.automatic_optimization = False
        self.micro_batch_size = micro_batch_size
        self.micro_batch_size_restored = False
        self.lora_target_modules = list(lora_target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"])
        self.model = None
        self._reader: PriceReader | None = None
        self._distance: PriceDistance | None = None
        self._dense: ExitStack | None = None
        self.weights_from: dict | None = None  # which step's weights fit saved, and why
        # the read-out on top of the LLM's: chosen at the end of fit, or loaded with an adapter
        self.blend = Blend()
        self.tfidf: TfidfPrice | None = None
        self.price_head: PriceHead | None = None
        self.blend_report: dict | None = None
        # the training items saved with the adapter (baselines on any source), and the
        # read-out served, in words, as the report names it
        self.train_items: TrainItems | None = None
        self.served = "the LLM alone: no adapter's read-out (a base model or a checkpoint alone)"
        self._val_rows: list[dict] = []
        self._val_reads: dict[int, list[dict]] = {}  # each validation's reads, by global step
        # the validation reads of the weights fit kept, or of a `validate` pass: validation.csv
        self.validation_rows: list[dict] = []
        self.test_rows: list[dict] = []
        # Checkpoints hold the LoRA weights only; the base comes from model.base_model.
        self.strict_loading = False

    def group(self, name: str):
        """One option group (`read`, `lora`, ...) as its dataclass; the hyperparameters hold it
        as the config writes it."""
        return GROUPS[name](**self.hparams[name])

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
            differences = base_differences(read_recipe(folder), hp.quantization)
            if differences:
                print(
                    f"pricer: warning: model.adapter {hp.adapter} was trained on another base: "
                    f"{', '.join(differences)}; it prices differently from how its run measured it",
                    file=sys.stderr,
                )
        q = self.group("quantization")
        quantized = (q.weights, q.type, q.double_quant, q.compute_dtype, self.target_device)
        model = load_model(
            hp.base_model,
            *quantized,
            folder,
            trainable=True,
            gradient_checkpointing=hp.gradient_checkpointing,
        )
        if folder is not None:
            self.serve(saved_read_out(folder))  # the read-out its run chose
            return model
        lora = self.group("lora")
        return add_lora(model, lora.r, lora.alpha, lora.dropout, self.lora_target_modules, hp.base_model)

    def forward(self, input_ids, attention_mask=None, labels=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def completion_loss(self, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed loss of the completion tokens and their count (pricer/train/loss.py), with
        `price_distance` times the expected distance on this tokenizer's number tokens."""
        hp = self.hparams
        if hp.price_distance and self._distance is None:
            reader = self.reader
            self._distance = PriceDistance(reader.number_ids if reader.kind == "whole" else reader.digit_ids)
        return completion_loss(
            self.model,
            input_ids,
            attention_mask,
            labels,
            hp.completion_logits,
            self._distance,
            hp.price_distance,
        )

    def accumulate_gradients(self, batch: dict, micro_batch_size: int | None = None, recover: bool = True):
        """A step's gradients in passes, retried smaller after running out of GPU memory
        (pricer/train/passes.py); the smaller pass size is kept for the rest of the run."""
        processes = Processes.of(self._trainer, self.target_device)
        passes = StepPasses(self.completion_loss, self.manual_backward, self.parameters, processes)
        micro = micro_batch_size or self.micro_batch_size
        loss, settled = passes.accumulate(batch, micro, self.global_step, recover)
        self.micro_batch_size = settled or self.micro_batch_size
        return loss

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
                    "model.optimizer.learning_rate or check the precision."
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
        max_grad_norm = self.group("optimizer").max_grad_norm
        if max_grad_norm:
            self.clip_gradients(optimizer, gradient_clip_val=max_grad_norm, gradient_clip_algorithm="norm")

    def serve(self, read_out: ReadOut) -> None:
        """Read as `read_out` says: the blend and TF-IDF model an adapter's run chose, and its
        training items for the baselines."""
        self.blend, self.tfidf, self.price_head = read_out.blend, read_out.partner, read_out.head
        self.train_items, self.served = read_out.train_items, read_out.served

    def cpu(self) -> PriceModel:
        """Left where it is. Lightning's teardown calls this at the end of every fit, test and
        predict, before `on_fit_end`: for the 8B job it would copy about 7.8 GB (the 4-bit
        weights, the fp32 embeddings and LM head) into host memory, more than a Colab T4 host
        can spare, and fit's test would move it all back. `.to("cpu")` still moves it."""
        return self

    def save_adapter(self, folder: Path, metrics: dict | None = None) -> Path:
        """The adapter, loadable with `PeftModel.from_pretrained(base, folder)`, and beside it its
        recipe, `pricer.json`: how it was trained and is read (`Pricer.from_adapter` uses it)."""
        stopping.stop_here(self._trainer)
        # written whole beside it, then moved into place: a stop or a crash midway leaves the
        # previous adapter (or none), never half of one
        folder = Path(folder)
        partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        self.model.save_pretrained(partial)
        for part in (p for p in (self.tfidf, self.price_head, self.train_items) if p is not None):
            part.save(partial)
        recipe = self.recipe().with_metrics(metrics).with_files(saved_hashes(partial))
        stamp_recipe(partial, recipe)
        recipe.save(partial)
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
        datamodule = trainer.datamodule if trainer is not None else None
        prompt = {name: getattr(datamodule, name) for name in PROMPT_OPTIONS if hasattr(datamodule, name)}
        return Recipe.from_model(self.hparams, rules, base_model_id, self.blend, precision, prompt)

    def configure_optimizers(self):
        opt = self.group("optimizer")
        params = [p for p in self.parameters() if p.requires_grad]
        if self.target_device.type == "cuda" and self.group("quantization").weights != "none":
            import bitsandbytes as bnb

            optimizer = bnb.optim.PagedAdamW(params, lr=opt.learning_rate, weight_decay=opt.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=opt.learning_rate, weight_decay=opt.weight_decay)
        # Optimizer steps = items / effective batch, known once fit starts (see schedule.py).
        factor = cosine_with_warmup(opt.warmup_ratio, lambda: self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
