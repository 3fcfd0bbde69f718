import json

import pyarrow.parquet as pq
import pytest

from pricer.data import raw
from pricer.data.curate import CurationError, CurationSpec, curate, split_file
from pricer.data.raw import SourceError
from pricer.data.rules import CurationRules
from tests.conftest import SAMPLE_2018, record, write_raw


def spec_for(source, tokenizer, categories=("Appliances",), **sizes) -> CurationSpec:
    return CurationSpec(
        source=str(source),
        categories=list(categories),
        rules=CurationRules(),
        tokenizer=tokenizer,
        train_size=sizes.get("train"),
        val_size=sizes.get("val", 2),
        test_size=sizes.get("test", 3),
        seed=sizes.get("seed", 42),
    )


def split_rows(curated, split):
    return pq.read_table(curated.split_file(split)).to_pylist()


def test_every_record_is_kept_or_dropped_with_its_reason(tmp_path, byte_tokenizer):
    good = [record(f"Good item {i}", 20.0 + i, parent_asin=f"B{i:03d}") for i in range(8)]
    lines = [
        good[0],
        "{not json",
        "[1, 2]",
        {k: v for k, v in record("No features", 10).items() if k != "features"},
        record("No price", None),
        record("Price range", "$10.99 - $20.99"),
        record("Too dear", 2000),
        record("Too cheap", 0.1),
        record("Too short", 10, words=3, features=[], details={}),
        record("Dup of good 0", 30, parent_asin="B000"),
        record("Old script style", "$15.00", details=json.dumps({"Brand": "Old"}), parent_asin="OLD1"),
        *good[1:],
    ]
    write_raw(tmp_path, "Appliances", lines)
    curated = curate(spec_for(tmp_path, byte_tokenizer, train=None), byte_tokenizer, tmp_path / "cache")
    acc = curated.accounting
    assert acc.read == len(lines) == 18
    assert acc.kept == 9  # 8 good + the old-style record
    assert dict(acc.dropped) == {
        "bad_json": 2,
        "missing_fields": 1,
        "no_price": 1,
        "unparseable_price": 1,
        "price_out_of_range": 2,
        "too_short": 1,
        "duplicate": 1,
        "surplus": 0,
    }
    assert acc.kept + acc.total_dropped == acc.read
    assert any(
        e.startswith(f"{tmp_path}/raw/meta_categories/meta_Appliances.jsonl:2:")
        for e in acc.examples["bad_json"]
    )
    assert "no features" in acc.examples["missing_fields"][0]
    assert acc.splits == {"train": 4, "validation": 2, "test": 3}
    rows = [r for s in ("train", "validation", "test") for r in split_rows(curated, s)]
    old = next(r for r in rows if r["key"] == "OLD1")
    assert old["price"] == 15.0 and old["completion"] == "15.00"


def test_text_is_cut_to_max_tokens_and_prompt_has_the_course_format(raw_items, byte_tokenizer):
    curated = curate(spec_for(raw_items, byte_tokenizer), byte_tokenizer, raw_items / "cache")
    row = split_rows(curated, "test")[0]
    assert len(row["text"].encode()) == 160  # one byte, one token
    assert row["prompt"] == f"How much does this cost to the nearest dollar?\n\n{row['text']}\n\nPrice is $"
    assert row["completion"] == f"{round(row['price'])}.00"


def test_too_few_tokens_is_dropped(tmp_path, byte_tokenizer):
    write_raw(tmp_path, "Appliances", [record("x", 10.0 + i, parent_asin=f"A{i}") for i in range(10)])
    rules = CurationRules(min_chars=10, min_tokens=2000, max_tokens=2100, max_chars=3000)
    spec = spec_for(tmp_path, byte_tokenizer)
    spec.rules = rules
    with pytest.raises(CurationError, match="no items left"):
        curate(spec, byte_tokenizer, tmp_path / "cache")


def test_splits_are_deterministic_disjoint_and_test_does_not_move(raw_items, byte_tokenizer):
    a = curate(
        spec_for(raw_items, byte_tokenizer, ["Appliances", "Software"], train=50, val=5, test=10),
        byte_tokenizer,
        raw_items / "a",
    )
    b = curate(
        spec_for(raw_items, byte_tokenizer, ["Appliances", "Software"], train=50, val=5, test=10),
        byte_tokenizer,
        raw_items / "b",
    )
    c = curate(
        spec_for(raw_items, byte_tokenizer, ["Appliances", "Software"], train=20, val=5, test=10),
        byte_tokenizer,
        raw_items / "c",
    )
    d = curate(
        spec_for(raw_items, byte_tokenizer, ["Appliances", "Software"], train=50, val=5, test=10, seed=7),
        byte_tokenizer,
        raw_items / "d",
    )
    for split in ("train", "validation", "test"):
        assert split_rows(a, split) == split_rows(b, split)
    keys = {s: {r["key"] for r in split_rows(a, s)} for s in ("train", "validation", "test")}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]
    assert {r["key"] for r in split_rows(c, "test")} == keys["test"]
    assert {r["key"] for r in split_rows(d, "test")} != keys["test"]
    categories = {r["category"] for s in ("train", "test") for r in split_rows(a, s)}
    assert categories == {"Appliances", "Software"}
    assert a.accounting.kept_by_category["Software"] + a.accounting.kept_by_category["Appliances"] == 65
    assert a.accounting.dropped["surplus"] == 15


def test_workers_give_the_same_splits_as_one_process(raw_items, byte_tokenizer):
    spec = spec_for(raw_items, byte_tokenizer, ["Appliances", "Software"], train=None, val=5, test=10)
    one = curate(spec, byte_tokenizer, raw_items / "one", num_proc=1, chunk_size=7)
    two = curate(spec, byte_tokenizer, raw_items / "two", num_proc=2, chunk_size=7)
    for split in ("train", "validation", "test"):
        assert split_rows(one, split) == split_rows(two, split)
    assert one.accounting.to_dict() == two.accounting.to_dict()


def test_each_row_counts_its_prompt_and_completion_tokens_in_the_workers(raw_items, tiny_llama):
    """`tokens` is the whole sequence's count (what the course's Item.token_count counts), from
    the workers, on 1 process and on 2; without count_tokens the column is not there."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    spec = spec_for(raw_items, tiny_llama, ["Appliances", "Software"], train=None, val=5, test=10)
    for num_proc in (1, 2):
        curated = curate(spec, tiny_llama, raw_items / f"counted{num_proc}", num_proc=num_proc, chunk_size=7)
        rows = [row for split in ("train", "validation", "test") for row in split_rows(curated, split)]
        counts = [
            len(tokenizer(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) for r in rows
        ]
        assert [r["tokens"] for r in rows] == counts
        assert len(set(counts)) > 1
    spec.count_tokens = False
    plain = curate(spec, tiny_llama, raw_items / "plain")
    assert "tokens" not in split_rows(plain, "train")[0]
    assert [{k: v for k, v in r.items() if k != "tokens"} for r in rows[-10:]] == split_rows(plain, "test")


def test_second_run_reuses_the_cache(raw_items, byte_tokenizer, monkeypatch):

    spec = spec_for(raw_items, byte_tokenizer)
    first = curate(spec, byte_tokenizer, raw_items / "cache")
    assert not first.cached

    def no_reading(path):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(raw, "read_lines", no_reading)
    second = curate(spec, byte_tokenizer, raw_items / "cache")
    assert second.cached and second.folder == first.folder
    assert second.accounting.to_dict() == first.accounting.to_dict()
    assert (first.folder / "curation.json").is_file() and not list(first.folder.parent.glob("*.tmp-*"))


def test_the_cache_key_follows_rules_and_the_tokenizers_content(raw_items, byte_tokenizer, llama3_tokenizer):
    from pricer.base.load import tokenizer_digest

    base = spec_for(raw_items, byte_tokenizer)
    other_rules = spec_for(raw_items, byte_tokenizer)
    other_rules.rules = CurationRules(max_tokens=170)
    byte, llama3 = tokenizer_digest(byte_tokenizer), tokenizer_digest(llama3_tokenizer)
    assert byte != llama3
    assert len({base.fingerprint(byte), other_rules.fingerprint(byte), base.fingerprint(llama3)}) == 3


def test_one_tokenizer_from_two_places_curates_once(raw_items, llama3_tokenizer, tmp_path, monkeypatch):
    """Llama 3's tokenizer from its package folder and the same files saved elsewhere (as an
    offline folder and a later Hub id would be) share one cache; a changed setting does not."""
    from transformers import AutoTokenizer

    elsewhere = tmp_path / "meta-llama-copy"
    AutoTokenizer.from_pretrained(llama3_tokenizer).save_pretrained(elsewhere)
    first = curate(spec_for(raw_items, llama3_tokenizer), llama3_tokenizer, raw_items / "cache")
    assert not first.cached

    def no_reading(path):
        raise AssertionError(f"{path} read again")

    with monkeypatch.context() as patched:
        patched.setattr(raw, "read_lines", no_reading)
        second = curate(spec_for(raw_items, str(elsewhere)), str(elsewhere), raw_items / "cache")
    assert second.cached and second.folder == first.folder
    config = json.loads((elsewhere / "tokenizer_config.json").read_text())
    config["clean_up_tokenization_spaces"] = False  # decodes other text: another cache
    (elsewhere / "tokenizer_config.json").write_text(json.dumps(config))
    third = curate(spec_for(raw_items, str(elsewhere)), str(elsewhere), raw_items / "cache")
    assert not third.cached and third.folder.parent != first.folder.parent


def test_the_2018_schema_stops_with_a_clear_message(tmp_path, byte_tokenizer):
    if not SAMPLE_2018.is_file():
        pytest.skip("the 2018 sample is not here")
    write_raw(tmp_path, "Appliances", SAMPLE_2018.read_text().splitlines())
    with pytest.raises(SourceError, match=r"meta_Appliances.jsonl is not Amazon Reviews 2023 metadata.*2018"):
        curate(spec_for(tmp_path, byte_tokenizer), byte_tokenizer, tmp_path / "cache")


def test_a_missing_category_file_is_named(raw_items, byte_tokenizer):
    with pytest.raises(SourceError, match=r"meta_Books.jsonl \(the folder has: Appliances, Software\)"):
        curate(spec_for(raw_items, byte_tokenizer, ["Books"]), byte_tokenizer, raw_items / "cache")


def test_too_few_items_for_the_splits_says_which_sizes(raw_items, byte_tokenizer):
    with pytest.raises(CurationError, match="only 60 items are left.*train 100, validation 2, test 3"):
        curate(spec_for(raw_items, byte_tokenizer, train=100), byte_tokenizer, raw_items / "cache")


def test_split_files_use_the_hub_layout(raw_items, byte_tokenizer):
    from datasets import load_dataset

    curated = curate(spec_for(raw_items, byte_tokenizer, train=10), byte_tokenizer, raw_items / "cache")
    assert split_file(curated.folder, "train").name == "train-00000-of-00001.parquet"
    loaded = load_dataset(str(curated.folder))
    assert {k: len(v) for k, v in loaded.items()} == {"train": 10, "validation": 2, "test": 3}


def test_an_empty_category_file_or_no_category_is_said_not_skipped(tmp_path, byte_tokenizer):
    """An empty category file asked for beside a full one stopped nothing; `[]` curated
    Appliances."""
    from pricer.options import OptionError
    from tests.conftest import small_datamodule

    write_raw(tmp_path, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(40)])
    write_raw(tmp_path, "Software", [])
    dm = small_datamodule(tmp_path, byte_tokenizer, tmp_path / "cache", categories=["Appliances", "Software"])
    with pytest.raises(
        SourceError, match=r"meta_Software.jsonl holds no records: data.categories asks for Software"
    ):
        dm.curate()
    with pytest.raises(OptionError, match="data.categories is empty"):
        small_datamodule(tmp_path, byte_tokenizer, tmp_path / "cache", categories=[])


def test_edited_raw_data_is_curated_again_not_reused(tmp_path, byte_tokenizer):
    """The cache was keyed by the path: cutting the file reused the old splits and accounting."""
    path = write_raw(tmp_path, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(40)])
    spec = CurationSpec(str(tmp_path), ["Appliances"], CurationRules(), byte_tokenizer, None, 2, 3, 42)
    first = curate(spec, byte_tokenizer, tmp_path / "cache")
    assert curate(spec, byte_tokenizer, tmp_path / "cache").cached  # unchanged: reused
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:30]))
    again = curate(spec, byte_tokenizer, tmp_path / "cache")
    assert not again.cached and again.folder != first.folder
    assert (first.accounting.read, again.accounting.read) == (40, 30)


def test_a_corrupted_cache_is_curated_again_with_a_message(tmp_path, byte_tokenizer, capsys):
    write_raw(tmp_path, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(40)])
    spec = CurationSpec(str(tmp_path), ["Appliances"], CurationRules(), byte_tokenizer, None, 2, 3, 42)
    first = curate(spec, byte_tokenizer, tmp_path / "cache")
    train = split_file(first.folder, "train")
    train.write_bytes(train.read_bytes()[:100])  # cut mid-file: no Parquet footer
    again = curate(spec, byte_tokenizer, tmp_path / "cache")
    out = capsys.readouterr().out
    assert (
        f"the cached splits in {first.folder} do not verify (train-00000-of-00001.parquet is not readable Parquet"
        in out
    )
    assert (
        not again.cached
        and pq.read_table(split_file(again.folder, "train")).num_rows == first.accounting.splits["train"]
    )
    test = split_file(again.folder, "test")
    pq.write_table(pq.read_table(test).slice(0, 1), test)  # readable, but rows lost
    curate(spec, byte_tokenizer, tmp_path / "cache")
    assert "test-00000-of-00001.parquet holds 1 rows where the accounting says 3" in capsys.readouterr().out
