"""Every read of a test split is recorded beside it, and reports count the reads before theirs."""

import json

import pyarrow.parquet as pq
import pytest

from pricer.data.test_ledger import earlier_reads, ledger_for, record_read, run_name
from tests.conftest import publishing_fit


def test_each_read_is_appended_and_the_ones_before_it_are_counted(tmp_path):
    ledger = ledger_for(tmp_path / "curated", tmp_path / "cache", "src", "main")
    assert ledger == tmp_path / "curated" / "test_reads.jsonl"
    elsewhere = ledger_for(None, tmp_path / "cache", "me/pricer-data", "main")
    assert elsewhere.parent == tmp_path / "cache" / "test-reads"
    assert elsewhere != ledger_for(None, tmp_path / "cache", "me/pricer-data", "v2")  # another revision
    config = tmp_path / "config.yaml"
    config.write_text("seed_everything: 42\n")
    first = record_read(ledger, "/runs/a", "test", config, "the LLM alone", 100)
    second = record_read(ledger, "/runs/b/evaluations/lite-test", "test", None, "the blend", 50)
    again = record_read(ledger, "/runs/a", "test", config, "the LLM alone", 100)
    assert (first, second) == ({"count": 0, "runs": []}, {"count": 1, "runs": ["/runs/a"]})
    assert again == {"count": 2, "runs": ["/runs/a", "/runs/b/evaluations/lite-test"]}
    reads = earlier_reads(ledger)
    assert [r["items"] for r in reads] == [100, 50, 100] and reads[1]["config_sha256"] is None
    assert len(reads[0]["config_sha256"]) == 64 and reads[0]["time"].endswith("+00:00")
    assert [run_name(r) for r in again["runs"]] == ["a", "b/evaluations/lite-test"]


@pytest.mark.slow
def test_selection_runs_leave_the_test_split_unread_and_every_read_is_counted(tiny_llama, tmp_path, capsys):
    """A fit with --skip_test reads no test item; the first fit that tests says its report is
    the split's first read, and a later `test` names that run as a read before it, in its
    report and in the card."""
    from pricer.cli.main import main

    args, select = publishing_fit(tmp_path, tiny_llama, "select", "--skip_test", "true")
    assert "test: skipped (--skip_test): the test split stays unread" in capsys.readouterr().out
    assert not (select / "metrics.json").exists() and not list((tmp_path / "cache").rglob("test_reads.jsonl"))

    # what a selection is made on: the kept weights' validation reads, one row an item
    (split,) = (tmp_path / "cache").rglob("validation-00000-of-00001.parquet")
    selected = (select / "validation.csv").read_text()
    assert len(selected.splitlines()) == 1 + pq.read_metadata(split).num_rows

    main(["fit", *args, "--run_name", "chosen"])
    chosen = tmp_path / "runs" / "chosen"
    assert (chosen / "validation.csv").read_text() == selected  # the same run, tested or not
    assert json.loads((chosen / "metrics.json").read_text())["test_reads_before"] == {"count": 0, "runs": []}
    assert (
        "This report is the first read of its test split."
        in (chosen / "hub" / "model" / "README.md").read_text()
    )

    capsys.readouterr()
    main(["test", *args, "--model.adapter", str(chosen / "adapter"), "--run_name", "again"])
    assert "this test split had been read 1 time(s) before, by chosen" in capsys.readouterr().out
    report = json.loads((tmp_path / "runs" / "again" / "metrics.json").read_text())
    assert report["test_reads_before"] == {"count": 1, "runs": ["chosen"]}
    (ledger,) = (tmp_path / "cache").rglob("test_reads.jsonl")
    assert [r["run"] for r in earlier_reads(ledger)] == [str(chosen), str(tmp_path / "runs" / "again")]
