"""The price reader on both tokenizer kinds, with tiny models whose logits the tests set."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pricer.data.prompt import make_completion
from pricer.read.distribution import PriceReader
from pricer.read.number_tokens import PriceRangeError

NEG = -1e9


@dataclass
class Output:
    logits: torch.Tensor
    past_key_values: object = None


class History:
    """A stand-in KV cache: the tokens each row has seen."""

    def __init__(self, tokens):
        self.tokens = tokens

    def batch_select_indices(self, indices):
        self.tokens = self.tokens[indices]


class TableModel(torch.nn.Module):
    """Next-token probabilities looked up from what follows the last "$" (and the row's marker)."""

    def __init__(self, tokenizer, tables):
        super().__init__()
        self.tokenizer = tokenizer
        self.tables = tables  # {marker: {prefix: {next text: prob}}}
        self.vocab = len(tokenizer)
        self.calls = 0

    def get_input_embeddings(self):
        return torch.nn.Embedding(1, 1)  # the reader takes its mask dtype from here

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False
    ):
        self.calls += 1
        history = input_ids if past_key_values is None else torch.cat([past_key_values.tokens, input_ids], 1)
        width = input_ids.shape[1]
        logits = torch.full((len(history), width, self.vocab), NEG)
        tree = attention_mask is not None and attention_mask.dim() == 4
        for row, tokens in enumerate(history):
            # a 4D mask says which tokens each new position sees; otherwise only the last one is read
            for q in range(width) if tree else [width - 1]:
                seen = tokens[attention_mask[row, 0, q] == 0] if tree else tokens
                text = self.tokenizer.decode([t for t in seen.tolist() if t != self.tokenizer.pad_token_id])
                marker, _, prefix = text.replace(" ", "").rpartition("$")
                if tree and not marker:
                    continue  # a padding position: it sees only itself
                for nxt, p in self.tables[marker[-1]].get(prefix, {".": 1.0}).items():
                    token = self.tokenizer.encode(nxt, add_special_tokens=False)[0]
                    logits[row, q, token] = torch.tensor(p).log()
        return Output(logits, History(history) if use_cache else None)


def left_padded(tokenizer, texts):
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


@pytest.fixture
def digit_tokenizer(byte_tokenizer):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(byte_tokenizer)


@pytest.fixture
def whole_tokenizer(llama3_tokenizer):
    """Llama 3's real tokenizer: every whole number 0-999 one token."""
    from pricer.base.load import load_tokenizer

    return load_tokenizer(llama3_tokenizer)


def test_whole_number_tokens_give_the_distribution_in_one_pass(whole_tokenizer):
    reader = PriceReader(whole_tokenizer)
    assert reader.kind == "whole"
    model = TableModel(
        whole_tokenizer, {"A": {"": {"10": 0.2, "20": 0.3, "30": 0.4, "$": 0.1}}, "B": {"": {"999": 1.0}}}
    )
    batch = left_padded(whole_tokenizer, ["A$", "B$"])
    first, second = reader.read(model, batch["input_ids"], batch["attention_mask"])
    assert model.calls == 1
    assert first.probs[[10, 20, 30]] == pytest.approx([0.2, 0.3, 0.4])
    assert first.probs.sum() == pytest.approx(0.9) and first.left_out == pytest.approx(0.1)
    assert first.median == 20 and first.interval(0.8) == (10, 30)
    assert first.mean == pytest.approx((10 * 2 + 20 * 3 + 30 * 4) / 9)
    assert second.median == 999 and second.mean == pytest.approx(999)


def test_every_cent_of_the_range_reads_as_its_whole_dollar_token(whole_tokenizer):
    """The completion of every price curation keeps ($0.50 to $999.49, by the cent) starts with
    the very token the reader reads as that whole-dollar price, then "." and "00"."""
    reader = PriceReader(whole_tokenizer)
    cents = np.arange(50, 99_950)
    completions = [make_completion(c / 100) for c in cents]
    encoded = whole_tokenizer(completions, add_special_tokens=False)["input_ids"]
    dollars = np.array([round(c / 100) for c in cents])
    assert [ids[0] for ids in encoded] == reader.number_ids[dollars].tolist()
    tails = {tuple(whole_tokenizer.convert_ids_to_tokens(ids[1:])) for ids in encoded}
    assert tails == {(".", "00")}


def test_a_range_the_whole_numbers_do_not_cover_is_refused_not_misread(whole_tokenizer):
    """Llama 3 writes 0-999 one token each but 1234 as "123" and "4": a search one digit a token
    would read a model sure of "123" as $1. Four digits are refused, naming what it can read."""
    assert PriceReader(whole_tokenizer, max_digits=3).kind == "whole"
    with pytest.raises(PriceRangeError) as refused:
        PriceReader(whole_tokenizer, max_digits=4)
    message = str(refused.value)
    assert "4 digits" in message and "'1000'" in message and "$999" in message
    assert "\n" not in message


def test_a_digit_tokenizer_reads_any_number_of_digits(digit_tokenizer):
    reader = PriceReader(digit_tokenizer, max_digits=5)
    assert reader.kind == "digits"
    assert reader.digit_ids.tolist() == [digit_tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]


TABLES = {
    "A": {"": {"1": 0.6, "2": 0.4}, "1": {"5": 0.5, ".": 0.5}, "15": {".": 1.0}, "2": {".": 0.9, "0": 0.1}},
    "B": {"": {"9": 1.0}, "9": {"9": 1.0}, "99": {"9": 0.5, ".": 0.5}, "999": {"9": 0.25, ".": 0.75}},
}


def test_digit_search_reads_a_batch_with_the_kv_cache(digit_tokenizer):
    reader = PriceReader(digit_tokenizer, min_mass=0.0)
    assert reader.kind == "digits"
    model = TableModel(digit_tokenizer, TABLES)
    batch = left_padded(digit_tokenizer, ["xxA$", "B$"])
    a, b = reader.read(model, batch["input_ids"], batch["attention_mask"])
    assert model.calls == 4  # the prompt, then one pass per digit
    assert dict(zip(a.prices.tolist(), a.probs.tolist(), strict=True)) == pytest.approx(
        {1: 0.3, 2: 0.36, 15: 0.3, 20: 0.04}
    )
    assert a.left_out == pytest.approx(0.0)
    assert a.median == 2 and a.interval(0.8) == (1, 15)
    assert a.mean == pytest.approx(1 * 0.3 + 2 * 0.36 + 15 * 0.3 + 20 * 0.04)
    # $99 then "." half the time; $999 ends three times in four, and $9999 is over the range
    assert dict(zip(b.prices.tolist(), b.probs.tolist(), strict=True)) == pytest.approx({99: 0.5, 999: 0.375})
    assert b.left_out == pytest.approx(0.125)


def test_pruning_keeps_the_mass_it_claims(digit_tokenizer):
    reader = PriceReader(digit_tokenizer, min_mass=0.35)
    (a,) = reader.read(TableModel(digit_tokenizer, TABLES), *left_padded(digit_tokenizer, ["A$"]).values())
    assert dict(zip(a.prices.tolist(), a.probs.tolist(), strict=True)) == pytest.approx({1: 0.3, 2: 0.36})
    assert a.left_out == pytest.approx(0.34)  # $15 (0.3) and $20 (0.04) pruned
    assert a.probs.sum() + a.left_out == pytest.approx(1.0)


def test_every_input_gets_a_number(digit_tokenizer):
    tables = {"C": {"": {"x": 1.0}}}  # the model never writes a digit
    (c,) = PriceReader(digit_tokenizer).read(
        TableModel(digit_tokenizer, tables), *left_padded(digit_tokenizer, ["C$"]).values()
    )
    assert c.left_out == pytest.approx(1.0)
    assert isinstance(c.median, float) and isinstance(c.mean, float)


def test_the_kv_cache_search_matches_full_forward_passes_on_a_real_llama(tiny_llama):
    """On a real (random) Llama, with left padding, each price's mass is the product of the
    probabilities that full, uncached forward passes give."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    reader = PriceReader(tokenizer, max_digits=3, beam=1000, min_mass=0.0)
    prompts = ["A longer product text. Price is $", "Short. Price is $"]
    distributions = reader.read(model, *left_padded(tokenizer, prompts).values())
    digits = [tokenizer.encode(str(d), add_special_tokens=False)[0] for d in range(10)]

    def next_probs(text):
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            return model(ids).logits[0, -1].softmax(-1)

    for prompt, dist in zip(prompts, distributions, strict=True):
        assert dist.probs.sum() + dist.left_out == pytest.approx(1.0, abs=1e-6)
        for price in (7, 42, 305):
            text, mass = prompt, 1.0
            for ch in str(price):
                mass *= float(next_probs(text)[digits[int(ch)]])
                text += ch
            mass *= 1 - float(next_probs(text)[digits].sum())
            got = dict(zip(dist.prices.tolist(), dist.probs.tolist(), strict=True)).get(price, 0.0)
            assert got == pytest.approx(mass, rel=1e-4, abs=1e-9), (prompt, price)


def test_the_shared_prefix_goes_through_the_model_once_and_reads_the_same(tiny_llama):
    """Prompts that start with the same question: its tokens go through the model once, as
    one row, the batch goes on from their KV cache (each row's padding a hole in the mask), and
    every distribution equals the one read without sharing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pricer.data.prompt import QUESTION, make_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    texts = ["A longer product text, with more words in it", "Short", "A text of middle length"]
    ids, mask = left_padded(tokenizer, [make_prompt(t) for t in texts]).values()
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    shared = PriceReader(tokenizer, max_digits=3, beam=1000, min_mass=0.0, share_prefix=True).read(
        model, ids, mask
    )
    hook.remove()
    plain = PriceReader(tokenizer, max_digits=3, beam=1000, min_mass=0.0).read(model, ids, mask)

    question = len(tokenizer.encode(QUESTION, add_special_tokens=False))
    assert shapes[0][0] == 1 and question <= shapes[0][1] < mask.sum(1).min()  # the prefix, once
    assert shapes[1] == (3, ids.shape[1] - shapes[0][1])  # the rest of every prompt
    for a, b in zip(shared, plain, strict=True):
        assert a.prices.tolist() == b.prices.tolist()
        assert np.allclose(a.probs, b.probs, rtol=1e-4, atol=1e-9)
        assert a.left_out == pytest.approx(b.left_out, rel=1e-4, abs=1e-9)


def test_prompts_that_share_too_little_are_read_in_one_pass(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids, mask = left_padded(tokenizer, ["Kettle. Price is $", "Toaster oven. Price is $"]).values()
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    PriceReader(tokenizer, max_digits=2, beam=4, share_prefix=True).read(model, ids, mask)
    hook.remove()
    assert shapes[0] == tuple(ids.shape)
