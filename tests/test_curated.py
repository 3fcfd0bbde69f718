import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pricer.data.curated import load_curated
from pricer.data.raw import SourceError
from tests.conftest import course_format_dataset

TEXT = "How much does this cost to the nearest dollar?\n\nAcme Kettle 1.7L\nA fast kettle.\n\nPrice is $"


def write(folder, split, rows):
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / f"{split}-00000-of-00001.parquet")


def test_course_text_and_price_format(tmp_path):
    write(tmp_path, "train", [{"text": TEXT + "25.00", "price": 24.99}])
    write(tmp_path, "test", [{"text": TEXT, "price": 30.0}])
    data = load_curated(str(tmp_path))
    train, test = data["train"][0], data["test"][0]
    assert train["prompt"] == TEXT and train["completion"] == "25.00" and train["price"] == 24.99
    assert test["prompt"] == TEXT and test["completion"] == "30.00"
    assert test["title"] == "Acme Kettle 1.7L" and test["text"] == "Acme Kettle 1.7L\nA fast kettle."


def test_prompt_completion_format_without_title_column(tmp_path):
    write(tmp_path, "test", [{"prompt": TEXT, "completion": "42.00"}])
    row = load_curated(str(tmp_path))["test"][0]
    assert row["price"] == 42.0 and row["title"] == "Acme Kettle 1.7L" and row["category"] == ""


def test_a_bad_price_names_split_and_row(tmp_path):
    write(tmp_path, "test", [{"text": TEXT, "price": 3.0}, {"text": TEXT, "price": None}])
    with pytest.raises(SourceError, match=r"split test\), row 1: no price"):
        load_curated(str(tmp_path))


def test_unknown_columns_are_named(tmp_path):
    write(tmp_path, "test", [{"name": "x", "cost": 3.0}])
    with pytest.raises(SourceError, match=r"unknown columns \['cost', 'name'\]"):
        load_curated(str(tmp_path))


def test_a_path_that_is_nothing_is_explained(tmp_path):
    with pytest.raises(SourceError, match="no such local folder or file"):
        load_curated(str(tmp_path / "missing" / "folder"))


@pytest.mark.parametrize(
    "given, kind, location",
    [
        (
            "hf://datasets/McAuley-Lab/Amazon-Reviews-2023",
            "raw_hub",
            "hf://datasets/McAuley-Lab/Amazon-Reviews-2023",
        ),
        ("McAuley-Lab/Amazon-Reviews-2023/", "raw_hub", "hf://datasets/McAuley-Lab/Amazon-Reviews-2023"),
        ("hf://datasets/me/pricer-data", "curated_hub", "me/pricer-data"),
        ("me/pricer-data", "curated_hub", "me/pricer-data"),
    ],
)
def test_a_source_is_parsed_once_into_its_kind_and_location(given, kind, location):
    from pricer.data.source import parse_source

    parsed = parse_source(given)
    assert (parsed.kind, parsed.location, parsed.given) == (kind, location, given)


def test_local_sources_are_told_apart_by_what_is_there(raw_items, tmp_path):
    from pricer.data.source import parse_source

    assert parse_source(str(raw_items)).kind == "raw_local"
    assert parse_source(str(raw_items)).category_file("Software") == str(
        raw_items / "raw" / "meta_categories" / "meta_Software.jsonl"
    )
    curated = tmp_path / "curated"
    curated.mkdir()
    assert parse_source(str(curated)).kind == "curated_local"
    for missing in (
        str(tmp_path / "nope"),
        "./nope/folder",
        "data/products.parquet",
        "data/products.jsonl",
        "a/b/c",
    ):
        with pytest.raises(SourceError, match="no such local folder or file"):
            parse_source(missing)


def test_a_curated_hub_source_is_read_at_data_revision(tmp_path, monkeypatch, byte_tokenizer):
    import datasets

    from pricer.data.module import PriceDataModule

    folder = course_format_dataset(tmp_path / "lite")
    real_load, asked = datasets.load_dataset, []

    def hub_load(path, *args, revision=None, **kwargs):  # the Hub's download, served from a folder
        asked.append((path, revision))
        return real_load(str(folder))

    monkeypatch.setattr(datasets, "load_dataset", hub_load)
    data = PriceDataModule(source="me/lite-data", revision="v2", tokenizer=byte_tokenizer)
    assert len(data.load_splits()["test"]) == 5
    assert asked == [("me/lite-data", "v2")]


def test_a_revision_for_a_local_source_is_refused_not_ignored(raw_items, byte_tokenizer):
    from pricer.data.module import PriceDataModule
    from pricer.options import OptionError

    with pytest.raises(
        OptionError,
        match=r"data.revision 'v2': a revision pins a Hub source, and data.source .* is a local folder",
    ):
        PriceDataModule(source=str(raw_items), revision="v2", tokenizer=byte_tokenizer)
    assert PriceDataModule(source=str(raw_items), tokenizer=byte_tokenizer).revision == "main"
