"""Folders written in full, then moved into place: a reader sees the old folder or the new one,
never half of one."""

import os

import pytest

from pricer.files import place_folder, replace_folder


def folder_with(path, text: str):
    path.mkdir(parents=True)
    (path / "file.txt").write_text(text)
    return path


def test_replace_folder_puts_the_new_one_over_the_old(tmp_path):
    final = folder_with(tmp_path / "adapter", "old")
    replace_folder(folder_with(tmp_path / ".adapter.partial", "new"), final)
    assert (final / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # nothing left beside it


def test_place_folder_places_once_and_the_first_stays(tmp_path):
    final = tmp_path / "cache" / "entry"
    assert place_folder(folder_with(tmp_path / "one.tmp", "first"), final)
    assert not place_folder(folder_with(tmp_path / "two.tmp", "second"), final)
    assert (final / "file.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # the second one is removed


def test_place_folder_when_another_process_places_it_in_between(tmp_path, monkeypatch):
    final = tmp_path / "entry"
    real = os.replace

    def raced(new, target):  # the other process's rename lands first
        folder_with(final, "theirs")
        return real(new, target)

    monkeypatch.setattr(os, "replace", raced)
    assert not place_folder(folder_with(tmp_path / "mine.tmp", "mine"), final)
    assert (final / "file.txt").read_text() == "theirs"
    assert not (tmp_path / "mine.tmp").exists()


def test_place_folder_lets_other_errors_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        place_folder(tmp_path / "never-written", tmp_path / "entry")
