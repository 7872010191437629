"""``scanatlas serve --run KEY``: a prediction API (FastAPI under uvicorn) for a saved
classifier study. See :mod:`api.app` for the endpoints and :mod:`core.serving` for how files
become predictions."""

from __future__ import annotations

import argparse
import os

from core.auth import is_loopback
from core.pixels import DEFAULT_MAX_PIXELS
from core.serving import DEFAULT_MAX_FILES, DEFAULT_MAX_REQUEST_BYTES

ALLOW_ENV = "SCANATLAS_ALLOW_ANONYMOUS"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a saved classifier study as a prediction API (FastAPI; docs at /docs)",
        description="Serve the classifier study KEY (`scanatlas runs list --kind classifier-study`): "
        "GET /health, GET /models, POST /predict with DICOM/PNG/JPEG files; OpenAPI docs at /docs. "
        "The API has no sign-in: it serves 127.0.0.1 unless SCANATLAS_ALLOW_ANONYMOUS=1 is set "
        "for a network that is yours alone.",
    )
    parser.add_argument("--run", required=True, metavar="KEY", help="run key of a saved classifier study")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    parser.add_argument("--device", default="auto", help="encoder device: auto, cpu, cuda... (default %(default)s)")
    parser.add_argument("--weights", help="weights file, for an encoder trained with user-supplied weights")
    parser.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / 1024**2,
                        help="largest request body in MiB, checked before it is read (default %(default)g)")
    parser.add_argument("--max-files", type=int, default=DEFAULT_MAX_FILES,
                        help="most files per /predict request (default %(default)s)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="per-image pixel budget; larger images are refused (default %(default)s)")
    parser.set_defaults(func=run)



def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} must be in 1..65535")
    if not is_loopback(args.host) and os.environ.get(ALLOW_ENV) != "1":
        raise PermissionError(
            f"--host {args.host}: the prediction API has no sign-in, so it serves this computer only; "
            f"set {ALLOW_ENV}=1 to serve a network that is yours alone (or put it behind an "
            "authenticating proxy)")
    if args.max_request_mb <= 0 or args.max_files < 1:
        raise ValueError("--max-request-mb must be > 0 and --max-files >= 1")
    import uvicorn

    from api.app import create_app
    from core.serving import load_served_model

    model = load_served_model(args.run, device=args.device, max_pixels=args.max_pixels,
                              weights_path=args.weights)
    app = create_app(model, max_request_bytes=int(args.max_request_mb * 1024**2), max_files=args.max_files)
    print(f"Serving {model.key} ({model.encoder.spec.name}, {model.study.report.model}) on "
          f"http://{args.host}:{args.port} (docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", server_header=False)
    return 0


__all__ = ["add_parser", "run"]
