import math

import pytest

from pricer.data.rules import (
    BAD_PRICE,
    NO_PRICE,
    TOO_SHORT,
    CurationRules,
    candidate_text,
    normalise_title,
    parse_price,
    raw_contents,
    scrub,
)


@pytest.mark.parametrize(
    "value, expected",
    [
        (12, (12.0, None)),
        (12.5, (12.5, None)),
        ("$1,299.99", (1299.99, None)),
        (" 7.00 ", (7.0, None)),
        (None, (None, NO_PRICE)),
        ("None", (None, NO_PRICE)),
        ("", (None, NO_PRICE)),
        ("$10.99 - $20.99", (None, BAD_PRICE)),
        ("from $5", (None, BAD_PRICE)),
        (True, (None, BAD_PRICE)),
        ([3], (None, BAD_PRICE)),
        (math.inf, (None, BAD_PRICE)),
        ("9,99", (None, BAD_PRICE)),  # a decimal comma: not $999
        ("1,2,3", (None, BAD_PRICE)),
        ("12,345,678.50", (12345678.5, None)),
        ("\u0669\u0669", (None, BAD_PRICE)),  # Arabic-Indic 99
        ("\uff19.99", (None, BAD_PRICE)),  # a fullwidth 9
        ("$$5", (None, BAD_PRICE)),
    ],
)
def test_parse_price(value, expected):
    assert parse_price(value) == expected


def test_scrub_collapses_punctuation_and_drops_part_numbers():
    text = 'Fits {"W10153412" models}: [quiet]   "2-pack" 1234567 and AB12 ok'
    assert scrub(text) == "Fits models quiet 2-pack and AB12 ok"


def test_clean_details_read_as_key_value_lines_from_an_object_or_its_json_string():
    rules = CurationRules(details="clean")
    details = {"Brand": "GE", "Item Weight": "1.5 pounds", "Best Sellers Rank": {"Appliances": 2346}}
    as_object = {"description": ["d"], "features": ["f"], "details": details}
    as_string = {"description": ["d"], "features": ["f"], "details": __import__("json").dumps(details)}
    text = raw_contents(as_object, rules)
    assert text == raw_contents(as_string, rules)
    assert "Brand GE" in text and "Item Weight 1.5 pounds" in text
    assert "Best Sellers" not in text  # boilerplate key dropped


def test_candidate_text_needs_more_than_min_chars():
    rules = CurationRules(min_chars=300, details="clean")
    short = {"title": "T", "description": ["x" * 299], "features": [], "details": {}}
    assert candidate_text(short, rules) == (None, TOO_SHORT)
    enough = {"title": "Title 1234567", "description": ["x" * 300], "features": [], "details": {}}
    text, reason = candidate_text(enough, rules)
    assert reason is None and text.startswith("Title\n")


def test_rules_reject_inconsistent_bounds():
    with pytest.raises(ValueError, match="min_tokens < max_tokens"):
        CurationRules(min_tokens=200, max_tokens=160)
    with pytest.raises(ValueError, match="min_price <= max_price"):
        CurationRules(min_price=10, max_price=1)


def test_normalise_title():
    assert normalise_title("  The GE Fridge, 2-Pack! ") == "the ge fridge 2 pack"


def test_course_details_are_the_loading_scripts_json_string_less_the_removals():
    """As the course's Item: json.dumps with its default separators (and ASCII escapes), the
    removal substrings taken out of the string, whole keys and values kept otherwise."""
    rules = CurationRules()
    details = {
        "Brand": "GE",
        "Item Weight": "1.5 pounds",
        "Best Sellers Rank": {"Appliances": 2346},
        "Größe": "M",
    }
    record = {"description": ["d", ""], "features": ["f"], "details": details}
    expected = 'd\n\nf\n{"Brand" "GE", " Weight" "1.5 pounds", " Rank" {"Appliances" 2346}, "Gr\\u00f6\\u00dfe" "M"}\n'
    assert raw_contents(record, rules) == expected
    assert raw_contents({**record, "details": __import__("json").dumps(details)}, rules) == expected


def test_an_empty_details_object_counts_toward_the_characters_as_in_the_course():
    """An empty details object is "{}" in the course's strings: truthy, appended, three more
    characters toward min_chars (then scrubbed away)."""
    rules = CurationRules(min_chars=300)
    short = {"title": "T", "description": ["x" * 296], "features": [], "details": {}}
    assert candidate_text(short, rules) == (None, TOO_SHORT)  # 296 + 1 + 3 = 300, not more
    enough = {"title": "T", "description": ["x" * 297], "features": [], "details": {}}
    text, reason = candidate_text(enough, rules)
    assert reason is None and text == "T\n" + "x" * 297
