"""Raw metadata read through `hf://`: the Hub's exact folder layout, served from disk.

Only the last hop is a double: HfFileSystem is replaced by a file system rooted in a folder
laid out as the Hub's `datasets/McAuley-Lab/Amazon-Reviews-2023` repo.
"""

import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from pricer import hub
from pricer.curate import CurationSpec, curate
from pricer.raw import RAW_URL, SourceError
from pricer.rules import CurationRules
from tests.conftest import record, write_raw


def spec(tokenizer) -> CurationSpec:
    return CurationSpec(RAW_URL, ["Appliances"], CurationRules(), tokenizer, None, 2, 3, 42)


def test_raw_files_stream_from_the_hub_layout(tmp_path, monkeypatch, byte_tokenizer):
    repo = tmp_path / "hub" / "datasets" / "McAuley-Lab" / "Amazon-Reviews-2023"
    write_raw(repo, "Appliances", [record(f"Item {i}", 10 + i) for i in range(12)] + ["{broken"])
    monkeypatch.setattr(hub, "_fs", lambda: DirFileSystem(path=str(tmp_path / "hub"), fs=LocalFileSystem()))
    curated = curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")
    assert curated.accounting.read == 13 and curated.accounting.kept == 12
    assert curated.accounting.examples["bad_json"][0].startswith(
        f"{RAW_URL}/raw/meta_categories/meta_Appliances.jsonl:13:"
    )


def test_no_hub_says_so_and_what_to_do(tmp_path, byte_tokenizer):
    # HF_HUB_OFFLINE=1 in the tests: the real HfFileSystem cannot reach the Hub.
    with pytest.raises(SourceError, match="cannot reach the Hub to read hf://datasets/McAuley-Lab"):
        curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")


def test_offline_a_hub_source_reuses_its_newest_curation_with_a_note(
    tmp_path, monkeypatch, byte_tokenizer, capsys
):
    repo = tmp_path / "hub" / "datasets" / "McAuley-Lab" / "Amazon-Reviews-2023"
    write_raw(repo, "Appliances", [record(f"Item {i}", 10 + i) for i in range(12)])
    monkeypatch.setattr(hub, "_fs", lambda: DirFileSystem(path=str(tmp_path / "hub"), fs=LocalFileSystem()))
    online = curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")
    monkeypatch.undo()  # offline again: HF_HUB_OFFLINE=1 in the tests
    offline = curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")
    assert offline.cached and offline.folder == online.folder
    assert "cannot reach the Hub to see whether hf://datasets/McAuley-Lab" in capsys.readouterr().out
