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


def test_the_collator_pads_training_rows_right_and_prompts_left():
    """Two examples of unequal length: inputs and labels padded on the right (labels with the
    ignored index), the prompts alone on the left so both end at the same column, and the
    completions on the right; the text columns carried through."""
    import torch

    from pricer.data.batches import IGNORE_INDEX, PadCollator

    examples = [
        {"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8], "price": 12.0, "text": "a"},
        {"input_ids": [9, 8], "labels": [-100, 8], "price": 3.5, "text": "b"},
    ]
    batch = PadCollator(0, prompts=True)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [-100, 8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["prompt_ids"].tolist() == [[5, 6], [0, 9]]
    assert batch["prompt_mask"].tolist() == [[1, 1], [0, 1]]
    assert batch["completion_ids"].tolist() == [[7, 8], [8, 0]]
    assert batch["completion_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["price"].tolist() == [12.0, 3.5] and batch["text"] == ["a", "b"]
    assert all(batch[k].dtype == torch.long for k in ("input_ids", "labels", "prompt_ids", "completion_mask"))
    unpriced = PadCollator(0, prompts=True)([{"input_ids": [4, 2], "labels": [-100, -100]}])
    assert unpriced["completion_ids"].shape == (1, 0) and "price" not in unpriced


def test_the_trial_batch_is_the_longest_items_padded_as_a_real_batch(tmp_path, byte_tokenizer):
    """The batch search's trial is a real batch at its widest: the longest items, padded (so
    masked) where they differ, not copies of one item, which would take another attention path."""
    from tests.conftest import record, write_raw

    # a few three-digit prices among two-digit ones: sequences of two lengths
    prices = [150.0, 250.0, 350.0, 450.0] + [10.0 + i for i in range(56)]
    write_raw(tmp_path, "Appliances", [record(f"Fridge model {i}", p) for i, p in enumerate(prices)])
    dm = make(tmp_path, byte_tokenizer, categories=["Appliances"])
    dm.prepare_data()
    dm.setup("fit")
    lengths = sorted((len(ids) for ids in dm.datasets["train"]["input_ids"]), reverse=True)
    assert lengths[0] != lengths[7]
    trial = dm.trial_batch(8)
    assert trial["input_ids"].shape == (8, lengths[0])
    assert trial["attention_mask"].sum(1).tolist() == lengths[:8]
    assert (trial["attention_mask"] == 0).any()
