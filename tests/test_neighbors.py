"""Neighbours in the prompt: the training items most like a product, with their prices, shown
before its text; never the item itself, the same for the same text wherever it is read."""

import numpy as np
import pytest

from pricer.data.neighbors import Retriever
from pricer.data.prompt import (
    NEIGHBORS_HEADER,
    make_prompt,
    neighbor_block,
    text_from_prompt,
    title_from_prompt,
    with_neighbors,
)
from tests.conftest import away_from_the_training_data, corpus, predicted_cents, small_datamodule


def test_a_prompt_carries_its_neighbours_between_the_question_and_the_text():
    block = neighbor_block([("Fridge  A", 12.4), ("Oven B", 99.6)])
    assert block == f"{NEIGHBORS_HEADER}\n- Fridge A: $12\n- Oven B: $100"
    plain = make_prompt("Kettle X\nA kettle.")
    shown = with_neighbors(plain, block)
    assert shown == make_prompt("Kettle X\nA kettle.", block)
    assert shown.index("Oven B") < shown.index("Kettle X") < shown.index("Price is $")
    assert text_from_prompt(shown) == text_from_prompt(plain) == "Kettle X\nA kettle."
    assert title_from_prompt(shown) == "Kettle X"
    assert with_neighbors(plain, "") == plain and neighbor_block([]) == ""


@pytest.fixture(scope="module")
def index(byte_tokenizer):
    from pricer.base.load import load_tokenizer

    texts = corpus(120, 0)
    titles = [f"Item {i} " + " ".join(t.split()[:6]) for i, t in enumerate(texts)]
    prices = list(np.random.default_rng(1).uniform(1, 900, 120))
    return Retriever.fit(texts, titles, prices, load_tokenizer(byte_tokenizer), title_tokens=12), texts


def test_the_nearest_are_the_most_similar_first_and_never_the_item_itself(index):
    retriever, texts = index
    found = retriever.nearest(texts, 5, own_rows=list(range(len(texts))))
    similarity = (retriever.rows @ retriever.rows.T).toarray()
    for row, near in enumerate(found):
        assert row not in near and len(near) == 5
        others = np.delete(similarity[row], row)
        assert similarity[row, near].tolist() == sorted(others, reverse=True)[:5]
    # an item read as a query from elsewhere (not as a training row) finds itself first
    assert [near[0] for near in retriever.nearest(texts[:10], 3)] == list(range(10))


def test_the_same_text_retrieves_the_same_items_alone_or_in_a_batch(index, monkeypatch):
    import pricer.data.neighbors as neighbors

    retriever, texts = index
    queries = corpus(30, 5)
    together = retriever.neighbors(queries, 4)
    monkeypatch.setattr(neighbors, "CHUNK", 7)  # chunk boundaries change nothing
    assert retriever.neighbors(queries, 4) == together
    assert [retriever.neighbors([q], 4)[0] for q in queries] == together


def test_ties_go_to_the_earlier_training_item_and_titles_keep_to_their_budget(byte_tokenizer):
    from pricer.base.load import load_tokenizer

    tokenizer = load_tokenizer(byte_tokenizer)
    texts = ["red kettle steel", "blue oven", "red kettle steel", "red kettle steel"]
    long_title = "A very long title " * 10
    retriever = Retriever.fit(texts, [long_title, "b", "c", "d"], [1, 2, 3, 4], tokenizer, title_tokens=8)
    assert retriever.nearest(["red kettle steel"], 3) == [[0, 2, 3]]
    assert retriever.nearest(texts, 2, own_rows=[0, 1, 2, 3])[2] == [0, 3]
    assert len(tokenizer(retriever.titles[0], add_special_tokens=False)["input_ids"]) <= 8


def test_the_data_module_shows_train_neighbours_in_every_split(raw_items, byte_tokenizer, tmp_path):
    plain = small_datamodule(raw_items, byte_tokenizer, tmp_path / "cache")
    shown = small_datamodule(raw_items, byte_tokenizer, tmp_path / "cache", neighbors=3)
    plain.prepare_data(), shown.prepare_data()
    plain.setup(), shown.setup()
    splits = plain.load_splits()
    train_titles = set(splits["train"]["title"])
    decode = shown.tokenizer.decode
    for name in ("train", "validation", "test"):
        for row, plain_row, item in zip(
            shown.datasets[name], plain.datasets[name], splits[name], strict=True
        ):
            prompt = decode(
                [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label == -100]
            )
            lines = prompt.split(NEIGHBORS_HEADER)[1].split("\n\n")[0].strip().splitlines()
            titles = [line[2:].rsplit(": $", 1)[0] for line in lines]
            assert len(titles) == 3 and set(titles) <= train_titles
            assert item["title"] not in titles  # never itself (titles are unique here)
            assert text_from_prompt(prompt).strip() == item["text"].strip()
            assert row["labels"][-len(plain_row["labels"]) :][-3:] == plain_row["labels"][-3:]
    # no neighbours: the course's prompt, as before
    assert plain.datasets["test"][0]["input_ids"] == plain.tokenizer(splits["test"][0]["prompt"])[
        "input_ids"
    ] + [t for t in plain.datasets["test"][0]["labels"] if t != -100]


def test_neighbours_need_training_items(byte_tokenizer, tmp_path):
    from pricer.options import OptionError
    from tests.conftest import course_format_dataset

    lite = small_datamodule(
        course_format_dataset(tmp_path / "lite"), byte_tokenizer, tmp_path / "cache", neighbors=2
    )
    with pytest.raises(
        OptionError, match=r"data.neighbors 2: the prompts' neighbours are training items, and"
    ):
        lite.setup()


@pytest.mark.slow
def test_a_fit_with_neighbours_is_read_with_the_same_ones_everywhere(fit_args, tmp_path, capsys):
    """fit trains with 3 neighbours a prompt; its adapter saves the index. `test` of the adapter
    on a test-only copy of the test split, `predict` and the Space's Pricer retrieve the same
    training items from it and quote the fit's own test prices to the cent."""
    import csv
    import json

    from pricer.cli.main import main
    from pricer.read.recipe import read_recipe
    from pricer.read.serving import Pricer

    main(["fit", *fit_args, "--data.neighbors", "3", "--run_name", "near"])
    run = tmp_path / "runs" / "near"
    recipe = read_recipe(run / "adapter")
    assert (recipe.neighbors, recipe.neighbor_title_tokens) == (3, 24)
    rows = list(csv.DictReader((run / "predictions.csv").open()))
    metrics = json.loads((run / "metrics.json").read_text())

    lite, adapter, prompts = away_from_the_training_data(run, tmp_path)
    capsys.readouterr()
    main(
        [
            "test",
            *fit_args,
            "--data.source",
            str(lite),
            "--model.adapter",
            str(adapter),
            "--run_name",
            "again",
        ]
    )
    assert (
        "test: data.neighbors 3, data.neighbor_title_tokens 24: as the adapter was trained"
        in capsys.readouterr().out
    )
    again = json.loads((tmp_path / "runs" / "again" / "metrics.json").read_text())
    assert round(again["mae"], 2) == round(metrics["mae"], 2)
    cents = [round(float(r["predicted"]), 2) for r in rows]
    assert predicted_cents(fit_args, lite, adapter, tmp_path, "quotes") == cents

    pricer = Pricer.from_adapter(str(adapter))
    quotes = [pricer.quote_prompt(p) for p in prompts]
    assert [round(q.price, 2) for q in quotes] == cents
    assert all(len(q.neighbors) == 3 and NEIGHBORS_HEADER in q.prompt for q in quotes)
    # the Space's page lists the items the prompt showed beside the price
    from pricer.read.serving import neighbors_text

    typed = pricer.quote("Fridge model 7", "A quiet fridge with two doors.")
    assert len(typed.neighbors) == 3 and neighbors_text(typed).count("\n- ") == 3
    assert all(f"- {title}: $" in typed.prompt for title, _ in typed.neighbors)
