"""One prompt path: curation and predict (and so the Space) build a product's prompt through
the same functions, so a product priced after training reads exactly as it trained."""

import json

import pytest

from pricer.base.load import load_tokenizer, tokenizer_source
from pricer.data.products import product_prompt, product_record
from pricer.data.records import curate_chunk
from pricer.data.rules import CurationRules, raw_contents
from tests.conftest import record

LONG = " ".join(
    f"Paragraph {i}: a sturdy [steel] body, 1.7 L, auto shut-off; model AB12345CD." for i in range(60)
)

RECORDS = [
    # features, nested details with dropped keys, a description list of several paragraphs
    record(
        "Acme Kettle {Deluxe} 1.7L - Model KT-2000XL",
        25.0,
        description=["A kettle that boils fast.", "Boil-dry protection and a 360 degree base.", LONG[:400]],
        features=["1500 W element", "Removable washable filter", "BPA free: yes"],
        details={
            "Brand": "Acme",
            "Item Weight": "1.5 pounds",
            "Best Sellers Rank": {"Appliances": 2346, "Kettles": 12},
            "Date First Available": "March 3, 2021",
            "Dimensions": ["8 x 6 x 10 inches"],
        },
    ),
    # long text: cut at max_chars before scrubbing, then at max_tokens
    record("Fridge XL-900", 899.0, description=[LONG], features=[LONG[:700]], details={"Brand": "Frost"}),
    # details as the 2023 loading script wrote them: a JSON string
    record(
        "Blender",
        49.0,
        description=[LONG[:900]],
        features=[],
        details=json.dumps({"Brand": "Mix", "Color": "Red"}),
    ),
]


@pytest.fixture(params=["byte", "smollm2"])
def tokenizer_name(request, byte_tokenizer):
    if request.param == "byte":
        return byte_tokenizer
    return str(request.getfixturevalue("gguf"))


def test_a_curated_prompt_and_the_predict_prompt_are_identical(tokenizer_name):
    rules = CurationRules()
    source = tokenizer_source(tokenizer_name)
    lines = [(number, json.dumps(r).encode()) for number, r in enumerate(RECORDS, start=1)]
    result = curate_chunk("meta_Appliances.jsonl", "Appliances", lines, rules, source)
    assert len(result.rows) == len(RECORDS), result.drops
    tokenizer = load_tokenizer(tokenizer_name)
    for row, raw in zip(result.rows, RECORDS, strict=True):
        title, prompt = product_prompt(raw, rules, tokenizer)
        assert prompt == row["prompt"], raw["title"]
        assert title == row["title"]
    # the cut happened: every text is at most max_tokens long, and the long one reached it
    counts = [len(tokenizer(row["text"], add_special_tokens=False)["input_ids"]) for row in result.rows]
    assert max(counts) <= rules.max_tokens + 2 and max(counts) >= rules.max_tokens - 2


def test_a_text_line_goes_through_the_same_token_cut(byte_tokenizer):
    rules = CurationRules()
    tokenizer = load_tokenizer(byte_tokenizer)
    _, prompt = product_prompt({"text": "x" * 1000}, rules, tokenizer)
    assert prompt.count("x") == rules.max_tokens  # the byte tokenizer: one token a character


def test_the_default_text_is_the_courses_character_for_character(tokenizer_name):
    """The course's Item (benchmarks/curation_speed.py re-implements it line by line from the
    course's items.py) on raw 2023 records with non-empty details, features and description
    lists: pricer's curated text is the same, character for character."""
    from transformers import AutoTokenizer

    from benchmarks.curation_speed import CourseItem

    records = (
        RECORDS
        + [
            record("Plain", 19.0, description=[LONG[:700]], features=[], details={}),  # "{}" counts
            record(
                "Üniçode Kettle",
                35.0,
                description=[LONG[:500]],
                features=["Größe: 1,7 l"],
                details={"Marke": "Küche"},
            ),
        ]
    )
    rules = CurationRules()
    source = tokenizer_source(tokenizer_name)
    lines = [(number, json.dumps(r).encode()) for number, r in enumerate(records, start=1)]
    rows = curate_chunk("meta_Appliances.jsonl", "Appliances", lines, rules, source).rows
    CourseItem.tokenizer = AutoTokenizer.from_pretrained(source)
    course = [CourseItem.from_datapoint(r) for r in records]
    assert [c.title for c in course if c] == [r["title"] for r in rows]
    for row, item in zip(rows, [c for c in course if c], strict=True):
        assert row["text"] == item.text, item.title
        assert row["prompt"] + row["completion"] == item.prompt
        assert row["tokens"] == item.token_count, item.title


@pytest.mark.parametrize(
    "given",
    [
        {"description": "Stainless steel body, 1.7 L.", "features": "Cordless\nAuto shut-off"},
        {"description": ["Stainless steel body, 1.7 L."], "features": ["Cordless", "Auto shut-off"]},
    ],
)
def test_a_field_given_as_text_is_read_as_text_not_letter_by_letter(byte_tokenizer, given):
    """A description or features given as one text is one entry (features one a line), not a
    list of its characters; a product without details gets no stray "null"."""
    rules = CurationRules()
    tokenizer = load_tokenizer(byte_tokenizer)
    _, prompt = product_prompt({"title": "Acme Kettle 1.7L", **given}, rules, tokenizer)
    assert "Stainless steel body, 1.7 L. Cordless Auto shut-off" in prompt
    assert "S t a i" not in prompt and "null" not in prompt
    typed = product_record("Acme Kettle 1.7L", "Stainless steel body, 1.7 L.", "Cordless\nAuto shut-off")
    assert product_prompt(typed, rules, tokenizer)[1] == prompt  # the Space's fields, the same text


def test_curation_reads_a_text_where_a_list_goes_as_one_entry_and_no_details_as_none():
    rules = CurationRules()
    listed = raw_contents({"description": ["A kettle."], "features": ["Cordless"], "details": {}}, rules)
    texts = raw_contents({"description": "A kettle.", "features": "Cordless", "details": None}, rules)
    assert texts == "A kettle.\nCordless\n" and listed == texts + "{}\n"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("features", 3, "The features must be text or a list of texts, not int (3)."),
        ("description", ["A kettle", 5], "The description must be text or a list of texts, not a list holding int (5)."),
        ("details", ["Brand", "Acme"], 'The details must be an object, its JSON text or "key: value" lines, not list'),
        ("title", {"name": "Kettle"}, 'The title must be text, not dict ({"name": "Kettle"}).'),
        ("features", ["ok", "bad \x00"], r"The features contains characters that cannot be read (U+0000)"),
    ],
)  # fmt: skip
def test_a_field_of_another_type_is_one_line_naming_the_field_the_line_and_the_type(
    byte_tokenizer, tmp_path, field, value, message
):
    from pricer.data.products import ProductError, load_products
    from pricer.data.raw import SourceError

    product = {"title": "Kettle", "description": "A kettle that boils.", field: value}
    with pytest.raises(ProductError) as refused:
        product_record(**{k: product.get(k) for k in ("title", "description", "features", "details")})
    assert message in str(refused.value)
    source = tmp_path / "products.jsonl"
    source.write_text(
        json.dumps({"title": "Fine", "description": "A fine kettle."}) + "\n" + json.dumps(product) + "\n"
    )
    with pytest.raises(SourceError) as stopped:
        load_products(str(source), CurationRules(), load_tokenizer(byte_tokenizer))
    assert str(stopped.value).startswith(f"{source}:2: ") and message in str(stopped.value)
    assert "\n" not in str(stopped.value)
