"""``scanatlas serve``'s web app: FastAPI over one saved classifier study (:mod:`core.serving`).

Endpoints: ``GET /health``, ``GET /models``, ``POST /predict`` (multipart, one or more
DICOM/PNG/JPEG files), OpenAPI docs at ``/docs`` and the schema at ``/openapi.json``.

Everything a client sends is hostile. The request body is limited before it is read (a
``Content-Length`` over the limit is refused at once, a chunked body as soon as it passes the
limit), files are spooled to a private temporary folder under names the server chooses, decoded
with the same pixel budget as ingest, and removed after the answer. A file that is not an image
(415), too large to decode (413) or not decodable (422) is refused with its name and the reason;
the server goes on serving. No response carries a stack trace or a server path: unexpected
errors answer 500 with an id that the server log has the details under.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.serving import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_REQUEST_BYTES,
    ServedModel,
    UnusableFileError,
)

log = logging.getLogger("scanatlas.api")
COPY_CHUNK = 1024**2
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


# ------------------------------------------------------------------------- schema


class Health(BaseModel):
    status: str = Field(description="'ok' when the model is loaded and the server answers")
    model: str = Field(description="the run key of the served classifier study")


class Interval(BaseModel):
    value: float | None
    ci_low: float | None = Field(description="2.5th percentile of the patient bootstrap")
    ci_high: float | None = Field(description="97.5th percentile of the patient bootstrap")


class ClassMetrics(BaseModel):
    class_name: str = Field(description="class (or 'mean', the macro average)")
    n_rows: int | None
    support: float | None
    auc: Interval
    accuracy: Interval
    precision: Interval
    recall: Interval
    f1: Interval


class CrossValidation(BaseModel):
    n_splits: int | None
    n_bootstrap: int | None
    interval: str
    metrics: list[ClassMetrics]


class EncoderInfo(BaseModel):
    name: str
    version: str
    dim: int
    device: str


class TargetInfo(BaseModel):
    column: str | list[str] | None
    positive: str | list[str] | None
    level: str | None


class InputsInfo(BaseModel):
    image: bool
    filled_with_training_mean: list[str] = Field(
        description="feature blocks a request cannot carry, set to their training mean")


class TrainingData(BaseModel):
    dataset: str
    n_rows: int
    n_patients: int | None
    class_counts: dict[str, int]


class ModelInfo(BaseModel):
    key: str
    name: str
    created: str
    model: str
    kind: str = Field(description="binary, multiclass or multilabel")
    encoder: EncoderInfo
    target: TargetInfo
    classes: list[str]
    thresholds: dict[str, float | None] = Field(
        description="decision threshold per class chosen on validation folds (null: highest probability)")
    inputs: InputsInfo
    training_data: TrainingData
    cross_validation: CrossValidation


class SimilarCase(BaseModel):
    rank: int
    case: str = Field(description="de-identified pseudonym of the training image (or patient)")
    patient: str = Field(description="de-identified pseudonym of its patient")
    label: str | list[str] | None
    distance: float = Field(description="cosine distance between encoder vectors")


class ImageInfo(BaseModel):
    rows: int
    columns: int
    n_frames: int


class FilePrediction(BaseModel):
    file: str
    probabilities: dict[str, float]
    decision: str | dict[str, int] | None = Field(
        description="the class at the saved threshold (multi-label: 1/0 per label)")
    similar_cases: list[SimilarCase]
    image: ImageInfo
    notes: list[str]


class PredictResponse(BaseModel):
    model: str
    predictions: list[FilePrediction]


class FileProblem(BaseModel):
    file: str
    status: str
    reason: str


class Problem(BaseModel):
    error: str
    message: str
    files: list[FileProblem] = []


def _problem(status: int, error: str, message: str, files: list[dict] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "message": message, "files": files or []})


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "a malformed multipart body"},
    413: {"model": Problem, "description": "request body over the limit, or an image over the pixel budget"},
    415: {"model": Problem, "description": "a file that is not a DICOM, PNG or JPEG image"},
    422: {"model": Problem, "description": "a file that cannot be decoded, no file, or too many files"},
}


# ------------------------------------------------------------------------- request limit


class RequestTooLarge(StarletteHTTPException):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` before reading them whole."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _message(self) -> str:
        return f"the request body is over the limit of {self.max_bytes:,} bytes"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await _problem(413, "request_too_large", self._message())(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestTooLarge(413, self._message())
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except RequestTooLarge:
            if not started:
                await _problem(413, "request_too_large", self._message())(scope, receive, send)


# ------------------------------------------------------------------------- the app


def client_name(name: str | None, index: int) -> str:
    """The file name a client gave, safe to echo: base name only, no control or bidi
    characters, at most 200 characters; ``file N`` when it gave none."""
    text = _CONTROL.sub("", str(name or "")).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return text[:200] or f"file {index + 1}"


def create_app(model: ServedModel, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
               max_files: int = DEFAULT_MAX_FILES) -> FastAPI:
    """The FastAPI app serving ``model``. ``max_request_bytes`` bounds one request body,
    ``max_files`` the files in one ``/predict``."""
    if max_request_bytes < 1 or max_files < 1:
        raise ValueError(f"max_request_bytes={max_request_bytes} and max_files={max_files} must be >= 1")
    app = FastAPI(
        title="ScanAtlas prediction API",
        version="1",
        description=(f"Predictions of the saved classifier study `{model.key}` for DICOM, PNG and JPEG "
                     "files, decoded and embedded exactly as in training. Not a diagnosis."),
    )
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    described = model.describe()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(error.status_code, "http_error")
        return _problem(error.status_code, code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        parts = []
        for item in error.errors()[:10]:
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            parts.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
        return _problem(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.error("unexpected error %s", error_id, exc_info=error)
        return _problem(500, "internal_error", f"the server could not answer (error id {error_id}; "
                        "the server log has the details)")

    @app.get("/health", response_model=Health, summary="Is the server up and the model loaded?")
    def health() -> dict:
        return {"status": "ok", "model": model.key}

    @app.get("/models", response_model=list[ModelInfo], summary="The served classifier")
    def models() -> list[dict]:
        info = dict(described)
        cv = dict(info["cross_validation"])
        cv["metrics"] = [{**{k: v for k, v in m.items() if k != "class"}, "class_name": m["class"]} for m in cv["metrics"]]
        info["cross_validation"] = cv
        return [info]

    def predict(files: list[UploadFile]) -> Any:
        folder = Path(tempfile.mkdtemp(prefix="scanatlas-predict-"))
        try:
            staged = []
            for index, upload in enumerate(files):
                target = folder / f"upload-{index}"
                with open(target, "wb") as sink:
                    shutil.copyfileobj(upload.file, sink, COPY_CHUNK)
                staged.append((client_name(upload.filename, index), target))
            try:
                predictions = model.predict_files(staged)
            except UnusableFileError as error:
                problems = [error, *getattr(error, "others", [])]
                listed = [{"file": p.file, "status": p.status, "reason": p.reason} for p in problems]
                return _problem(error.http_status, error.status, f"{error.file}: {error.reason}", listed)
            return {"model": model.key, "predictions": [p.as_dict() for p in predictions]}
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # The annotation is set here, not written in the signature, because it holds max_files (a
    # local), which string annotations could not resolve.
    predict.__annotations__["files"] = Annotated[
        list[UploadFile], File(description="one or more DICOM, PNG or JPEG files", min_length=1, max_length=max_files)]
    app.post("/predict", response_model=PredictResponse, responses=ERRORS,
             summary="Class probabilities, decision and similar training cases per file")(predict)

    return app


__all__ = ["BodyLimit", "client_name", "create_app"]
