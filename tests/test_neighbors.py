"""Neighbours in the prompt: the training items most like a product, with their prices, shown
before its text; never the item itself, the same for the same text wherever it is read."""

import numpy as np
import pytest

from pricer.data.neighbors import Retriever
from pricer.data.prompt import (
    NEIGHBORS_HEADER,
    SUMMARY_HEADER,
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


def test_the_neighbours_prices_can_be_shown_as_numbers_instead_of_or_beside_their_lines():
    found = [("Fridge A", 12.4), ("Oven B", 99.6), ("Kettle C", 30.0)]
    summary = f"{SUMMARY_HEADER} median $30, lowest $12, highest $100"
    assert neighbor_block(found, "summary") == summary
    assert neighbor_block(found, "both") == neighbor_block(found) + "\n" + summary
    assert neighbor_block(found[:2], "summary") == f"{SUMMARY_HEADER} median $56, lowest $12, highest $100"
    plain = make_prompt("Kettle X\nA kettle.")
    for format in ("summary", "both"):
        shown = with_neighbors(plain, neighbor_block(found, format))
        assert shown.index("median $30") < shown.index("Kettle X")
        assert text_from_prompt(shown) == "Kettle X\nA kettle." and title_from_prompt(shown) == "Kettle X"
    assert neighbor_block([], "summary") == ""
    with pytest.raises(ValueError, match="lines, summary, both"):
        neighbor_block(found, "table")


@pytest.fixture(scope="module")
def index(byte_tokenizer):
    from pricer.base.load import load_tokenizer

    texts = corpus(120, 0)
    titles = [f"Item {i} " + " ".join(t.split()[:6]) for i, t in enumerate(texts)]
    prices = list(np.random.default_rng(1).uniform(1, 900, 120))
    return Retriever.fit(texts, titles, prices, load_tokenizer(byte_tokenizer), title_tokens=12), texts


def test_the_nearest_are_the_most_similar_first_and_never_the_item_itself(index):
    retriever, texts = index
    found = retriever.find(texts, 5)
    similarity = (retriever.rows @ retriever.rows.T).toarray()
    for row, near in enumerate(found.rows):
        assert row not in near and len(near) == 5
        others = np.delete(similarity[row], row)
        assert similarity[row, near].tolist() == sorted(others, reverse=True)[:5]
    assert found.left_out == len(texts)  # each training item's own row, and nothing else
    # a query that is not a training item leaves nothing out
    assert retriever.find(corpus(7, 9), 3).left_out == 0


def test_a_duplicate_under_the_dedup_key_is_never_a_neighbour(byte_tokenizer):
    """An item whose text starts with the same title as the query's, reduced as curation's dedup
    key reduces a title (case and punctuation), is the same product: never shown, from any path."""
    from pricer.base.load import load_tokenizer
    from pricer.data.neighbors import dedup_key

    texts = [
        "Acme Kettle 1.7L\nsteel kettle with auto shut off",
        "ACME kettle, 1.7L!\nsteel kettle with auto shut off and a filter",
        "Bolt Toaster\nsteel toaster with four slots",
        "Acme Kettle Pro\nsteel kettle with auto shut off",
    ]
    assert dedup_key(texts[0]) == dedup_key(texts[1]) == "acme kettle 1 7l"
    assert dedup_key("\n\n") is None and dedup_key("1.7 L") != dedup_key("1.7L")
    retriever = Retriever.fit(
        texts, ["a", "b", "c", "d"], [10, 20, 30, 40], load_tokenizer(byte_tokenizer), 8
    )
    # a typed product, the first item spelled otherwise: it and its spelled-alike twin are left out
    found = retriever.find(["acme KETTLE 1.7l\nsteel kettle with auto shut off"], 3)
    assert found.left_out == 2 and found.rows == [[3, 2]]  # the other kettle first, then the toaster
    # training rows: each item's own and its twin's
    assert retriever.find(texts, 3).left_out == 2 + 2 + 1 + 1
    assert retriever.nearest(texts, 3)[0] == [3, 2]


def test_a_product_that_shares_no_word_gets_no_neighbours_and_the_space_says_so(byte_tokenizer):
    """Another script or made-up words share nothing with the training items: no first rows at
    similarity 0 in the prompt; one shared word brings only the items that have it."""
    from pricer.base.load import load_tokenizer
    from pricer.read.quote import Quote
    from tests.conftest import space_app

    neighbors_text = space_app().neighbors_text

    texts = ["Acme Kettle\nsteel kettle", "Bolt Toaster\nfour slot toaster", "Cold Fridge\ntwo door fridge"]
    retriever = Retriever.fit(texts, ["a", "b", "c"], [10, 20, 30], load_tokenizer(byte_tokenizer), 8)
    assert retriever.neighbors(["Чайник\nэлектрический чайник", "zzqx wvvy"], 2) == [[], []]
    assert retriever.neighbors(["Big toaster\nfor bread"], 2) == [[("b", 20.0)]]
    quote = Quote(10.0, 5.0, 20.0, 10.0, 5.0, 20.0, None, neighbors=[])
    assert neighbors_text(quote, 2).startswith("_No training item shares a word with this product")
    assert neighbors_text(quote) == ""  # an adapter trained without neighbours
    one = Quote(10.0, 5.0, 20.0, 10.0, 5.0, 20.0, None, neighbors=[("b", 20.0)])
    assert "- b: $20" in neighbors_text(one, 2) and "Only one training item shares a word" in neighbors_text(
        one, 2
    )


def test_a_minimum_similarity_keeps_only_the_items_above_it(byte_tokenizer):
    """At 0 any item that shares a word is a neighbour; above 0, only those at least that
    similar, so a product that barely resembles the training items gets fewer or none."""
    from pricer.base.load import load_tokenizer

    texts = [
        "Acme Kettle\nsteel kettle boils water",
        "Bolt Toaster\nfour slot toaster steel",
        "Cold Fridge\nfridge",
    ]
    retriever = Retriever.fit(texts, ["a", "b", "c"], [10, 20, 30], load_tokenizer(byte_tokenizer), 8)
    query = ["Kettle\nkettle boils water fast, steel"]
    everything = retriever.find(query, 3)
    (similar,) = (retriever.vectorizer.transform(query) @ retriever._columns).toarray()
    assert everything.rows == [[0, 1]]  # the kettle, then the toaster by the word steel
    between = (similar[0] + similar[1]) / 2
    assert retriever.nearest(query, 3, between) == [[0]]
    assert retriever.nearest(query, 3, similar[0]) == [[]]  # strictly above the minimum
    assert retriever.neighbors(query, 3, 0.0) == retriever.neighbors(query, 3)


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
    assert retriever.nearest(["steel red kettle"], 3) == [[0, 2, 3]]
    # three items with one title are one product: none is another's neighbour, and the oven
    # shares no word with them
    assert retriever.nearest(texts, 2)[2] == [] and retriever.find(texts, 2).left_out == 3 * 3 + 1
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


def test_a_splits_neighbours_are_cached_beside_the_splits_and_accounted(
    raw_items, byte_tokenizer, tmp_path, capsys
):
    first = small_datamodule(raw_items, byte_tokenizer, tmp_path / "cache", neighbors=3)
    first.prepare_data(), first.setup()
    printed = capsys.readouterr().out
    assert "data: neighbours in the prompt" in printed
    assert "training items in the index (data.neighbors 3)" in printed
    counts = first.neighbor_prompts.accounting
    assert {name: c["prompts"] for name, c in counts.items()} == {"train": 32, "validation": 4, "test": 4}
    assert counts["train"]["left_out_as_duplicates"] == 32  # each training item's own row
    assert counts["validation"]["left_out_as_duplicates"] == 0  # keys are unique across splits
    assert not any(c["cached"] for c in counts.values())
    entries = sorted((first.curated.folder / "neighbors").glob("*.parquet"))
    assert len(entries) == 3

    again = small_datamodule(raw_items, byte_tokenizer, tmp_path / "cache", neighbors=3)
    again.prepare_data(), again.setup()
    assert all(c["cached"] for c in again.neighbor_prompts.accounting.values())
    assert again.neighbor_prompts.rows == first.neighbor_prompts.rows
    for name in ("train", "validation", "test"):
        assert again.datasets[name]["input_ids"] == first.datasets[name]["input_ids"]
    # a damaged entry is retrieved again, the same rows
    entries[0].write_bytes(b"not parquet")
    third = small_datamodule(raw_items, byte_tokenizer, tmp_path / "cache", neighbors=3)
    third.prepare_data(), third.setup()
    assert sum(not c["cached"] for c in third.neighbor_prompts.accounting.values()) == 1
    assert third.neighbor_prompts.rows == first.neighbor_prompts.rows
    # another k is another entry
    other = small_datamodule(raw_items, byte_tokenizer, tmp_path / "cache", neighbors=2)
    other.prepare_data(), other.setup()
    assert not any(c["cached"] for c in other.neighbor_prompts.accounting.values())
    assert [rows[:2] for rows in first.neighbor_prompts.rows["test"]] == other.neighbor_prompts.rows["test"]
    # the baseline beside the LLM: the median price of what each test prompt shows
    prices = np.array(first.neighbor_prompts.retriever().prices)
    median = first.neighbor_prompts.median("test", 3)
    assert median.tolist() == [float(np.median(prices[r])) for r in first.neighbor_prompts.rows["test"][:3]]


def test_neighbour_dropout_leaves_a_share_of_training_prompts_without_them(
    raw_items, byte_tokenizer, tmp_path
):
    from pricer.options import OptionError

    def prompts_with_neighbours(module, split):
        return [
            NEIGHBORS_HEADER in module.tokenizer.decode(ids) for ids in module.datasets[split]["input_ids"]
        ]

    runs = []
    for _ in range(2):
        module = small_datamodule(
            raw_items, byte_tokenizer, tmp_path / "cache", neighbors=2, neighbor_dropout=0.5
        )
        module.prepare_data(), module.setup()
        runs.append(prompts_with_neighbours(module, "train"))
        assert all(prompts_with_neighbours(module, "validation")) and all(
            prompts_with_neighbours(module, "test")
        )
    shown = runs[0]
    assert runs[1] == shown  # drawn with the data seed: the same prompts every time
    assert 0 < sum(shown) < len(shown)
    assert module.neighbor_prompts.accounting["train"]["with_neighbors"] == sum(shown)
    assert "train: without (data.neighbor_dropout 0.5)" in module.neighbor_prompts.table()
    with pytest.raises(OptionError, match=r"data.neighbor_dropout 1.0: the share of training prompts"):
        small_datamodule(raw_items, byte_tokenizer, tmp_path / "cache", neighbors=2, neighbor_dropout=1.0)


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
@pytest.mark.parametrize("form, minimum", [("lines", 0.0), ("summary", 0.0), ("lines", 0.3)])
def test_a_fit_with_neighbours_is_read_with_the_same_ones_everywhere(
    fit_args, tmp_path, capsys, form, minimum
):
    """fit trains with 3 neighbours a prompt (as lines, or their prices as numbers); its adapter
    saves the index and the form. `test` of the adapter on a test-only copy of the test split,
    `predict` and the Space's Pricer retrieve the same training items from it, show them alike
    and quote the fit's own test prices to the cent."""
    import csv
    import json

    from pricer.cli.main import main
    from pricer.read.recipe import read_recipe
    from pricer.read.serving import Pricer

    options = [
        "--data.neighbors",
        "3",
        "--data.neighbor_format",
        form,
        "--data.neighbor_min_similarity",
        str(minimum),
    ]
    main(["fit", *fit_args, *options, "--run_name", "near"])
    run = tmp_path / "runs" / "near"
    recipe = read_recipe(run / "adapter")
    assert (recipe.neighbors, recipe.neighbor_title_tokens, recipe.neighbor_format) == (3, 24, form)
    assert recipe.neighbor_min_similarity == minimum
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
        f"test: data.neighbors 3, data.neighbor_title_tokens 24, data.neighbor_format {form}, "
        f"data.neighbor_min_similarity {minimum}: as the adapter was trained" in capsys.readouterr().out
    )
    again = json.loads((tmp_path / "runs" / "again" / "metrics.json").read_text())
    assert round(again["mae"], 2) == round(metrics["mae"], 2)
    cents = [round(float(r["predicted"]), 2) for r in rows]
    assert predicted_cents(fit_args, lite, adapter, tmp_path, "quotes") == cents

    pricer = Pricer.from_adapter(str(adapter))
    assert pricer.neighbor_min_similarity == minimum
    quotes = [pricer.quote_prompt(p) for p in prompts]
    assert [round(q.price, 2) for q in quotes] == cents
    header = NEIGHBORS_HEADER if form == "lines" else SUMMARY_HEADER
    assert all((header in q.prompt) == bool(q.neighbors) for q in quotes)
    if minimum:  # a short typed product is less like them: the minimum leaves it fewer
        texts = [text_from_prompt(p) for p in prompts]
        assert [q.neighbors for q in quotes] == pricer.retriever.neighbors(texts, 3, minimum)
        typed = pricer.quote("Fridge model 7", "A quiet fridge with two doors.")
        (text,) = [text_from_prompt(typed.prompt)]
        assert typed.neighbors == pricer.retriever.neighbors([text], 3, minimum)[0]
        assert len(typed.neighbors) < len(pricer.retriever.neighbors([text], 3)[0])
        return
    assert all(len(q.neighbors) == 3 for q in quotes)
    assert all((NEIGHBORS_HEADER in q.prompt) == (form == "lines") for q in quotes)
    # the Space's page lists the items the prompt showed beside the price
    from tests.conftest import space_app

    neighbors_text = space_app().neighbors_text
    typed = pricer.quote("Fridge model 7", "A quiet fridge with two doors.")
    assert len(typed.neighbors) == 3 and neighbors_text(typed).count("\n- ") == 3
    assert all((f"- {title}: $" in typed.prompt) == (form == "lines") for title, _ in typed.neighbors)
