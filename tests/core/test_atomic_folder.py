"""core.atomic.atomic_folder: a folder appears whole or not at all; a replaced one stays whole
until the new one is complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import atomic
from core.atomic import atomic_folder, atomic_write_text


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".tmp-")]


def test_new_folder_appears_only_when_complete(tmp_path: Path):
    final = tmp_path / "data"
    with atomic_folder(final) as folder:
        atomic_write_text(folder / "a.txt", "a")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "a" and leftovers(tmp_path) == []
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "broken") as folder:
        atomic_write_text(folder / "a.txt", "a")
        raise RuntimeError("half way")
    assert not (tmp_path / "broken").exists() and leftovers(tmp_path) == []


def test_replacing_keeps_named_files_and_survives_a_failed_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    final = tmp_path / "data"
    with atomic_folder(final) as folder:
        atomic_write_text(folder / "owner.json", "{}")
        atomic_write_text(folder / "old.txt", "old")
    with atomic_folder(final, keep=("owner.json",)) as folder:
        atomic_write_text(folder / "new.txt", "new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt", "owner.json"]

    def fail_at_rename(stage: str, path: Path) -> None:
        if stage == "synced" and path.is_dir():  # the folder's rename, not its files' writes
            raise OSError("disk gone")

    monkeypatch.setattr(atomic, "fault_hook", fail_at_rename)
    with pytest.raises(OSError), atomic_folder(final) as folder:
        atomic_write_text(folder / "newer.txt", "x")
    monkeypatch.setattr(atomic, "fault_hook", None)
    assert sorted(p.name for p in final.iterdir()) == ["new.txt", "owner.json"]  # the old folder, back whole
    assert leftovers(tmp_path) == []
