"""Ingest as datasets really arrive (issue 11 part 6), on real covid-chestxray images copied
into temp folders: a collection laid out like covid-chestxray but with its image column named
``imagename`` (and the other usual names), bare file names in an ``images/`` folder beside the
CSV or in another folder, a single class folder, and an ``images`` folder that is a link."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cli.main import main as cli_main
from core.ingest import detect_layout, ingest

N_IMAGES = 8


def _rows(covid_dir: Path) -> pd.DataFrame:
    meta = pd.read_csv(covid_dir / "metadata.csv", dtype=str, keep_default_na=False)
    meta = meta[(meta["folder"] == "images") & (meta["modality"] == "X-ray")]
    meta = meta[[(covid_dir / "images" / n).is_file() for n in meta["filename"]]].drop_duplicates("filename")
    return pd.concat([meta[meta["finding"] == "COVID-19"].head(N_IMAGES // 2),
                      meta[meta["finding"] != "COVID-19"].head(N_IMAGES // 2)]).reset_index(drop=True)


def make_collection(covid_dir: Path, root: Path, *, image_column: str = "imagename", keep_folder: bool = False,
                    images_at: Path | None = None) -> pd.DataFrame:
    """``root/metadata.csv`` (the real rows, image column renamed) + the images in
    ``images_at`` (default ``root/images``)."""
    rows = _rows(covid_dir)
    images = images_at or root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name in rows["filename"]:
        shutil.copyfile(covid_dir / "images" / name, images / name)
    table = rows.rename(columns={"filename": image_column})
    if not keep_folder:
        table = table.drop(columns=["folder"])
    root.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "metadata.csv", index=False)
    return rows


def test_auto_reads_an_imagename_collection_as_covid_chestxray_not_class_folders(covid_dir, tmp_path):
    rows = make_collection(covid_dir, tmp_path / "src")
    assert detect_layout(tmp_path / "src") == ("covid-chestxray", tmp_path / "src" / "metadata.csv")
    result = ingest(tmp_path / "src", tmp_path / "out")
    images = result.dataset.images
    assert result.layout == "covid-chestxray"
    assert len(images) == N_IMAGES and len(result.dataset.report) == 0
    # Labels are the findings, not the folder name; patients are the CSV's, not one per image.
    assert "images" not in set(images["label"])
    assert sorted(images["label"]) == sorted(rows["finding"])
    assert set(images["patient_id"]) == set(rows["patientid"])
    assert any("image column 'imagename'" in note for note in result.notes)
    assert result.dataset.manifest["notes"] == result.notes


@pytest.mark.parametrize("column", ["filename", "imagename", "image", "file", "path", "Image Name"])
def test_covid_layout_accepts_the_usual_image_columns_and_says_which(covid_dir, tmp_path, column):
    make_collection(covid_dir, tmp_path / "src", image_column=column)
    result = ingest(tmp_path / "src", tmp_path / "out", layout="covid-chestxray")
    assert len(result.dataset.images) == N_IMAGES
    assert any(f"image column {column!r}" in note for note in result.notes), result.notes


def test_image_csv_finds_bare_names_in_images_next_to_the_csv_and_says_where_it_looked(covid_dir, tmp_path):
    src = tmp_path / "src"
    rows = make_collection(covid_dir, src)
    table = pd.read_csv(src / "metadata.csv", dtype=str)
    table = pd.concat([table, table.head(1).assign(imagename="absent.png")])
    table.to_csv(src / "metadata.csv", index=False)
    result = ingest(src, tmp_path / "out", layout="image-csv", metadata=src / "metadata.csv")
    assert len(result.dataset.images) == N_IMAGES
    assert set(result.dataset.images["filename"]) == set(rows["filename"])
    [note] = [n for n in result.notes if "looked up in" in n]
    assert f"the CSV's folder ({src})" in note and f"the images/ folder next to the CSV ({src / 'images'})" in note
    [missing] = result.dataset.report.to_dict("records")
    assert missing["status"] == "missing_file"
    assert "looked in the CSV's folder, the images/ folder next to the CSV" in missing["reason"]


def test_images_dir_elsewhere_from_the_cli(covid_dir, tmp_path, capsys):
    rows = make_collection(covid_dir, tmp_path / "meta", images_at=tmp_path / "pics")
    code = cli_main(["ingest", str(tmp_path / "meta" / "metadata.csv"), "--out", str(tmp_path / "out"),
                     "--layout", "image-csv", "--images-dir", str(tmp_path / "pics"), "--map", "finding=label"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{N_IMAGES} images" in out and f"--images-dir ({tmp_path / 'pics'})" in out
    from core.ingest import load_dataset

    assert sorted(load_dataset(tmp_path / "out").images["label"]) == sorted(rows["finding"])


def test_a_single_class_folder_is_a_warning_naming_the_probable_layout(covid_dir, tmp_path):
    make_collection(covid_dir, tmp_path / "src")
    result = ingest(tmp_path / "src", tmp_path / "out", layout="class-folders")
    assert set(result.dataset.images["label"]) == {"images"}
    [warning] = [n for n in result.notes if n.startswith("Warning:")]
    assert "single class" in warning and "--layout covid-chestxray" in warning
    from core.datasets import ingest_summary_status

    level, message = ingest_summary_status(result)  # what the Data page shows after Ingest
    assert level == "warning" and warning in message
    (tmp_path / "src" / "metadata.csv").unlink()
    result = ingest(tmp_path / "src", tmp_path / "out2")
    assert result.layout == "class-folders"
    [warning] = [n for n in result.notes if n.startswith("Warning:")]
    assert "'images'" in warning and "--layout image-csv" in warning


def test_a_csv_naming_files_beside_class_folders_without_labels_is_ambiguous(covid_dir, tmp_path):
    src = tmp_path / "src"
    rows = _rows(covid_dir)
    for label in ("A", "B"):
        (src / label).mkdir(parents=True)
    for i, name in enumerate(rows["filename"]):
        shutil.copyfile(covid_dir / "images" / name, src / ("A" if i % 2 else "B") / name)
    rows[["filename", "age"]].to_csv(src / "extra.csv", index=False)
    with pytest.raises(ValueError, match=r"ambiguous layout: extra.csv names the image files.*--layout class-folders --metadata extra.csv"):
        detect_layout(src)


def _linked_collection(covid_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """``src/metadata.csv`` + ``src/images`` -> ``store/xrays`` (a folder outside ``src``)."""
    make_collection(covid_dir, tmp_path / "src", images_at=tmp_path / "store" / "xrays")
    os.symlink(tmp_path / "store" / "xrays", tmp_path / "src" / "images")
    return tmp_path / "src", tmp_path / "store"


def test_an_images_link_inside_the_data_roots_is_followed(covid_dir, tmp_path, monkeypatch):
    src, store = _linked_collection(covid_dir, tmp_path)
    result = ingest(src, tmp_path / "out", data_roots=[store])
    assert result.layout == "covid-chestxray" and len(result.dataset.images) == N_IMAGES
    assert len(result.dataset.report) == 0
    # By default the allowed roots are SCANATLAS_DATA_ROOTS (and the demo cohort).
    monkeypatch.setenv("SCANATLAS_DATA_ROOTS", str(store))
    assert len(ingest(src, tmp_path / "out2").dataset.images) == N_IMAGES


def test_an_images_link_leaving_the_data_roots_is_refused_naming_the_root_that_would_allow_it(
        covid_dir, tmp_path, monkeypatch):
    src, store = _linked_collection(covid_dir, tmp_path)
    monkeypatch.delenv("SCANATLAS_DATA_ROOTS", raising=False)
    dataset = ingest(src, tmp_path / "out", data_roots=[tmp_path / "elsewhere"]).dataset
    assert len(dataset.images) == 0
    report = dataset.report
    assert list(report["status"]) == ["outside_source"] * N_IMAGES
    reason = report["reason"].iloc[0]
    assert f"through the link images -> {store / 'xrays'}" in reason
    assert f"adding {store / 'xrays'} to SCANATLAS_DATA_ROOTS would allow it" in reason


def test_dotdot_stays_refused_even_into_an_allowed_root(covid_dir, tmp_path):
    src = tmp_path / "root" / "src"
    make_collection(covid_dir, src)
    shutil.copyfile(next((src / "images").iterdir()), tmp_path / "root" / "beside.png")
    table = pd.read_csv(src / "metadata.csv", dtype=str)
    table.loc[0, "imagename"] = "../../beside.png"
    table.to_csv(src / "metadata.csv", index=False)
    dataset = ingest(src, tmp_path / "out", data_roots=[tmp_path / "root"]).dataset
    assert len(dataset.images) == N_IMAGES - 1
    # (The file row 0 used to name is now named by no row.)
    assert sorted(dataset.report["status"]) == ["outside_source", "unreferenced_file"]


def test_class_folders_refuse_a_file_link_out_of_the_roots(covid_dir, tmp_path):
    src = tmp_path / "src" / "COVID"
    src.mkdir(parents=True)
    images = sorted((covid_dir / "images").glob("*.png"))[:2]
    shutil.copyfile(images[0], src / "real.png")
    outside = tmp_path / "private" / "other.png"
    outside.parent.mkdir()
    shutil.copyfile(images[1], outside)
    os.symlink(outside, src / "link.png")
    dataset = ingest(tmp_path / "src", tmp_path / "out", layout="class-folders", data_roots=[]).dataset
    assert len(dataset.images) == 1
    assert dataset.report.set_index("source").loc["COVID/link.png", "status"] == "outside_source"
