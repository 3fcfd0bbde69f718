"""The LightningModule: a base LLM in 4-bit with LoRA adapters, trained on the price."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import get_args

import lightning as L
import torch
import torch.nn.functional as F

from pricer.base.load import is_local, load_base, load_tokenizer, prepare_base
from pricer.base.precision import ComputeDtype, resolve_dtype
from pricer.base.quantization import Quantization, lora_config
from pricer.data.batches import IGNORE_INDEX
from pricer.files import replace_folder
from pricer.hub.calls import adapter_folder
from pricer.options import OptionError, check_range
from pricer.read.blend import Blend, load_partner
from pricer.read.dense import CpuRead, can_read_dense, dense_weights
from pricer.read.reader import Reader, reads_alone
from pricer.read.reading import Point, PriceReader
from pricer.read.recipe import Recipe, base_differences, max_digits, read_recipe
from pricer.read.tfidf import TfidfPrice
from pricer.train import rng, stopping
from pricer.train.batch_size import free_memory, smaller_micro_batch
from pricer.train.paged_state import page_restored_state
from pricer.train.schedule import cosine_with_warmup

# Lightning 2.6 warns that a checkpoint saved under manual optimization holds the weights after
# the step. That is what pricer wants: the weights, optimizer and loop progress of the same step,
# so a resumed run continues exactly (tests/test_training.py).
warnings.filterwarnings(
    "ignore", message="Using ModelCheckpoint with manual optimization", category=UserWarning
)


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
        from peft import get_peft_model

        hp = self.hparams
        base = load_base(
            hp.base_model,
            hp.quantization,
            hp.quant_type,
            hp.double_quant,
            hp.compute_dtype,
            self.target_device,
        )
        base = prepare_base(base, hp.quantization, hp.gradient_checkpointing)
        if hp.adapter:
            from peft import PeftModel

            folder = adapter_folder(hp.adapter)
            differences = base_differences(read_recipe(folder), hp)
            if differences:
                print(
                    f"pricer: warning: model.adapter {hp.adapter} was trained on another base: "
                    f"{', '.join(differences)}; it prices differently from how its run measured it",
                    file=sys.stderr,
                )
            model = PeftModel.from_pretrained(base, str(folder), is_trainable=True)
            self._load_blend(folder)
            return model
        try:
            return get_peft_model(
                base, lora_config(hp.lora_r, hp.lora_alpha, hp.lora_dropout, self.lora_target_modules)
            )
        except ValueError as error:  # peft's NoMatchingPeftModuleError is one
            if "not found in the base model" not in str(error):
                raise
            linear = sorted(
                {n.rsplit(".", 1)[-1] for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
            )
            raise OptionError(
                f"model.lora_target_modules {self.lora_target_modules}: not in {hp.base_model}; its "
                f"linear layers are {', '.join(linear)}"
            ) from None

    @property
    def reader(self) -> PriceReader:
        if self._reader is None:
            hp = self.hparams
            trainer = self._trainer
            rules = getattr(trainer.datamodule, "rules", None) if trainer is not None else None
            digits = max_digits(rules.max_price) if rules is not None else 3
            self._reader = PriceReader(
                load_tokenizer(hp.base_model),
                max_digits=digits,
                beam=hp.read_beam,
                min_mass=hp.read_min_mass,
                share_prefix=hp.get("read_shared_prefix", False),
            )
        return self._reader

    def reading(self) -> Reader:
        """How this module's prices are read (pricer/read/reader.py, as the Space reads them):
        its read-out options, the blend fit chose and the trainer's precision."""
        hp = self.hparams
        precision = str(self._trainer.precision) if self._trainer is not None else "32-true"
        alone = reads_alone(precision, resolve_dtype(hp.compute_dtype, self.target_device))
        return Reader(self.reader, hp.point, hp.interval_coverage, self.blend, self.tfidf, precision, alone)

    def read_prices(self, batch: dict) -> list[dict]:
        """The read-out for each prompt of a batch: predicted, low and high (the blend's when
        there is one), and the LLM's own as llm_predicted, llm_low and llm_high."""
        reads = self.reading().price(self.model, batch["prompt_ids"], batch["prompt_mask"], batch["text"])
        return [read.row() for read in reads]

    def forward(self, input_ids, attention_mask=None, labels=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def completion_loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed cross-entropy of the completion tokens, and how many there are.

        Only the price tokens carry loss, so the LM head runs at their positions alone (as TRL
        does): the decoder's hidden states, then the head on the few rows that predict a label.
        Llama 3's 128k-token head at every one of ~180 positions would cost about 0.26 GiB a
        sample in fp16 and fp32 copies, which decides the T4's batch; here it is a few rows.
        """
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        count = keep.sum()
        if not self.hparams.completion_logits or not _plain_lm_head(self.model):
            logits = self(input_ids, attention_mask).logits[:, :-1][keep]
        else:
            base = self.model.get_base_model()
            hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            logits = head_outside_autocast(base.get_output_embeddings(), hidden[:, :-1][keep])
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), count

    def accumulate_gradients(self, batch: dict, micro_batch_size: int | None = None, recover: bool = True):
        """Forward and backward over a step's items in passes of `micro_batch_size`; returns the
        step's loss (mean over its completion tokens, so the pass size does not change it).

        A pass that runs out of GPU memory drops the step's partial gradients and the step
        starts again with half as many items a pass (the largest that divides the batch), so no
        item is skipped or seen twice; the smaller size is kept for the rest of the run and in
        checkpoints. Under DDP every process learns whether any ran out before gradients are
        averaged, and all repeat the step together (see `_passes`). `recover=False` lets the
        error through (the batch size search).
        """
        items = len(batch["input_ids"])
        targets = max(1, int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()))
        while True:
            micro = min(micro_batch_size or self.micro_batch_size or items, items)
            loss, failed = None, False
            try:
                loss = self._passes(batch, micro, targets)
            except torch.cuda.OutOfMemoryError:
                if not recover:
                    raise
                failed = True
            # out of the except block: the failed pass's frames, and its activations, are gone
            if not self._any_process(failed):
                self._average_gradients()
                return loss
            self._drop_gradients()
            smaller = smaller_micro_batch(items, micro)
            if smaller is None:
                raise torch.cuda.OutOfMemoryError(
                    f"out of GPU memory at global step {self.global_step} with one item a pass: "
                    "nothing smaller to try; lower data.rules.max_tokens, turn on "
                    "model.gradient_checkpointing or use a larger GPU"
                )
            print(
                f"out of GPU memory at global step {self.global_step} with {micro} items a pass: "
                f"repeating the step with {smaller} a pass ({items // smaller} passes, the same "
                f"{items} items)",
                flush=True,
            )
            micro_batch_size = None
            self.micro_batch_size = smaller

    def _passes(self, batch: dict, micro: int, targets: int) -> torch.Tensor:
        """The passes of one step. Under DDP no pass synchronises in its backward (DDP's
        `no_sync`): a process that runs out of memory midway through a synchronising backward
        leaves the others waiting in the reduction until the process group times out (30
        minutes). The gradients are averaged once, after every process says it finished."""
        items = len(batch["input_ids"])
        total = torch.zeros((), device=batch["input_ids"].device)
        for start in range(0, items, micro):
            part = {k: batch[k][start : start + micro] for k in ("input_ids", "attention_mask", "labels")}
            length = int(part["attention_mask"].sum(-1).max())  # padded on the right: trim
            part = {k: v[:, :length] for k, v in part.items()}
            loss_sum, _ = self.completion_loss(**part)
            with self._no_sync():
                self.manual_backward(loss_sum / targets)
            total += loss_sum.detach()
        return total / targets

    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _no_sync(self):
        block = getattr(self.trainer.strategy, "block_backward_sync", None) if self._distributed() else None
        return block() if block is not None else contextlib.nullcontext()

    def _any_process(self, failed: bool) -> bool:
        """Whether this process or any other ran out of memory in this step's passes."""
        if not self._distributed():
            return failed
        flag = torch.tensor(float(failed), device=self.target_device)
        return bool(self.trainer.strategy.reduce(flag, reduce_op="max") > 0)

    def _average_gradients(self) -> None:
        """The step's gradients averaged over the processes, as DDP's own reduction does."""
        if not self._distributed():
            return
        grads = [p.grad for p in self.parameters() if p.requires_grad and p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = self.trainer.strategy.reduce(flat, reduce_op="mean")
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def _drop_gradients(self) -> None:
        for p in self.parameters():
            p.grad = None
        free_memory()

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

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        size = len(batch["input_ids"])
        # val_loss from the reading's own forward pass: the price rides after the prompt
        distributions, loss_sum, count = self.reader.read_and_score(
            self.model,
            batch["prompt_ids"],
            batch["prompt_mask"],
            batch["completion_ids"],
            batch["completion_mask"],
        )
        loss = loss_sum / count.clamp(min=1)
        # sync_dist: under DDP each process reads its own shard of the split; the best weights
        # are chosen on the whole split's numbers, not on rank 0's shard
        self.log("val_loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        # val_mae is the configured read-out; every read-out is logged beside it, from the same
        # distributions, so choosing one on the validation split takes a single pass.
        truth = batch["price"]
        for kind in get_args(Point):
            predicted = torch.tensor(
                [d.point(kind) for d in distributions], dtype=truth.dtype, device=truth.device
            )
            mae = (predicted - truth).abs().mean()
            self.log(f"val_mae_{kind}", mae, batch_size=size, sync_dist=True)
            if kind == self.hparams.point:
                self.log("val_mae", mae, prog_bar=True, batch_size=size, sync_dist=True)
        self._val_rows.extend(self.validation_reads(batch, distributions))
        return loss

    def validation_reads(self, batch: dict, distributions) -> list[dict]:
        """The LLM's own prices of validation's reads, which the blend is chosen on."""
        reads = Reader(self.reader, self.hparams.point, self.hparams.interval_coverage).priced(
            distributions, batch["text"]
        )
        rows = zip(batch["price"], batch["text"], reads, strict=True)
        return [{"price": float(p), "text": t, **r.llm_row()} for p, t, r in rows]

    def read_dense(self) -> None:
        """For a reading pass on the CPU: the 4-bit layers swapped for their dense weights
        (pricer/read/dense.py) until the pass ends."""
        if self.hparams.cpu_read != "dense" or self._dense is not None or self.model is None:
            return
        if can_read_dense(self.model, self.target_device):
            # under a mixed precision the LoRA layers compute in 16-bit: kept, not merged
            merge = "mixed" not in str(self.trainer.precision)
            self._dense = ExitStack()
            self._dense.enter_context(dense_weights(self.model, merge=merge))

    def read_4bit_again(self) -> None:
        if self._dense is not None:
            self._dense.close()
            self._dense = None

    def on_validation_epoch_start(self) -> None:
        self._val_rows = []
        self.read_dense()

    def on_validation_epoch_end(self) -> None:
        # before any checkpoint is written (ModelCheckpoint saves in on_validation_end)
        self.read_4bit_again()
        trainer = self.trainer
        if trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.world_size == 1:
            # the blend is chosen on the reads of the weights fit keeps: no second pass
            self._val_reads[trainer.global_step] = self._val_rows
        elif trainer.state.fn == "validate" and trainer.world_size == 1:
            self.validation_rows = self._val_rows
        self._val_rows = []

    def on_test_epoch_start(self) -> None:
        self.test_rows = []
        self.read_dense()

    def on_test_epoch_end(self) -> None:
        self.read_4bit_again()

    def on_predict_epoch_start(self) -> None:
        self.read_dense()

    def on_predict_epoch_end(self) -> None:
        self.read_4bit_again()

    def on_exception(self, exception: BaseException) -> None:
        self.read_4bit_again()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        for i, read in enumerate(self.read_prices(batch)):
            self.test_rows.append(
                {
                    "title": batch["title"][i],
                    "category": batch["category"][i],
                    "price": float(batch["price"][i]),
                    **read,
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
            last = Path(callback.dirpath) / "last.ckpt"
            # Told first, as Lightning does for its own: otherwise its save_last at the end finds a
            # last.ckpt it did not write and versions its own as last-v1.ckpt beside it.
            if callback.save_last:
                callback.last_model_path = str(last)
            trainer.save_checkpoint(last)

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
        # A resumed run's paged AdamW moments were restored as ordinary tensors (inside torch's
        # memory cap, where the batch found has no room for them): paged again (paged_state.py).
        for optimizer in self.trainer.optimizers:
            page_restored_state(optimizer)

    def _stop_on_sigterm(self) -> None:
        # Lightning's predict loop does not stop on SIGTERM (`kill` waited for every product),
        # its evaluation loops read their last batch whatever comes, and a SIGTERM during
        # fit's end was forgotten when fit's test started: each pricer phase stops at its next
        # batch (pricer/train/stopping.py)
        stopping.stop_here(self._trainer)

    def on_predict_batch_start(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop_on_sigterm()

    def on_test_batch_start(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop_on_sigterm()

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        return [{"title": batch["title"][i], **read} for i, read in enumerate(self.read_prices(batch))]

    def trainable_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The base model is never written: an 8B job's checkpoint is megabytes, not gigabytes.
        keep = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["pricer_rng"] = rng.capture()
        # A pass size halved after running out of memory stays halved when the run resumes.
        checkpoint["pricer_micro_batch_size"] = self.micro_batch_size

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
        if checkpoint.get("pricer_micro_batch_size") is not None:
            self.micro_batch_size = checkpoint["pricer_micro_batch_size"]
            self.micro_batch_size_restored = True

    def kept_validation_reads(self, step: int) -> list[dict]:
        """The LLM's reads of the validation made at `step` during this fit (none when the run
        resumed past it)."""
        return self._val_reads.get(step, [])

    def forget_validation_reads(self) -> None:
        self._val_reads = {}

    def _load_blend(self, folder: Path) -> None:
        """The blend an adapter's run chose (its recipe), with its TF-IDF model when it uses one."""
        recipe = read_recipe(folder)
        if recipe is None:
            return
        self.blend = Blend(recipe.blend_weight, recipe.interval_scale, recipe.blend_neighbors)
        if self.blend.uses_tfidf:
            self.tfidf = load_partner(folder, self.blend)

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


def head_outside_autocast(head: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """The LM head on a few rows, in the head's own dtype (fp32 once peft has prepared the base),
    outside autocast. Under 16-mixed or bf16-mixed the head's linear would cast its whole weight
    to 16-bit at every pass (Lightning's autocast caches no cast) and keep the copy for backward:
    about 1 GiB for Llama 3's 128k-token head, for the sake of a few price rows."""
    with torch.autocast(rows.device.type, enabled=False):
        return head(rows.to(head.weight.dtype))


def _plain_lm_head(model) -> bool:
    """Whether the logits are the output embedding of the decoder's last hidden state, with no
    scaling or soft-capping after it (Llama, SmolLM2, Mistral, Qwen). Otherwise the full
    forward is used, so the loss is always the model's own."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    scaled = any(
        getattr(config, k, None) not in (None, 1, 1.0) for k in ("final_logit_softcapping", "logit_scale")
    )
    return not scaled and hasattr(base, "get_decoder") and base.get_output_embeddings() is not None
