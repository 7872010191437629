"""Issue 9: ZIP bombs made of many small members, and CSVs in encodings that used to garble."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from core.ingest import ingest
from core.ingest.layouts import read_csv


def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ----------------------------------------------------------------------------- 3. ZIP


def zero_bomb(path: Path, members: int, member_size: int = 1024**2) -> Path:
    zeros = bytes(member_size)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(members):
            archive.writestr(f"scans/{index:04d}.dcm", zeros)
    return path


def test_a_zip_of_many_1mib_zero_members_is_refused_whole_and_nothing_is_written(tmp_path):
    """Each member is exactly 1 MiB, the size the old per-member ratio check skipped."""
    archive = zero_bomb(tmp_path / "upload.zip", members=256)
    assert archive.stat().st_size < 400_000
    before = listing(tmp_path)
    with pytest.raises(ValueError) as caught:
        ingest(archive, tmp_path / "out")
    message = str(caught.value)
    assert "upload.zip" in message and "ratio" in message and "nothing extracted" in message
    assert listing(tmp_path) == before  # not even the output folder


def test_zip_limits_are_configurable(covid_dir, tmp_path):
    from core.ingest import ZipLimits

    real = sorted((covid_dir / "images").glob("*.png"))[:2]
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(real[0], "COVID/a.png")
        zf.write(real[1], "Normal/b.png")
    total = sum(p.stat().st_size for p in real)
    with pytest.raises(ValueError, match="over the limit of"):
        ingest(archive, tmp_path / "refused", zip_limits=ZipLimits(max_total_bytes=total - 1))
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match="members exceeds the limit of 1"):
        ingest(archive, tmp_path / "refused", zip_limits=ZipLimits(max_members=1))
    assert ingest(archive, tmp_path / "ok", zip_limits=ZipLimits(max_total_bytes=total)).n_images == 2
    bomb = zero_bomb(tmp_path / "zeros.zip", members=2, member_size=200_000)
    with pytest.raises(ValueError, match="ratio"):
        ingest(bomb, tmp_path / "refused")
    # A deliberately loose ratio lets the same archive through (its files are then reported).
    dataset = ingest(bomb, tmp_path / "loose", layout="dicom",
                     zip_limits=ZipLimits(max_ratio=10_000)).dataset
    assert set(dataset.report["status"]) == {"not_an_image"}
    with pytest.raises(ValueError, match="max_ratio"):
        ZipLimits(max_ratio=0)


def test_hostile_zip_members_never_land_outside_the_extraction_folder(covid_dir, tmp_path):
    """The extraction folder is OUT/source: '../escape.png' would land in OUT itself."""
    real = sorted((covid_dir / "images").glob("*.png"))[:2]
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(real[0], "COVID/a.png")
        zf.write(real[1], "Normal/b.png")
        zf.writestr("../escape.png", real[0].read_bytes())
        zf.writestr("../../escape2.png", real[0].read_bytes())
        zf.writestr(f"{tmp_path.parent}/absolute-{tmp_path.name}.png", real[0].read_bytes())
        zf.writestr("COVID/../../sneak.png", real[0].read_bytes())
    before = listing(tmp_path)
    out = tmp_path / "out"
    dataset = ingest(archive, out).dataset
    added = listing(tmp_path) - before
    extraction = {"out/source", "out/source/COVID", "out/source/Normal", "out/source/COVID/a.png",
                  "out/source/Normal/b.png"}
    written = {"out", "out/images.parquet", "out/patients.parquet", "out/ingest_report.csv",
               "out/manifest.json", "out/previews", "out/previews/index.parquet"}
    packs = {name for name in added if name.startswith("out/previews/pack-") and name.endswith(".bin")}
    assert not packs  # PNGs: checked by their chunks; their previews come from the first embedding
    assert added == extraction | written
    assert not (tmp_path.parent / f"absolute-{tmp_path.name}.png").exists()
    assert sorted(dataset.images["label"]) == ["COVID", "Normal"]
    refused = dataset.report[dataset.report["status"] == "unsafe_zip_member"]
    assert sorted(refused["path"]) == sorted(["../escape.png", "../../escape2.png",
                                              f"{tmp_path.parent}/absolute-{tmp_path.name}.png",
                                              "COVID/../../sneak.png"])


# ------------------------------------------------------------------------------ 7. CSV

ROWS = [("p1", "a.png", "肺炎", "患者は発熱と咳を訴えた。"), ("p2", "b.png", "正常", "特記事項なし。")]


def csv_text(rows=ROWS) -> str:
    return "patient_id,path,finding,notes\n" + "".join(",".join(r) + "\n" for r in rows)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig", "utf-32"])
def test_csvs_with_a_byte_order_mark_are_read_in_their_encoding(tmp_path, encoding):
    path = tmp_path / "meta.csv"
    raw = csv_text().encode(encoding)
    if encoding == "utf-16-be":
        raw = b"\xfe\xff" + raw
    path.write_bytes(raw)
    frame = read_csv(path)
    assert list(frame.columns) == ["patient_id", "path", "finding", "notes"]
    assert frame["notes"].tolist() == [r[3] for r in ROWS]


def test_a_utf16_image_csv_ingests_instead_of_a_misleading_field_count_error(covid_dir, tmp_path):
    real = sorted((covid_dir / "images").glob("*.png"))[:2]
    root = tmp_path / "study"
    root.mkdir()
    for source, name in zip(real, ("a.png", "b.png"), strict=True):
        (root / name).write_bytes(source.read_bytes())
    (root / "meta.csv").write_bytes(csv_text().encode("utf-16"))
    dataset = ingest(root / "meta.csv", tmp_path / "out", layout="image-csv").dataset
    assert dataset.images["label"].tolist() == ["肺炎", "正常"]
    assert dataset.images["text"].tolist() == [r[3] for r in ROWS]


def test_shift_jis_is_read_correctly_or_refused_never_garbled(tmp_path):
    from core.ingest.layouts import decode_csv_bytes

    long_csv = csv_text(ROWS * 3).encode("shift_jis")
    assert decode_csv_bytes(long_csv, "jp.csv") == csv_text(ROWS * 3)
    short_csv = csv_text(ROWS[:1]).encode("shift_jis")
    try:
        text = decode_csv_bytes(short_csv, "short.csv")
    except ValueError as refusal:
        assert "short.csv" in str(refusal) and "save it as UTF-8" in str(refusal)
    else:
        assert text == csv_text(ROWS[:1])


def test_windows_1252_is_read_and_an_ambiguous_central_european_csv_refused():
    from core.ingest.layouts import decode_csv_bytes

    western = "patient_id,notes\n1,Fièvre élevée 39 °C, né à Montréal, Größe\n"
    assert decode_csv_bytes(western.encode("cp1252"), "w.csv") == western
    polish = "patient_id,notes\n1,Gorączka, kaszel, ból głowy, Łódź\n"
    try:
        assert decode_csv_bytes(polish.encode("cp1250"), "pl.csv") == polish
    except ValueError as refusal:
        assert "pl.csv" in str(refusal) and "ambiguous" in str(refusal)


@pytest.mark.parametrize(
    "raw",
    [b"patient_id,path\np1,a.png\x00\n", csv_text().encode("utf-16-le")],  # NUL; UTF-16, no BOM
)
def test_nul_bytes_are_refused_naming_the_file(tmp_path, raw):
    path = tmp_path / "bad.csv"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=r"bad\.csv: contains NUL bytes"):
        read_csv(path)
    with pytest.raises(ValueError, match=r"bad\.csv"):
        ingest(path, tmp_path / "out", layout="image-csv")


def test_pandas_metadata_written_as_utf8_still_reads(tmp_path):
    pd.DataFrame({"patient_id": ["001"], "notes": ["café"]}).to_csv(tmp_path / "m.csv", index=False)
    frame = read_csv(tmp_path / "m.csv")
    assert frame.to_dict("records") == [{"patient_id": "001", "notes": "café"}]


# ------------------------------------------------------ found by the fuzzer (issue 9 fuzz)


def test_a_csv_naming_an_impossibly_long_path_reports_that_row(covid_dir, tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    (root / "a.png").write_bytes(sorted((covid_dir / "images").glob("*.png"))[0].read_bytes())
    (root / "meta.csv").write_text("patient_id,path\np1,a.png\np2," + "x" * 4000 + ".png\n")
    dataset = ingest(root / "meta.csv", tmp_path / "out", layout="image-csv").dataset
    assert dataset.images["patient_id"].tolist() == ["p1"]
    assert dataset.report["status"].tolist() == ["unreadable_path"]


def test_a_csv_with_a_header_and_no_rows_is_reported(tmp_path):
    (tmp_path / "meta.csv").write_text("patient_id,path\n")
    dataset = ingest(tmp_path / "meta.csv", tmp_path / "out", layout="image-csv").dataset
    assert len(dataset.images) == 0
    assert dataset.report["status"].tolist() == ["empty_csv"]


def test_zip_members_with_long_names_or_bad_crcs_are_refused_one_by_one(covid_dir, tmp_path):
    real = sorted((covid_dir / "images").glob("*.png"))[:3]
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.write(real[0], "COVID/a.png")
        zf.write(real[1], "Normal/b.png")
        zf.writestr("Normal/" + "n" * 300 + ".png", real[2].read_bytes())
    data = bytearray(archive.read_bytes())
    start = data.find(b"Normal/b.png") + len("Normal/b.png") + 100  # inside b.png's stored bytes
    data[start] ^= 0xFF
    archive.write_bytes(bytes(data))
    dataset = ingest(archive, tmp_path / "out").dataset
    assert dataset.images["filename"].tolist() == ["a.png"]
    reasons = dict(zip(dataset.report["path"].str[:12], dataset.report["reason"], strict=True))
    assert "longer than 255 bytes" in reasons["Normal/nnnnn"]
    assert "Bad CRC-32" in reasons["Normal/b.png"]
    assert not (tmp_path / "out" / "source" / "Normal" / "b.png").exists()  # no partial file


def test_a_nested_archive_is_reported_per_member_and_never_unpacked(covid_dir, tmp_path):
    real = sorted((covid_dir / "images").glob("*.png"))[:2]
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.write(real[1], "Normal/hidden.png")
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(real[0], "COVID/a.png")
        zf.write(inner, "more/inner.zip")
        zf.writestr("more/old.tar.gz", b"\x1f\x8b" + bytes(64))
    dataset = ingest(archive, tmp_path / "out").dataset
    assert dataset.images["filename"].tolist() == ["a.png"]
    refused = dataset.report[dataset.report["status"] == "unsafe_zip_member"]
    assert dict(zip(refused["path"], refused["reason"], strict=True)) == {
        "more/inner.zip": "nested archive not unpacked (upload the inner archive on its own)",
        "more/old.tar.gz": "nested archive not unpacked (upload the inner archive on its own)",
    }
    source = tmp_path / "out" / "source"
    assert listing(source) == {"COVID", "COVID/a.png"}  # neither the archive nor its contents
