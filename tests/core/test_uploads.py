"""core.uploads and the dataset claims in core.datasets: per-user staging, limits checked before
writing, staging once per upload set, clean-up inside the user's own area only, and datasets
that are never replaced without a confirmation (the demo never)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from core.auth import AccessStore, User
from core.datasets import (
    DEMO_NAME,
    DatasetExistsError,
    claim_dataset,
    dataset_counts,
    dataset_owner,
    ingest_summary_status,
    list_datasets,
    validate_dataset_name,
)
from core.ingest import ingest
from core.roots import OutsideRootsError, user_staging_root
from core.uploads import (
    METADATA_NAME,
    Upload,
    UploadLimits,
    UploadRejected,
    ingest_server_source,
    ingest_staged,
    metadata_preview,
    safe_file_name,
    stage_uploads,
    upload_limits,
    upload_set_key,
)


def person(name: str, role: str = "admin") -> User:
    return User(id=name, email=f"{name}@example.org", name=name, role=role, source="table")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCANATLAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCANATLAS_DATA_ROOTS", raising=False)
    for name in ("SCANATLAS_MAX_UPLOAD_FILES", "SCANATLAS_MAX_UPLOAD_BYTES"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def scans(demo_dir: Path) -> list[Upload]:
    """Four real DICOM slices of two patients, as a browser would send them."""
    paths = sorted(demo_dir.rglob("*.dcm"))[:4]
    return [Upload(f"{p.parent.name}_{p.name}", p.read_bytes()) for p in paths]


def files_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} if root.exists() else {}


@pytest.mark.parametrize("name", ["", " ", ".", "..", "../x", "a/b", "a\\b", ".git", "-rf", "x" * 65, "naïve", "a b"])
def test_bad_dataset_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        validate_dataset_name(name)


def test_good_dataset_names_pass() -> None:
    assert validate_dataset_name(" covid-xray_2020.v2 ") == "covid-xray_2020.v2"


@pytest.mark.parametrize("name", ["..", ".", "../../etc"])
def test_stage_refuses_a_path_as_name_before_writing(cache: Path, scans: list[Upload], name: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        stage_uploads("ann", name, scans)
    assert not cache.exists()


def test_two_users_with_one_dataset_name_get_separate_folders(cache: Path, scans: list[Upload]) -> None:
    ann = stage_uploads("ann", "study", scans[:2])
    bob = stage_uploads("bob", "study", scans[2:])
    assert ann.root.is_relative_to(user_staging_root("ann")) and bob.root.is_relative_to(user_staging_root("bob"))
    assert sorted(p.name for p in ann.source.iterdir()) == sorted(u.name for u in scans[:2])
    assert sorted(p.name for p in bob.source.iterdir()) == sorted(u.name for u in scans[2:])


def test_the_same_upload_set_is_written_once(cache: Path, scans: list[Upload]) -> None:
    first = stage_uploads("ann", "study", scans)
    written = files_under(first.root)
    again = stage_uploads("ann", "study", list(reversed(scans)))
    assert again.reused and not first.reused
    assert again.key == first.key and files_under(first.root) == written
    assert upload_set_key(scans) != upload_set_key(scans[:3])
    assert upload_set_key(scans) != upload_set_key([Upload(scans[0].name, b"x" + bytes(scans[0].data)), *scans[1:]])


def test_a_new_upload_set_replaces_the_users_unused_older_one(cache: Path, scans: list[Upload]) -> None:
    other_user = stage_uploads("bob", "study", scans)
    old = stage_uploads("ann", "study", scans[:2])
    new = stage_uploads("ann", "study", scans[2:])
    assert not old.root.exists() and new.root.exists() and other_user.root.exists()


def test_an_upload_set_a_dataset_reads_from_is_kept(cache: Path, scans: list[Upload]) -> None:
    used = stage_uploads("ann", "study", scans)
    ingest_staged(used, "study", user=person("ann"), layout="dicom")
    stage_uploads("ann", "study", scans[:1])
    assert used.root.exists()  # the dataset's images still live there


def test_limits_are_checked_before_anything_is_written(cache: Path, scans: list[Upload]) -> None:
    with pytest.raises(UploadRejected, match="over the limit of 3 files"):
        stage_uploads("ann", "study", scans, limits=UploadLimits(max_files=3, max_bytes=10**9))
    size = sum(u.size for u in scans)
    with pytest.raises(UploadRejected, match="MiB"):
        stage_uploads("ann", "study", scans, limits=UploadLimits(max_files=10, max_bytes=size - 1))
    with pytest.raises(UploadRejected, match="no scan files"):
        stage_uploads("ann", "study", [])
    assert not cache.exists()


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert upload_limits() == UploadLimits(max_files=20_000, max_bytes=2 * 1024**3)
    monkeypatch.setenv("SCANATLAS_MAX_UPLOAD_FILES", "5")
    monkeypatch.setenv("SCANATLAS_MAX_UPLOAD_BYTES", "1024")
    assert upload_limits() == UploadLimits(max_files=5, max_bytes=1024)
    monkeypatch.setenv("SCANATLAS_MAX_UPLOAD_BYTES", "lots")
    with pytest.raises(ValueError, match="SCANATLAS_MAX_UPLOAD_BYTES"):
        upload_limits()


@pytest.mark.parametrize(("sent", "stored"), [
    ("scan.dcm", "scan.dcm"),
    ("../../etc/x.dcm", "x.dcm"),
    ("C:\\Users\\ann\\x.png", "x.png"),
    ("..hidden.dcm", "hidden.dcm"),
    ("a\u202egnp.dcm", "agnp.dcm"),
    ("we$ird;name.JPG", "we_ird_name.JPG"),
])
def test_file_names_from_the_browser_are_made_safe(sent: str, stored: str) -> None:
    assert safe_file_name(sent) == (stored, "")


@pytest.mark.parametrize("sent", ["..", "", "/", "notes.txt", "run.sh", "noext"])
def test_unusable_file_names_are_refused_with_a_reason(sent: str) -> None:
    stored, reason = safe_file_name(sent)
    assert stored is None and reason


def test_refused_and_renamed_files_are_reported_and_the_rest_staged(cache: Path, scans: list[Upload]) -> None:
    sent = [scans[0], Upload("notes.txt", b"hello"), Upload(scans[0].name, scans[1].data), Upload("..", b"x")]
    staged = stage_uploads("ann", "study", sent)
    assert [name for name, _ in staged.refused] == ["notes.txt", ".."]
    assert staged.renamed == [(scans[0].name, scans[0].name.replace(".dcm", "-2.dcm"))]
    assert sorted(p.name for p in staged.source.iterdir()) == sorted([scans[0].name, staged.renamed[0][1]])


def test_a_zip_is_the_source_when_uploaded_alone_and_refused_among_others(cache: Path, scans: list[Upload]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for upload in scans:
            archive.writestr(f"P/{upload.name}", bytes(upload.data))
    alone = stage_uploads("ann", "zipped", [Upload("study.zip", buffer.getvalue())],
                          metadata=Upload("m.csv", b"patient_id,age\nDEMO-001,40\n"))
    assert alone.source.name == "study.zip" and alone.source.is_file()
    assert alone.metadata is not None and alone.metadata.name == METADATA_NAME
    mixed = stage_uploads("ann", "mixed", [scans[0], Upload("study.zip", buffer.getvalue())])
    assert mixed.refused == [("study.zip", "a ZIP archive must be uploaded on its own")]


def test_ingest_staged_makes_a_dataset_owned_by_the_user(cache: Path, scans: list[Upload]) -> None:
    staged = stage_uploads("ann", "study", scans)
    result = ingest_staged(staged, "study", user=person("ann"), layout="dicom")
    assert result.n_images == 4 and "study" in list_datasets()
    assert dataset_owner("study") == "ann"
    level, message = ingest_summary_status(result)
    assert level == "success" and "Ingested 4 images from 1 patients as **study**" in message


def test_another_users_staging_cannot_be_ingested(cache: Path, scans: list[Upload]) -> None:
    staged = stage_uploads("ann", "study", scans)
    with pytest.raises(OutsideRootsError):
        ingest_staged(staged, "bobs", user=person("bob"))
    assert "bobs" not in list_datasets()


def test_a_dataset_is_never_replaced_without_confirmation_and_only_admins_ingest(cache: Path, scans: list[Upload]) -> None:
    ingest_staged(stage_uploads("ann", "study", scans[:2]), "study", user=person("ann"), layout="dicom")
    bob = stage_uploads("bob", "study", scans)
    for role in ("viewer", "labeler"):
        with pytest.raises(PermissionError, match="not allowed to ingest"):
            ingest_staged(bob, "study", user=person("bob", role), replace=True, layout="dicom")
    again = stage_uploads("ann", "study", scans)
    with pytest.raises(DatasetExistsError, match="confirm"):
        ingest_staged(again, "study", user=person("ann"), layout="dicom")
    assert ingest_staged(again, "study", user=person("ann"), replace=True, layout="dicom").n_images == 4
    # Another admin may replace it too, with the confirmation; it stays the owner's dataset.
    admin = stage_uploads("admin", "study", scans[:1])
    assert ingest_staged(admin, "study", user=person("admin"), replace=True, layout="dicom").n_images == 1
    assert dataset_owner("study") == "ann"
    events = AccessStore().events(action="dataset.")
    assert events["user_id"].tolist() == ["admin", "ann", "ann"]  # newest first, one row per ingest
    assert events["detail"].iloc[0] == "1 images from an upload (replaced)"


def test_server_folders_need_the_server_folders_permission(cache: Path, demo_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCANATLAS_DATA_ROOTS", str(demo_dir))
    with pytest.raises(PermissionError, match="read folders on the server"):
        ingest_server_source(demo_dir, "server", user=person("bob", "labeler"))
    assert "server" not in list_datasets()


def test_the_demo_is_never_replaced_not_even_by_an_admin(cache: Path, scans: list[Upload]) -> None:
    staged = stage_uploads("admin", DEMO_NAME, scans)
    with pytest.raises(PermissionError, match="never replaced"):
        ingest_staged(staged, DEMO_NAME, user=person("admin"), replace=True)
    assert not (cache / "datasets" / DEMO_NAME).exists()


def test_a_name_claimed_by_a_racing_session_is_not_taken_twice(cache: Path) -> None:
    path, created = claim_dataset("race", user_id="ann", is_admin=False)
    assert created and json.loads((path / "owner.json").read_text())["user_id"] == "ann"
    with pytest.raises(PermissionError):
        claim_dataset("race", user_id="bob", is_admin=False)
    path2, created2 = claim_dataset("race", user_id="ann", is_admin=False, replace=True)
    assert path2 == path and not created2


def test_a_failed_first_ingest_releases_the_name(cache: Path, scans: list[Upload]) -> None:
    staged = stage_uploads("ann", "study", scans)
    with pytest.raises(ValueError):
        ingest_staged(staged, "study", user=person("ann"), layout="no-such-layout")
    assert not (cache / "datasets" / "study").exists()
    assert staged.root.exists()


def test_server_sources_must_be_inside_the_roots(cache: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OutsideRootsError, match="SCANATLAS_DATA_ROOTS"):
        ingest_server_source(demo_dir, "server", user=person("ann"))
    monkeypatch.setenv("SCANATLAS_DATA_ROOTS", str(demo_dir))
    with pytest.raises(OutsideRootsError):
        ingest_server_source(demo_dir, "server", user=person("ann"), metadata="/etc/passwd")
    result = ingest_server_source(demo_dir, "server", user=person("ann"))
    assert result.n_images == 64 and dataset_owner("server") == "ann"
    counts = dataset_counts(result.dataset)
    assert (counts.n_images, counts.n_patients, counts.n_not_ingested) == (64, 16, 0)


def test_metadata_preview_reads_only_allowed_text_csvs(tmp_path: Path) -> None:
    (tmp_path / "meta.csv").write_text("Patient ID,Age,Finding\np1,40,COVID-19\np2,51,normal\n")
    (tmp_path / "binary.csv").write_bytes(b"\x00\x01\x02PK")
    preview = metadata_preview(tmp_path / "meta.csv", [tmp_path])
    assert preview.rows["Patient ID"].tolist() == ["p1", "p2"]
    assert preview.guessed["Patient ID"] == "patient_id"
    with pytest.raises(ValueError, match="binary.csv: not a text CSV"):
        metadata_preview(tmp_path / "binary.csv", [tmp_path])
    with pytest.raises(OutsideRootsError):
        metadata_preview("/etc/passwd", [tmp_path])
    with pytest.raises(FileNotFoundError):
        metadata_preview(tmp_path / "missing.csv", [tmp_path])


def test_summary_status_warns_about_refused_files(tmp_path: Path, demo_dir: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for path in sorted(demo_dir.rglob("*.dcm"))[:2]:
        (source / path.name).write_bytes(path.read_bytes())
    (source / "broken.dcm").write_bytes(b"DICM not really")
    level, message = ingest_summary_status(ingest(source, tmp_path / "out", layout="dicom"))
    assert level == "warning" and "1 files or rows not ingested" in message


def test_a_server_folder_with_links_out_of_the_roots_is_refused(cache: Path, tmp_path: Path, demo_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pacs"
    (root / "P1").mkdir(parents=True)
    first = sorted(demo_dir.rglob("*.dcm"))[0]
    (root / "P1" / "a.dcm").write_bytes(first.read_bytes())
    (root / "P1" / "b.dcm").symlink_to(sorted(demo_dir.rglob("*.dcm"))[1])  # a real scan, outside the root
    monkeypatch.setenv("SCANATLAS_DATA_ROOTS", str(root))
    with pytest.raises(OutsideRootsError, match="links to files outside"):
        ingest_server_source(root, "linked", user=person("ann"), layout="dicom")
    assert "linked" not in list_datasets()
    (root / "P1" / "b.dcm").unlink()
    (root / "P1" / "c.dcm").symlink_to(root / "P1" / "a.dcm")  # a link inside the root is fine
    assert ingest_server_source(root, "linked", user=person("ann"), layout="dicom").n_images == 1
