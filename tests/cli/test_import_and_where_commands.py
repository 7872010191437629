"""``scanatlas import-embeddings`` and ``--where`` on the commands that take a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli.main import main

N, DIM = 60, 8


@pytest.fixture(scope="module")
def vectors_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("import-cli")
    ids = [f"scan-{i:03d}" for i in range(N)]
    labels = np.array(["a", "b"] * (N // 2))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32) + (labels == "b")[:, None] * 2.0  # separable
    pq.write_table(pa.table({"image_id": ids, "embedding": pa.array(list(vectors), type=pa.list_(pa.float32()))}),
                   folder / "vectors.parquet")
    pd.DataFrame({"image_id": ids, "patient": [f"p{i}" for i in range(N)], "sex": ["M", "F"] * (N // 2),
                  "age": np.arange(N) + 20, "diagnosis": labels, "view": ["PA", "AP", "L"] * (N // 3)}
                 ).to_csv(folder / "metadata.csv", index=False)
    return folder


def test_import_then_classify_and_embed_with_a_filter(vectors_files: Path, cache_env: Path, tmp_path: Path, capsys):
    out = tmp_path / "imported"
    code = main(["import-embeddings", str(vectors_files / "vectors.parquet"), "--metadata", str(vectors_files / "metadata.csv"),
                 "--out", str(out), "--encoder", "cxr-test"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"Imported {N} vectors of dimension {DIM} as encoder 'cxr-test'" in printed
    assert (out / "embeddings" / "cxr-test.npy").is_file()

    assert main(["embed", str(out), "--encoder", "cxr-test", "--where", "view in [PA, AP]"]) == 0
    printed = capsys.readouterr().out
    assert f"Filter view in [AP, PA]: 40 of {N} images" in printed and "images:   40" in printed

    assert main(["classify", str(out), "--encoder", "cxr-test", "--positive", "b", "--no-text", "--metadata", "",
                 "--splits", "3", "--bootstrap", "20", "--where", "view in [PA, AP]", "--where", "age >= 25",
                 "--out", str(tmp_path / "classified")]) == 0
    printed = capsys.readouterr().out
    assert "Filter age >= 25; view in [AP, PA]: 36 of 60 images" in printed
    per_class = pd.read_csv(tmp_path / "classified" / "per_class.csv")
    assert per_class["auc"].iloc[-1] > 0.8  # the planted separation survives the import


def test_an_invalid_filter_or_import_says_so_and_changes_nothing(vectors_files: Path, tmp_path: Path, capsys):
    out = tmp_path / "imported"
    assert main(["import-embeddings", str(vectors_files / "vectors.parquet"), "--metadata",
                 str(vectors_files / "metadata.csv"), "--out", str(out), "--encoder", "efficientnet-lite0"]) == 2
    assert "built-in 1280-dimensional encoder" in capsys.readouterr().err and not out.exists()
    assert main(["import-embeddings", str(vectors_files / "vectors.parquet"), "--metadata",
                 str(vectors_files / "metadata.csv"), "--out", str(out), "--encoder", "x"]) == 0
    capsys.readouterr()
    for where, message in (("site in [A]", "no column 'site' to filter on"),
                           ("age >= old", "'old' is not a number"),
                           ("view in [Axial]", "leaves no rows")):
        assert main(["embed", str(out), "--encoder", "x", "--where", where]) == 2
        assert message in capsys.readouterr().err
    assert not (out / "embed_failures_x.csv").exists()  # refused before anything ran
