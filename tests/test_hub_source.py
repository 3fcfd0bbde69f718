"""Raw metadata read through `hf://`: the Hub's exact folder layout, served from disk.

Only the last hop is a double: HfFileSystem is replaced by a file system rooted in a folder
laid out as the Hub serves `datasets/McAuley-Lab/Amazon-Reviews-2023@<commit>/...`, and the
API's `dataset_info` answers which commit a revision names.
"""

import json
from types import SimpleNamespace

import httpx
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from huggingface_hub.errors import RevisionNotFoundError

from pricer import hub_calls as hub
from pricer.data.curate import CurationSpec, curate
from pricer.data.raw import RAW_REPO, RAW_URL, SourceError
from pricer.data.rules import CurationRules
from pricer.hub.cards import dataset_card
from tests.conftest import record, write_raw

OLD = "0" * 39 + "1"
NEW = "a" * 39 + "2"


class HubDouble:
    """The Hub's answers for the raw dataset: commits by revision, files by commit."""

    def __init__(self, root, monkeypatch):
        self.root, self.refs = root, {}
        monkeypatch.setattr(hub, "_fs", lambda: DirFileSystem(path=str(root), fs=LocalFileSystem()))
        monkeypatch.setattr(hub, "_api", lambda: self)

    def commit(self, sha: str, lines: list, branch: str | None = "main") -> None:
        write_raw(self.root / "datasets" / f"{RAW_REPO}@{sha}", "Appliances", lines)
        self.refs[sha] = sha
        if branch:
            self.refs[branch] = sha

    def dataset_info(self, repo_id: str, revision: str):
        assert repo_id == RAW_REPO
        matches = [sha for ref, sha in self.refs.items() if ref == revision or sha.startswith(revision)]
        if not matches:
            url = f"https://huggingface.co/api/datasets/{repo_id}/revision/{revision}"
            response = httpx.Response(404, request=httpx.Request("GET", url))
            raise RevisionNotFoundError(f"404: invalid revision {revision}", response=response)
        return SimpleNamespace(sha=matches[0])


def spec(tokenizer, revision: str = "main") -> CurationSpec:
    return CurationSpec(
        RAW_URL, ["Appliances"], CurationRules(), tokenizer, None, 2, 3, 42, revision=revision
    )


def items(prefix: str, n: int = 12) -> list:
    return [record(f"{prefix} {i}", 10 + i) for i in range(n)]


def titles(curated) -> set[str]:
    import pyarrow.parquet as pq

    return {
        t
        for split in ("train", "validation", "test")
        for t in pq.read_table(curated.split_file(split))["title"].to_pylist()
    }


def test_raw_files_stream_from_the_hub_layout_at_one_commit(tmp_path, monkeypatch, byte_tokenizer):
    double = HubDouble(tmp_path / "hub", monkeypatch)
    double.commit(NEW, items("Item") + ["{broken"])
    curated = curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")
    assert curated.accounting.read == 13 and curated.accounting.kept == 12
    assert curated.accounting.examples["bad_json"][0].startswith(
        f"{RAW_URL}@{NEW}/raw/meta_categories/meta_Appliances.jsonl:13:"
    )
    recorded = json.loads((curated.folder / "curation.json").read_text())
    assert (recorded["revision"], recorded["commit"]) == ("main", NEW)


def test_a_pinned_revision_curates_the_data_of_that_commit_after_main_moved(
    tmp_path, monkeypatch, byte_tokenizer
):
    double = HubDouble(tmp_path / "hub", monkeypatch)
    double.commit(OLD, items("Old"))
    double.commit(NEW, items("New"))  # main has moved on
    latest = curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")
    pinned = curate(spec(byte_tokenizer, revision=OLD[:7]), byte_tokenizer, tmp_path / "cache")
    assert titles(latest) == {f"New {i}" for i in range(12)}
    assert titles(pinned) == {f"Old {i}" for i in range(12)}
    curation = json.loads((pinned.folder / "curation.json").read_text())
    assert curation["commit"] == OLD
    card = str(dataset_card("me/data", curation, pinned.accounting, pinned.accounting.splits))
    assert f"read at commit `{OLD}` (revision `{OLD[:7]}`" in card
    assert f"data.revision: {OLD}" in card


def test_an_unknown_revision_is_named(tmp_path, monkeypatch, byte_tokenizer):
    HubDouble(tmp_path / "hub", monkeypatch).commit(NEW, items("Item"))
    with pytest.raises(
        SourceError, match=f"data.revision 'v9': {RAW_REPO} has no such branch, tag or commit"
    ):
        curate(spec(byte_tokenizer, revision="v9"), byte_tokenizer, tmp_path / "cache")


def test_no_hub_says_so_and_what_to_do(tmp_path, byte_tokenizer):
    # HF_HUB_OFFLINE=1 in the tests: the real HfFileSystem cannot reach the Hub.
    with pytest.raises(SourceError, match="cannot reach the Hub to read hf://datasets/McAuley-Lab"):
        curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")


def test_offline_a_hub_source_reuses_its_newest_curation_with_a_note(
    tmp_path, monkeypatch, byte_tokenizer, capsys
):
    double = HubDouble(tmp_path / "hub", monkeypatch)
    double.commit(NEW, items("Item"))
    online = curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")
    monkeypatch.undo()  # offline again: HF_HUB_OFFLINE=1 in the tests
    offline = curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")
    assert offline.cached and offline.folder == online.folder
    assert (
        "cannot reach the Hub to see McAuley-Lab/Amazon-Reviews-2023 at revision 'main'"
        in capsys.readouterr().out
    )


def test_offline_a_pinned_commit_reuses_only_the_curation_of_that_commit(
    tmp_path, monkeypatch, byte_tokenizer
):
    double = HubDouble(tmp_path / "hub", monkeypatch)
    double.commit(OLD, items("Old"))
    pinned = curate(spec(byte_tokenizer, revision=OLD), byte_tokenizer, tmp_path / "cache")
    double.commit(NEW, items("New"))
    curate(spec(byte_tokenizer), byte_tokenizer, tmp_path / "cache")  # newer, of main
    monkeypatch.undo()
    again = curate(spec(byte_tokenizer, revision=OLD), byte_tokenizer, tmp_path / "cache")
    assert again.cached and again.folder == pinned.folder
