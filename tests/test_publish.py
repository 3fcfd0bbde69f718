"""The Hub repo folders a run stages, read back as a user would; the push against a recording HfApi."""

import json

import pytest

from pricer import hub
from pricer.cli import main
from pricer.publish import HubPublisher
from tests.conftest import SECRET, RecordingApi


@pytest.fixture
def published(fit_args, tmp_path, monkeypatch):
    overlay = tmp_path / "publish.yaml"
    overlay.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {every_n_train_steps: 2, save_last: true, save_top_k: 1}\n"
        "    - class_path: pricer.report.PriceReport\n"
        "    - class_path: pricer.publish.HubPublisher\n"
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
    assert results == {k: metrics[k] for k in ("mae", "rmsle", "hit_rate", "smape", "median_ae")}
    assert 'Pricer.from_adapter("me/pricer-tiny")' in card.text and (folder / "scatter.png").is_file()
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
    assert again == json.loads((published / "metrics.json").read_text())


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
