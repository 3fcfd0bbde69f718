"""The main job's path with Llama 3's real tokenizer (whole numbers 0-999 one token each, a BOS
token, spaces cleaned up on decoding): batches, the token cut and a whole fit read four ways."""

import json
import shutil

import pytest

from pricer.base.load import load_tokenizer
from pricer.data.batches import IGNORE_INDEX
from pricer.data.prompt import PREFIX, cut_to_tokens
from tests.conftest import (
    REPO,
    away_from_the_training_data,
    cli_args,
    predicted_cents,
    small_datamodule,
    write_raw,
)

APPLIANCES = str(REPO / "configs" / "appliances.yaml")


def test_a_batch_starts_with_one_bos_and_learns_only_the_whole_dollar_token_and_cents(
    sample, llama3_tokenizer, tmp_path
):
    """The prompt gets Llama 3's BOS (once, first), the completion none; the loss covers exactly
    the price's tokens, "123", ".", "00", and the prompt read alone is the batch's prompt."""
    dm = small_datamodule(sample, llama3_tokenizer, tmp_path / "cache", categories=["Appliances"])
    dm.prepare_data()
    dm.setup("fit")
    tokenizer = dm.tokenizer
    batch = next(iter(dm.val_dataloader()))
    for row in range(len(batch["input_ids"])):
        real = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        labels = batch["labels"][row][batch["attention_mask"][row].bool()].tolist()
        assert real[0] == tokenizer.bos_token_id and real.count(tokenizer.bos_token_id) == 1
        target = [t for t in labels if t != IGNORE_INDEX]
        assert tokenizer.convert_ids_to_tokens(target) == [str(round(float(batch["price"][row]))), ".", "00"]
        assert labels[: len(real) - 3] == [IGNORE_INDEX] * (len(real) - 3)
        assert tokenizer.decode(real[1 : len(real) - 3]).endswith(f"\n\n{PREFIX}")
        prompt = batch["prompt_ids"][row][batch["prompt_mask"][row].bool()].tolist()
        assert prompt == real[:-3]


def test_the_token_cut_cleans_up_spaces_as_llama_3s_decoding_did(llama3_tokenizer):
    """transformers 5 no longer cleans up spaces when a BPE tokenizer decodes; Llama 3's
    tokenizer asks for it (the course's texts were decoded with it), so the cut does it itself."""
    tokenizer = load_tokenizer(llama3_tokenizer)
    assert tokenizer.clean_up_tokenization_spaces
    text = "It 's a kettle , it is n't loud . Boils fast !"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    raw = tokenizer.backend_tokenizer.decode(ids)
    assert raw == text  # the backend alone keeps the spaces
    ((cut, count),) = cut_to_tokens([text], tokenizer, 160)
    assert cut == "It's a kettle, it isn't loud. Boils fast!" and count == len(ids)
    ((short, _),) = cut_to_tokens([text], tokenizer, 4)
    assert short == tokenizer.clean_up_tokenization(tokenizer.backend_tokenizer.decode(ids[:4]))


@pytest.mark.slow
def test_the_appliances_job_on_a_tiny_llama_3_reads_the_same_prices_four_ways(
    sample, tiny_llama3, tmp_path, capsys
):
    """configs/appliances.yaml's rules and prompt (five neighbours) on the real sample, with a
    tiny random Llama of Llama 3's vocabulary and its real tokenizer: curate, fit a few steps,
    then `test` and `predict` of the adapter copied away from its data, and Pricer.from_adapter
    (the Space's reader) quote fit's own test prices to the cent, read through whole-number
    tokens."""
    import csv

    from pricer.cli.main import main
    from pricer.read.recipe import read_recipe
    from pricer.read.serving import Pricer

    lines = (sample / "raw" / "meta_categories" / "meta_Appliances.jsonl").read_text().splitlines()
    write_raw(tmp_path, "Appliances", lines)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        "trainer:\n"
        "  accelerator: cpu\n"
        "  max_epochs: 1\n"
        "  logger: false\n"
        "  val_check_interval: 1.0\n"
        "  callbacks:\n"
        "    - class_path: pricer.read.report.PriceReport\n"
        "    - class_path: pricer.train.batch_size.FitBatchSize\n"
        "      init_args: {effective_batch_size: 4, memory_budget_gib: null, max_val: 4, init_val: 4}\n"
        "model:\n"
        "  gradient_checkpointing: false\n"
        "data:\n"
        "  train_size: 24\n"
        "  val_size: 8\n"
        "  test_size: 8\n"
        "  num_proc: 1\n"
        "  batch_size: 4\n"
        "  eval_batch_size: 4\n"
    )
    args = cli_args(overlay, tiny_llama3, tmp_path, tmp_path, config=APPLIANCES)
    main(["fit", *args, "--run_name", "llama3"])
    run = tmp_path / "runs" / "llama3"
    recipe = read_recipe(run / "adapter")
    assert recipe.neighbors == 5 and recipe.max_digits == 3
    assert recipe.rules == json.loads(json.dumps(recipe.curation_rules.as_dict()))
    rows = list(csv.DictReader((run / "predictions.csv").open()))
    assert len(rows) == 8
    cents = [round(float(r["predicted"]), 2) for r in rows]
    llm_cents = [round(float(r["llm_predicted"]), 2) for r in rows]  # the LLM's own, whatever the blend

    lite, adapter, prompts = away_from_the_training_data(run, tmp_path)
    capsys.readouterr()
    main(["test", *args, "--data.source", str(lite), "--model.adapter", str(adapter), "--run_name", "again"])
    again = list(csv.DictReader((tmp_path / "runs" / "again" / "predictions.csv").open()))
    assert [round(float(r["predicted"]), 2) for r in again] == cents
    assert predicted_cents(args, lite, adapter, tmp_path, "quotes") == cents

    pricer = Pricer.from_adapter(str(adapter))
    assert pricer.reader.price_reader.kind == "whole"
    quotes = [pricer.quote_prompt(p) for p in prompts]
    assert [round(q.price, 2) for q in quotes] == cents
    assert [round(q.llm_price, 2) for q in quotes] == llm_cents
    assert all(len(q.neighbors) == 5 and q.distribution.prices[-1] == 999 for q in quotes)
    shutil.rmtree(tmp_path / "runs")
