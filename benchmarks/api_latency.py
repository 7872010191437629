"""Latency and throughput of the prediction API (issue 11 part 5), against the model alone.

    .venv/bin/python benchmarks/api_latency.py [--run KEY] [--requests 60] [--concurrency 4]
        [--out benchmarks/results/api_latency.json]

Without ``--run`` it builds the study the API tests serve, in a temporary cache: 40 real
covid-chestxray X-rays (20 COVID-19, 20 other findings) ingested, embedded with
efficientnet-lite0 and studied image-only (logistic regression). It then starts a real
``scanatlas serve`` (uvicorn) on a free 127.0.0.1 port and measures, on 20 distinct real images
sent one per request:

  * ``model_only``: in this process, in a worker thread as the server's handler runs, the same
    work without HTTP (``ServedModel.predict_files``: decode with the pixel budget, preprocess,
    the encoder's forward pass, the classifier and the 5 nearest training cases), per image;
  * ``api_sequential``: one client, single-image ``POST /predict`` requests: p50/p95 latency
    (each request paired with a model-only run of the same image just before it) and
    requests/s (requests back to back);
  * ``api_concurrent``: ``--concurrency`` clients at once: requests/s and latencies.

Model-only and API runs alternate image by image so that a neighbour's load falls on both, and
the ratios (API p50 / model p50, p95 / p95, the median of per-image ratios, and model-only time
x API requests/s) are what to compare across machines. The
server and this process each use 2 torch threads. Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "covid-chestxray"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_study(cache: Path) -> str:
    """The tests' study: 40 covid-chestxray X-rays, efficientnet-lite0, image-only logreg."""
    sys.path.insert(0, str(REPO / "tests" / "api"))
    from conftest import copy_covid_subset  # the same 40 images as the API tests

    from core.classify.study import classifier_study
    from core.ingest import ingest

    source = cache / "source"
    copy_covid_subset(SHARED, source)
    dataset = ingest(source, cache / "datasets" / "covid40").dataset
    study = classifier_study(dataset, positive="COVID-19", encoder="efficientnet-lite0", use_text=False,
                             metadata=(), n_splits=3, n_bootstrap=50)
    return study.key


def percentiles(seconds: list[float]) -> dict:
    values = np.asarray(seconds) * 1000
    return {"n": len(values), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p95_ms": round(float(np.percentile(values, 95)), 1), "mean_ms": round(float(values.mean()), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a saved classifier study (default: build the tests' study in a temp cache)")
    parser.add_argument("--requests", type=int, default=60, help="single-image requests per API pass")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "api_latency.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    temp = Path(tempfile.mkdtemp(prefix="scanatlas-api-bench-"))
    if not args.run:
        os.environ["SCANATLAS_CACHE"] = str(temp)
    started = time.perf_counter()
    key = args.run or build_study(temp)
    build_s = time.perf_counter() - started

    import httpx

    from core.serving import load_served_model

    model = load_served_model(key, device="cpu")
    table = model.study.table
    paths = [Path(p) for p in table["path"].head(20)]
    blobs = [(p.name, p.read_bytes()) for p in paths]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(temp / "serve.log", "wb")  # noqa: SIM115 (closed at the end)
    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--run", key, "--port", str(port), "--device", "cpu"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("server did not start: " + (temp / "serve.log").read_text()[-2000:])
        client = httpx.Client(timeout=120)

        def one(index: int) -> float:
            name, data = blobs[index % len(blobs)]
            start = time.perf_counter()
            response = client.post(f"{url}/predict", files=[("files", (name, data, "application/octet-stream"))])
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
            return elapsed

        # The model-only pass runs in a worker thread, as the server's /predict does (FastAPI runs
        # it in its thread pool): on a loaded 2-core machine torch's forward pass from the main
        # thread with 2 intra-op threads measured 10-50x slower than from a worker thread.
        worker = ThreadPoolExecutor(1)
        for index in range(3):  # warm both sides
            one(index)
            worker.submit(model.predict_files, [(paths[index].name, paths[index])]).result()
        # Pairs, interleaved: one image through the model alone, then the same image through the
        # API, so that a neighbour's load on this shared machine falls on both alike.
        model_times: list[float] = []
        api_times: list[float] = []
        for index in range(args.requests):
            path = paths[index % len(paths)]
            model_times += worker.submit(model.time_model_only, [path]).result()
            api_times.append(one(index))
        wall = time.perf_counter()
        sequential = [one(i) for i in range(args.requests)]
        api_wall = time.perf_counter() - wall
        wall = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            concurrent = list(pool.map(one, range(args.requests)))
        concurrent_wall = time.perf_counter() - wall
        client.close()
        worker.shutdown()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()

    model_stats, api_stats, concurrent_stats = percentiles(model_times), percentiles(api_times), percentiles(concurrent)
    result = {
        "benchmark": "api_latency",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch_threads": 2, "load_average": os.getloadavg()},
        "model": {"encoder": model.encoder.spec.name, "classifier": model.study.report.model,
                  "training_rows": int(len(table)), "built_in_s": round(build_s, 1) if not args.run else None},
        "images": {"n_distinct": len(paths), "bytes_mean": int(np.mean([len(b) for _, b in blobs]))},
        "model_only": {**model_stats, "per_s": round(1 / np.mean(model_times), 2)},
        "api_sequential": {**api_stats, "requests_per_s": round(len(sequential) / api_wall, 2),
                           "back_to_back": percentiles(sequential)},
        "api_concurrent": {**concurrent_stats, "clients": args.concurrency,
                           "requests_per_s": round(len(concurrent) / concurrent_wall, 2)},
        "ratio_api_to_model": {"p50": round(api_stats["p50_ms"] / model_stats["p50_ms"], 2),
                               "p95": round(api_stats["p95_ms"] / model_stats["p95_ms"], 2),
                               "median_of_pair_ratios": round(float(np.median(np.asarray(api_times) / np.asarray(model_times))), 2),
                               "throughput": round((len(sequential) / api_wall) * np.mean(model_times), 2)},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
