"""The prediction API over HTTP: a real uvicorn server (``scanatlas serve``) on 127.0.0.1
serving a real efficientnet-lite0 study of covid-chestxray X-rays, called with real PNG, JPEG
and DICOM files. Predictions equal what the study's own final model gives its training rows;
bad files and oversized requests get clear 4xx answers and the server keeps serving."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def _post(server, files: list[tuple[str, bytes]], **kwargs) -> httpx.Response:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return httpx.post(f"{server.url}/predict", files=parts, timeout=120, **kwargs)


def _no_leaks(text: str, *secrets: str) -> None:
    assert "Traceback" not in text and 'File "' not in text
    for secret in secrets:
        assert secret not in text, secret


def test_health_and_docs(api_server, served_study):
    key, _ = served_study
    health = httpx.get(f"{api_server.url}/health", timeout=30)
    assert health.status_code == 200 and health.json() == {"status": "ok", "model": key}
    docs = httpx.get(f"{api_server.url}/docs", timeout=30)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = httpx.get(f"{api_server.url}/openapi.json", timeout=30).json()
    assert {"/health", "/models", "/predict"} <= set(schema["paths"])
    assert {"413", "415", "422"} <= set(schema["paths"]["/predict"]["post"]["responses"])


def test_models_describes_the_study(api_server, served_study, covid_subset):
    key, dataset = served_study
    response = httpx.get(f"{api_server.url}/models", timeout=30)
    assert response.status_code == 200
    [info] = response.json()
    assert info["key"] == key and info["kind"] == "binary" and info["model"] == "logreg"
    assert info["encoder"]["name"] == "efficientnet-lite0" and info["encoder"]["version"]
    assert info["classes"] == ["not COVID-19", "COVID-19"]
    assert info["target"] == {"column": "label", "positive": "COVID-19", "level": "image"}
    assert info["training_data"]["n_rows"] == 40
    assert info["training_data"]["class_counts"] == {"not COVID-19": 20, "COVID-19": 20}
    assert info["inputs"]["filled_with_training_mean"] == []
    mean = next(m for m in info["cross_validation"]["metrics"] if m["class_name"] == "mean")
    auc = mean["auc"]
    assert 0.5 < auc["value"] <= 1 and auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    assert 0 < info["thresholds"]["COVID-19"] < 1
    # No server path, no patient id, no file name of the training data.
    _no_leaks(response.text, str(covid_subset), str(dataset.root),
              *(f'"{v}"' for v in dataset.images["patient_id"].astype(str)), *dataset.images["filename"].astype(str))


def test_predictions_equal_the_studys_own_model(api_server, served_study):
    """Three training images sent over HTTP get the probabilities that the saved final model
    gives their rows of the study's feature matrix, and are their own nearest case."""
    key, dataset = served_study
    from core.classify.runs import load_study
    from core.deid import deployment_salt, pseudonym
    from core.runs import RunStore

    study = load_study(key, store=RunStore(Path(dataset.root).parents[1] / "runs"))
    table = study.table.reset_index(drop=True)
    salt = deployment_salt(Path(dataset.root).parents[1] / "deid.salt")
    picks = [0, 21, 39]
    files = [(str(table.loc[i, "filename"]), Path(table.loc[i, "path"]).read_bytes()) for i in picks]
    response = _post(api_server, files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == key and [p["file"] for p in body["predictions"]] == [f for f, _ in files]
    expected = study.final_model.predict_proba(study.features[picks])
    threshold = float(study.final_model.thresholds[-1])
    for row, prediction, proba in zip(picks, body["predictions"], expected, strict=True):
        got = [prediction["probabilities"][c] for c in ("not COVID-19", "COVID-19")]
        np.testing.assert_allclose(got, proba, atol=2e-4)
        assert prediction["decision"] == ("COVID-19" if proba[1] >= threshold else "not COVID-19")
        similar = prediction["similar_cases"]
        assert [s["rank"] for s in similar] == [1, 2, 3, 4, 5]
        assert similar[0]["distance"] < 1e-4
        assert similar[0]["case"] == pseudonym(str(table.loc[row, "image_id"]), salt, "image_id")
        assert similar[0]["label"] == ("COVID-19" if table.loc[row, "label"] == "COVID-19" else "not COVID-19")
        assert all(s["distance"] <= t["distance"] for s, t in zip(similar, similar[1:], strict=False))
        assert prediction["image"]["rows"] == int(table.loc[row, "rows"])
    _no_leaks(response.text, str(dataset.root), *(f'"{v}"' for v in table["patient_id"].astype(str)),
              *table["image_id"].astype(str))


def test_dicom_and_jpeg_uploads(api_server):
    from pydicom.data import get_testdata_file

    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    jpeg = io.BytesIO()
    Image.fromarray((np.indices((300, 260)).sum(axis=0) % 256).astype(np.uint8)).save(jpeg, "JPEG")
    response = _post(api_server, [("ct.dcm", dicom), ("made.jpg", jpeg.getvalue())])
    assert response.status_code == 200, response.text
    ct, made = response.json()["predictions"]
    assert (ct["image"]["rows"], ct["image"]["columns"]) == (128, 128)
    assert (made["image"]["rows"], made["image"]["columns"]) == (300, 260)
    for prediction in (ct, made):
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-4
        assert len(prediction["similar_cases"]) == 5


def _png_claiming(width: int, height: int) -> bytes:
    """A real 8x8 PNG whose header (with a valid CRC) claims ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])))
    return bytes(data)


def test_bad_files_get_clear_4xx_and_the_server_keeps_serving(api_server, covid_subset):
    good = next((covid_subset / "images").glob("*.png")).read_bytes()
    cases = [
        ([("notes.txt", b"patient notes, not an image")], 415, "not_an_image"),
        ([("empty.png", b"")], 415, "empty_file"),
        ([("cut.png", good[: len(good) // 3])], 422, None),
        ([("bomb.png", _png_claiming(100_000, 100_000))], 413, "too_large"),
        ([("ok.png", good), ("../../etc/passwd\x1b[31m", b"GIF89a broken")], 415, "not_an_image"),
    ]
    for files, status, code in cases:
        response = _post(api_server, files)
        assert response.status_code == status, (files[0][0], response.text)
        body = response.json()
        assert set(body) == {"error", "message", "files"}
        if code:
            assert body["error"] == code
        bad = body["files"][0]["file"]
        assert bad in body["message"] and bad == files[-1][0].replace("../../etc/", "").replace("\x1b", "")
        _no_leaks(response.text, "/tmp", str(covid_subset), "scanatlas-predict")
    assert httpx.get(f"{api_server.url}/health", timeout=30).status_code == 200
    assert _post(api_server, [("ok.png", good)]).status_code == 200


def test_request_size_limit_before_the_body_is_read(api_server, covid_subset):
    big = np.random.default_rng(0).integers(0, 255, 4 * 1024**2, dtype=np.uint8).tobytes()
    declared = _post(api_server, [("big.png", big)])
    assert declared.status_code == 413 and declared.json()["error"] == "request_too_large"

    def chunks():  # no Content-Length: the limit must stop a streamed body too
        boundary = b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"s.png\"\r\n\r\n"
        yield boundary
        for start in range(0, len(big), 64 * 1024):
            yield big[start: start + 64 * 1024]
        yield b"\r\n--x--\r\n"

    streamed = httpx.post(f"{api_server.url}/predict", content=chunks(), timeout=120,
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413, streamed.text
    too_many = _post(api_server, [(f"f{i}.png", b"x") for i in range(17)])
    assert too_many.status_code == 422 and "at most 16" in too_many.json()["message"]
    broken = httpx.post(f"{api_server.url}/predict", content=b"--x\r\nnonsense", timeout=30,
                        headers={"content-type": "multipart/form-data; boundary=x"})
    assert broken.status_code in (400, 422) and broken.json()["error"] in ("http_error", "invalid_request")
    wrong = httpx.post(f"{api_server.url}/predict", json={"files": "x"}, timeout=30)
    assert wrong.status_code == 422 and "files" in wrong.json()["message"]
    assert httpx.get(f"{api_server.url}/nowhere", timeout=30).json()["error"] == "not_found"
    assert httpx.get(f"{api_server.url}/health", timeout=30).status_code == 200


def test_serve_refuses_a_network_address_and_an_unknown_run(served_cache, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setenv("SCANATLAS_CACHE", str(served_cache))
    monkeypatch.delenv("SCANATLAS_ALLOW_ANONYMOUS", raising=False)
    assert main(["serve", "--run", "classifier-study-0123456789abcdef0123", "--host", "0.0.0.0"]) == 2
    assert "SCANATLAS_ALLOW_ANONYMOUS=1" in capsys.readouterr().err
    assert main(["serve", "--run", "classifier-study-0123456789abcdef0123"]) == 2
    assert "runs list --kind classifier-study" in capsys.readouterr().err
    assert main(["serve", "--run", "../../etc"]) == 2
    assert "is not a run key" in capsys.readouterr().err


def test_describe_is_json_without_paths(served_study, served_cache, monkeypatch):
    monkeypatch.setenv("SCANATLAS_CACHE", str(served_cache))
    from core.serving import load_served_model

    key, dataset = served_study
    model = load_served_model(key, device="cpu")
    text = json.dumps(model.describe())
    _no_leaks(text, str(dataset.root), str(served_cache))
