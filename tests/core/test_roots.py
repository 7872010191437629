"""core.roots: allowed roots from SCANATLAS_DATA_ROOTS, resolution before the check, and the
one guarded delete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.roots import (
    OutsideRootsError,
    allowed_roots,
    configured_roots,
    remove_tree_inside,
    resolve_inside,
    user_key,
    user_staging_root,
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCANATLAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCANATLAS_DATA_ROOTS", raising=False)
    return tmp_path / "cache"


def test_no_server_folder_is_allowed_by_default(cache: Path) -> None:
    assert configured_roots() == []
    assert allowed_roots() == [(cache / "demo-cohort").resolve()]
    assert allowed_roots("ann") == [(cache / "demo-cohort").resolve(), user_staging_root("ann").resolve()]


def test_configured_roots_are_split_on_pathsep_and_resolved(cache: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    monkeypatch.setenv("SCANATLAS_DATA_ROOTS", f"{tmp_path}/a/../a{os.pathsep}{os.pathsep} {tmp_path}/b")
    assert configured_roots() == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]


def test_users_never_share_a_staging_area(cache: Path) -> None:
    assert user_staging_root("ann") != user_staging_root("bob")
    assert user_key("../../etc") == user_key("../../etc") and "/" not in user_key("../../etc")
    with pytest.raises(ValueError, match="user_id"):
        user_key("  ")


@pytest.mark.parametrize("path", ["/etc", "/etc/passwd", "{root}/../outside", "{root}/link-out", "{root}/link-out/passwd", "", "~"])
def test_resolve_inside_refuses_what_resolves_outside(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link-out").symlink_to("/etc")
    with pytest.raises(OutsideRootsError) as error:
        resolve_inside(path.format(root=root), [root])
    assert str(root.resolve()) in str(error.value)


def test_resolve_inside_accepts_paths_within_a_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "link-in").symlink_to(root)
    assert resolve_inside(f"{root}/sub/../sub", [tmp_path / "other", root]) == (root / "sub").resolve()
    assert resolve_inside(root / "sub" / "link-in", [root]) == root.resolve()
    assert resolve_inside(root / "not-yet", [root]) == (root / "not-yet").resolve()


def test_remove_tree_inside_deletes_only_strictly_below_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    (root / "link").symlink_to(outside)
    for bad in (root, root / "..", root / "a" / ".." / "..", outside, root / "link"):
        with pytest.raises(OutsideRootsError):
            remove_tree_inside(bad, root)
    assert (outside / "keep.txt").is_file() and root.is_dir()
    assert remove_tree_inside(root / "a", root) is True
    assert not (root / "a").exists()
    assert remove_tree_inside(root / "gone", root) is False
