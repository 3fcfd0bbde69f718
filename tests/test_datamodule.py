import torch

from pricer.data.batches import IGNORE_INDEX
from tests.conftest import small_datamodule


def make(raw_items, tokenizer, **kwargs):
    options = dict(categories=["Appliances", "Software"], train_size=40, val_size=5, test_size=10)
    options.update(kwargs)
    return small_datamodule(raw_items, tokenizer, raw_items / "cache", **options)


def test_batches_mask_everything_but_the_completion(raw_items, byte_tokenizer):
    dm = make(raw_items, byte_tokenizer)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == 4
    tokenizer = dm.tokenizer
    for row in range(4):
        labels = batch["labels"][row]
        target = labels[labels != IGNORE_INDEX]
        completion = tokenizer.decode(target)
        assert completion == f"{round(float(batch['price'][row]))}.00"
        # the completion follows "Price is $" directly
        end = int(batch["attention_mask"][row].sum())
        prompt = tokenizer.decode(batch["input_ids"][row][: end - len(target)])
        assert prompt.endswith("\n\nPrice is $")
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()


def test_shuffle_is_seeded(raw_items, byte_tokenizer):
    first = make(raw_items, byte_tokenizer)
    first.prepare_data()
    first.setup("fit")
    second = make(raw_items, byte_tokenizer)
    second.setup("fit")
    a = [b["price"] for b in first.train_dataloader()]
    b = [b["price"] for b in second.train_dataloader()]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert len(a) == 10


def test_a_curated_source_is_used_whole(raw_items, byte_tokenizer):
    dm = make(raw_items, byte_tokenizer)
    folder = dm.curate().folder
    curated = small_datamodule(folder, byte_tokenizer, raw_items / "cache", train_size=1, test_size=1)
    curated.setup("test")
    assert len(curated.datasets["test"]) == 10 and len(curated.datasets["train"]) == 40
