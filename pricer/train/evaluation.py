"""PriceModel's validation, test and predict steps: prices read through the same Reader as the
Space (pricer/read/quote.py), the 4-bit layers swapped for their dense weights while a CPU
reading pass runs, and a stop request honoured at each batch."""

from __future__ import annotations

from contextlib import ExitStack
from typing import get_args

import torch

from pricer.base.load import load_tokenizer
from pricer.base.precision import resolve_dtype
from pricer.read.dense import can_read_dense, dense_weights
from pricer.read.distribution import Point, PriceReader
from pricer.read.quote import Reader, reads_alone
from pricer.read.recipe import max_digits


class ReadingSteps:
    """The reading half of PriceModel (a mixin: it uses the module's hyperparameters, model and
    trainer)."""

    _reader: PriceReader | None = None
    _dense: ExitStack | None = None

    @property
    def reader(self) -> PriceReader:
        if self._reader is None:
            hp, read = self.hparams, self.group("read")
            trainer = self._trainer
            rules = getattr(trainer.datamodule, "rules", None) if trainer is not None else None
            digits = max_digits(rules.max_price) if rules is not None else 3
            self._reader = PriceReader(
                load_tokenizer(hp.base_model),
                max_digits=digits,
                beam=read.beam,
                min_mass=read.min_mass,
                share_prefix=read.shared_prefix,
            )
        return self._reader

    def reading(self) -> Reader:
        """How this module's prices are read (pricer/read/quote.py, as the Space reads them):
        its read-out options, the blend fit chose (with its partner and price head) and the
        trainer's precision."""
        read, dtype = self.group("read"), self.group("quantization").compute_dtype
        precision = str(self._trainer.precision) if self._trainer is not None else "32-true"
        alone = reads_alone(precision, resolve_dtype(dtype, self.target_device))
        return Reader(
            self.reader,
            read.point,
            read.interval_coverage,
            self.blend,
            self.tfidf,
            precision,
            alone,
            self.price_head,
        )

    def read_prices(self, batch: dict) -> list[dict]:
        """The read-out for each prompt of a batch: predicted, low and high (the blend's when
        there is one), and the LLM's own as llm_predicted, llm_low and llm_high."""
        reads = self.reading().price(self.model, batch["prompt_ids"], batch["prompt_mask"], batch["text"])
        return [read.row() for read in reads]

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
        reading = self.reading()
        if reading.alone and size > 1:
            # in 16 bits a batch's padding moves prices: validation reads each prompt alone, as
            # test and the Space do, so the weights and blend fit chooses are chosen on the
            # prices it serves (the scoring pass above gives the loss)
            distributions = reading.distributions(self.model, batch["prompt_ids"], batch["prompt_mask"])
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
            if kind == self.hparams.read["point"]:
                self.log("val_mae", mae, prog_bar=True, batch_size=size, sync_dist=True)
        self._val_rows.extend(self.validation_reads(batch, distributions))
        return loss

    def validation_reads(self, batch: dict, distributions) -> list[dict]:
        """The LLM's own prices of validation's reads, which the blend is chosen on."""
        read = self.group("read")
        reads = Reader(self.reader, read.point, read.interval_coverage).priced(distributions, batch["text"])
        rows = zip(batch["price"], batch["text"], reads, strict=True)
        return [{"price": float(p), "text": t, **r.llm_row()} for p, t, r in rows]

    def read_dense(self) -> None:
        """For a reading pass on the CPU: the 4-bit layers swapped for their dense weights
        (pricer/read/dense.py) until the pass ends."""
        if self.hparams.read["cpu"] != "dense" or self._dense is not None or self.model is None:
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

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        return [{"title": batch["title"][i], **read} for i, read in enumerate(self.read_prices(batch))]

    def kept_validation_reads(self, step: int) -> list[dict]:
        """The LLM's reads of the validation made at `step` during this fit (none when the run
        resumed past it)."""
        return self._val_reads.get(step, [])

    def forget_validation_reads(self) -> None:
        self._val_reads = {}
