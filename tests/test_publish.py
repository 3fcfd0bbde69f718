"""The Hub repo folders a run stages, read back as a user would; the push against a recording HfApi."""

import csv
import json
import pathlib

import pytest

from pricer import hub_calls as hub
from pricer.cli.main import main
from pricer.hub.publish import HubPublisher
from tests.conftest import SECRET, RecordingApi


@pytest.fixture
def published(fit_args, tmp_path, monkeypatch):
    overlay = tmp_path / "publish.yaml"
    overlay.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {every_n_train_steps: 2, save_last: true, save_top_k: 1}\n"
        "    - class_path: pricer.read.report.PriceReport\n"
        "    - class_path: pricer.hub.publish.HubPublisher\n"
        "      init_args: {model_repo: me/pricer-tiny, base_model_id: me/tiny-llama, dataset_repo: me/pricer-data}\n"
    )
    monkeypatch.setenv("HF_TOKEN", SECRET)
    main(["fit", *fit_args, "--config", str(overlay), "--run_name", "pub"])
    return tmp_path / "runs" / "pub"


@pytest.mark.slow
def test_the_staged_dataset_loads_back(published):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    folder = published / "hub" / "dataset"
    data = load_dataset(str(folder))
    assert {k: len(v) for k, v in data.items()} == {"train": 16, "validation": 4, "test": 4}
    assert set(data["train"].column_names) == {
        "key",
        "title",
        "category",
        "price",
        "text",
        "prompt",
        "completion",
        "tokens",
    }
    card = DatasetCard.load(folder / "README.md")
    assert card.data.source_datasets == ["McAuley-Lab/Amazon-Reviews-2023"]
    assert card.data.configs[0]["data_files"][0] == {"split": "train", "path": "data/train-*.parquet"}
    assert "| read " in card.text and 'load_dataset("me/pricer-data")' in card.text
    assert (folder / "price_histogram.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_staged_model_card_carries_the_metrics(published):
    from huggingface_hub import ModelCard

    folder = published / "hub" / "model"
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "me/tiny-llama" and card.data.library_name == "peft"
    assert card.data.datasets == ["me/pricer-data"]
    metrics = json.loads((published / "metrics.json").read_text())
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {
        k: round(metrics[k], 2 if k in ("mae", "median_ae") else 3)
        for k in ("mae", "rmsle", "hit_rate", "smape", "median_ae")
    }  # rounded as people read them
    assert {r.dataset_type for r in card.data.eval_results} == {"me/pricer-data"}
    assert 'Pricer.from_adapter("me/pricer-tiny")' in card.text and (folder / "scatter.png").is_file()
    # the interval's measured coverage: the share of test prices inside it, from predictions.csv
    rows = list(csv.DictReader((published / "predictions.csv").open()))
    inside = sum(float(r["low"]) <= float(r["price"]) <= float(r["high"]) for r in rows) / len(rows)
    assert metrics["interval_coverage"] == {"nominal": 0.8, "measured": pytest.approx(inside)}
    assert (
        f"The 80% interval (`quote.low` to `quote.high`) held the true price for {100 * inside:.1f}%"
        in card.text
    )
    for path in published.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_the_staged_adapter_reads_the_same_prices(published, fit_args, tmp_path):
    main(
        [
            "test",
            *fit_args,
            "--run_name",
            "from-hub-folder",
            "--model.adapter",
            str(published / "hub" / "model"),
        ]
    )
    again = json.loads((tmp_path / "runs" / "from-hub-folder" / "metrics.json").read_text())
    measured = json.loads((published / "metrics.json").read_text())
    measured.pop("weights_from")  # fit's record of which step it kept, not a measurement
    measured["blend"].pop("validation")  # and of what validation said when it chose the blend
    # the same read-out, named where it was served from: fit's choice, then the staged folder
    chosen = measured["read"].pop("served").removeprefix("the blend fit chose on validation")
    assert again["read"].pop("served") == f"the blend fit chose, from {published / 'hub' / 'model'}{chosen}"
    # the second read of the split, which counts the first
    assert measured.pop("test_reads_before") == {"count": 0, "runs": []}
    assert again.pop("test_reads_before") == {"count": 1, "runs": [published.name]}
    assert again == measured


@pytest.mark.slow
def test_a_push_is_one_commit_naming_the_run(published):
    api = RecordingApi()
    folder = published / "hub" / "model"
    hub.upload_folder(folder, "me/pricer-tiny", "model", "pricer run pub", private=True, api=api)
    commits = [c for c in api.calls if c[0] == "upload_folder"]
    assert len(commits) == 1 and commits[0][2]["commit_message"] == "pricer run pub"
    assert commits[0][2]["folder_path"] == str(folder)
    assert api.calls[0] == (
        "create_repo",
        "me/pricer-tiny",
        {"repo_type": "model", "private": True, "exist_ok": True},
    )


@pytest.mark.slow
def test_a_failed_push_keeps_the_folder_and_says_how_to_retry(published):
    folder = published / "hub" / "model"
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(hub.HubPublishError, match=r"intact; retry with:\n  hf upload me/pricer-tiny"):
        hub.upload_folder(
            folder, "me/pricer-tiny", "model", "pricer run pub", private=True, api=RecordingApi(fail=True)
        )
    assert sorted(p.name for p in folder.iterdir()) == before


def test_bad_repo_ids_and_missing_tokens_fail_before_any_work(monkeypatch, tmp_path):
    with pytest.raises(hub.HubPublishError, match="'not a repo' is not a Hub repo id"):
        HubPublisher(model_repo="not a repo")
    with pytest.raises(hub.HubPublishError, match="needs an owner"):
        HubPublisher(model_repo="justname")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(hub.HubPublishError, match="no Hugging Face token"):
        hub.upload_folder(tmp_path, "me/x", "model", "m", private=True, api=RecordingApi(token=None))


@pytest.mark.slow
def test_a_failed_push_at_the_end_of_fit_loses_nothing_and_retries_privately(
    fit_args, tmp_path, monkeypatch, capsys
):
    """Both pushes fail (the network drops): the adapter is saved, the test pass has run, the
    model folder carries its metrics, the exit code says it failed, and each retry command keeps
    --private (a retry without it would publish unlicensed data publicly)."""
    import huggingface_hub

    apis = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: apis.append(RecordingApi(fail=True)) or apis[-1])
    monkeypatch.setenv("HF_TOKEN", SECRET)
    overlay = tmp_path / "push.yaml"
    overlay.write_text(
        "trainer:\n  callbacks:\n    - class_path: pricer.read.report.PriceReport\n"
        "    - class_path: pricer.hub.publish.HubPublisher\n      init_args: {model_repo: me/pricer-tiny, upload: true,"
        " private: true, base_model_id: me/tiny-llama, dataset_repo: me/pricer-data, dataset_upload: true}\n"
    )
    with pytest.raises(SystemExit) as stop:
        main(["fit", *fit_args, "--config", str(overlay), "--run_name", "push"])
    assert stop.value.code == 2
    run = tmp_path / "runs" / "push"
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "metrics.json").is_file()
    assert json.loads((run / "hub" / "model" / "pricer.json").read_text())["metrics"]["n"] == 4
    err = capsys.readouterr().err
    assert f"hf upload me/pricer-data {run / 'hub' / 'dataset'} . --repo-type dataset --private" in err
    assert f"hf upload me/pricer-tiny {run / 'hub' / 'model'} . --repo-type model --private" in err
    assert apis[0].calls[0] == ("whoami",)  # the token was checked before any work


@pytest.mark.parametrize(
    "account, repos, message",
    [
        (dict(role="read"), ["me/x"], "the Hugging Face token of me is read-only"),
        (dict(name="me", orgs=["team"]), ["team/x", "other/y"], "'other' .*it can write to: me, team"),
    ],
)
def test_a_token_that_cannot_push_is_found_before_any_work(account, repos, message):
    with pytest.raises(hub.HubPublishError, match=message):
        hub.check_write_access(repos, api=RecordingApi(**account))
    assert hub.check_write_access(["me/x"], api=RecordingApi()) == "me"


def test_the_token_is_checked_before_curation(fit_args, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: RecordingApi(name="someone"))
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(SystemExit):
        main(["fit", *fit_args, "--trainer.callbacks+=pricer.hub.publish.HubPublisher",
              "--trainer.callbacks.model_repo=me/pricer-tiny", "--trainer.callbacks.upload=true"])  # fmt: skip
    assert (
        "me/pricer-tiny: the token belongs to someone, which cannot write to 'me'" in capsys.readouterr().err
    )
    assert not list((tmp_path / "cache").glob("*"))  # nothing curated


@pytest.mark.slow
def test_the_staged_folders_name_hub_ids_and_load_by_them_elsewhere(published, tiny_llama):
    """adapter_config.json named the base by a local path: AutoPeftModelForCausalLM on another
    machine failed. The Hub here is the download cache, filled from the staged folders."""
    from peft import AutoPeftModelForCausalLM

    from tests.conftest import serve_from_hub_cache

    model = published / "hub" / "model"
    assert (
        json.loads((model / "adapter_config.json").read_text())["base_model_name_or_path"] == "me/tiny-llama"
    )
    card = (published / "hub" / "dataset" / "README.md").read_text()
    assert str(published.parent.parent) not in card and "a local model file" not in card
    serve_from_hub_cache(pathlib.Path(tiny_llama), "me/tiny-llama")
    serve_from_hub_cache(model, "me/pricer-tiny")
    loaded = AutoPeftModelForCausalLM.from_pretrained("me/pricer-tiny")
    assert loaded.peft_config["default"].base_model_name_or_path == "me/tiny-llama"


def card_with_blend(blend: dict) -> str:
    """The model card of a run whose test measured these figures, served with `blend`."""
    from pricer.hub.cards import model_card

    metrics = {
        "n": 600,
        "mae": 35.2,
        "rmsle": 0.7,
        "hit_rate": 0.78,
        "smape": 30.0,
        "median_ae": 15.0,
        "mae_ci95": [30.0, 40.0],
        "blend": {"interval_scale": 1.0, **blend},
    }
    card = model_card(
        "me/pricer-tiny", "me/base", None, ["Appliances"], {}, metrics, None, "1 min", "cpu", (0.5, 999.0)
    )
    return str(card)


@pytest.mark.parametrize(
    "neighbors, said",
    [
        (0.0, "(0.6 LLM, 0.4 the classical model, a TF-IDF ridge; chosen on the validation split"),
        (0.25, "0.4 the classical model: of that, 0.75 a TF-IDF ridge and 0.25 the mean of the 5 nearest"),
    ],
)
def test_the_model_card_says_what_the_price_blends(neighbors, said):
    blend = {"weight": 0.6, "knn_share": neighbors, "llm_alone": {"mae": 39.9, "interval_coverage": 0.7}}
    text = card_with_blend(blend)
    assert "The price blends the LLM's with a classical model's in log price" in text
    assert said in text and "The LLM alone was off by $39.90" in text


@pytest.mark.parametrize("head_weight", [0.0, 0.35])
def test_the_model_card_says_when_a_price_head_is_mixed_in(head_weight):
    text = card_with_blend({"weight": 1.0, "knn_share": 0.0, "head_weight": head_weight})
    head = "The LLM's price mixes in its price head's at 0.35 in log price"
    alone = "The price is the LLM's alone"
    assert (head in text, alone in text) == ((True, False) if head_weight else (False, True))


def test_the_model_card_shows_the_prompt_the_adapter_was_trained_with():
    """An adapter trained with neighbours expects them in its prompt: the card's prompt shows the
    block, k and the title budget from the recipe; without neighbours, the course's prompt."""
    from dataclasses import replace

    from pricer.hub.cards import model_card
    from pricer.read.recipe import Recipe

    def prompt_section(recipe) -> str:
        card = model_card("me/p", "me/base", None, ["Appliances"], {}, None, None, "1 min", "cpu", (0.5, 999.0),
                          recipe=recipe)  # fmt: skip
        return str(card).split("## Prompt")[1].split("## Results")[0]

    recipe = Recipe(base_model="me/base")
    plain = prompt_section(recipe)
    assert "Similar items" not in plain and "<title>" in plain
    near = prompt_section(replace(recipe, neighbors=5, neighbor_title_tokens=16))
    assert "Similar items and their prices:" in near and "at most 16 tokens>: $<its price>" in near
    assert "(5 items, the most similar first)" in near and "`quote.neighbors`" in near
    assert near.index("Similar items") < near.index("<title>") < near.index("Price is $")
    assert "median $<their median>" not in near
    summary = prompt_section(replace(recipe, neighbors=5, neighbor_format="summary"))
    assert "Similar items' prices: median $<their median>" in summary and "and their prices:" not in summary
    assert "only those that share a word" in near
    strict = prompt_section(replace(recipe, neighbors=5, neighbor_min_similarity=0.25))
    assert "only those above a cosine similarity of 0.25" in strict
    both = prompt_section(replace(recipe, neighbors=5, neighbor_format="both"))
    assert both.index("and their prices:") < both.index("median $<their median>") < both.index("<title>")


@pytest.mark.slow
def test_folders_staged_from_a_local_gguf_and_local_data_name_no_path_of_this_machine(gguf, tmp_path, capsys):
    """The smoke job's shape (SmolLM2 from its local GGUF, a local raw folder), one step: every
    staged file, text or not, is free of the GGUF's folder, the data folder, the run root and
    $HF_HOME; the run folder's own recipe keeps the local base, which helps this machine."""
    import os

    from huggingface_hub import constants

    from pricer.read.serving import Pricer
    from tests.conftest import SMOKE, record, write_raw

    write_raw(
        tmp_path / "data", "Appliances", [record(f"Fridge model {i}", 10.0 + i, words=120) for i in range(30)]
    )
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text(
        "trainer:\n  max_steps: 1\n  limit_val_batches: 1\n  logger: false\n"
        "data:\n  train_size: 8\n  val_size: 4\n  test_size: 4\n  num_proc: 1\n  batch_size: 4\n"
    )
    runs = tmp_path / "runs"
    main(["fit", "--config", SMOKE, "--config", str(overlay), "--model.base_model", str(gguf),
          "--data.source", str(tmp_path / "data"), "--data.cache_dir", str(tmp_path / "cache"),
          "--trainer.default_root_dir", str(runs), "--run_name", "local"])  # fmt: skip
    capsys.readouterr()
    run = runs / "local"
    forbidden = {
        str(gguf.parent),
        str(tmp_path / "data"),
        str(runs),
        str(run),
        constants.HF_HOME,
        str(tmp_path),
    }
    staged = [p for p in (run / "hub").rglob("*") if p.is_file()]
    assert {p.parent.name for p in staged} >= {"model", "dataset"} and len(staged) > 6
    for path in staged:
        data = path.read_bytes()
        for local in forbidden:
            assert local.encode() not in data, f"{path} names {local}"
    published = json.loads((run / "hub" / "model" / "pricer.json").read_text())
    assert published["model"]["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert json.loads((run / "adapter" / "pricer.json").read_text())["model"]["base_model"] == str(gguf)
    # the staged folder, read as on another machine: the base by its Hub id (here a local copy)
    pricer = Pricer.from_adapter(str(run / "hub" / "model"), base_model=str(gguf), device="cpu")
    assert pricer.quote("Fridge model 3", "A fridge.").price > 0
    assert os.path.isabs(str(gguf))
