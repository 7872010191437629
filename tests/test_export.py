"""core.export: spreadsheet-safe CSV, raw Parquet, and columns that never leave the app."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from core.export import export_columns, private_columns, to_csv_bytes, to_parquet_bytes


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
        ("\r=1+1", "'\r=1+1"),
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
