"""Fine-tuned vs frozen on the covid-chestxray X-rays; writes benchmarks/results/finetune.json.

    nice -n 10 .venv/bin/python benchmarks/finetune_covid.py [--image-size 96] [--epochs 5]
        [--splits 5] [--final] [--device auto]

COVID-19 vs every other finding, X-ray rows only (modality "X-ray"), image level, the linear
probe's patient-grouped 5-fold CV. Reports wall time, time per epoch, AUC of the fine-tuned
network and of the frozen linear probe with 95% patient-bootstrap intervals (same folds, same
bootstrap replicates), and the training throughput (images/s, forward + backward, batch 16)
at the benchmark's image size and at the encoder's native 224 px measured in the same process,
so that the time of the full-size run can be extrapolated as a ratio. Its own cache folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS = REPO_ROOT / "benchmarks" / "results" / "finetune.json"


def train_throughput(encoder: str, sizes: list[int], rounds: int = 5, batch: int = 8) -> dict[str, float]:
    """Images/s of forward + backward + AdamW step on random input, per image size: one step of
    each size per round, interleaved, best round kept (the machine is shared; the best round is
    the least disturbed), after one warm-up step of each."""
    from core.encoders import get_spec
    from core.encoders.weights import ensure_weights
    from core.finetune.train import FineTuneNet

    spec = get_spec(encoder)
    net = FineTuneNet(spec, spec.build(spec, ensure_weights(spec).path, torch.device("cpu")))
    net.train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), 1e-4)
    y = (torch.arange(batch) % 2).float()
    best = {size: float("inf") for size in sizes}
    for round_ in range(rounds + 1):
        for size in sizes:
            x = torch.randn(batch, spec.channels, size, size).contiguous(memory_format=torch.channels_last)
            began = time.perf_counter()
            optimizer.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
            optimizer.step()
            if round_ > 0:  # round 0 is the warm-up
                best[size] = min(best[size], time.perf_counter() - began)
    return {f"{size}px": round(batch / best[size], 3) for size in sizes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--final", action="store_true", help="also train the final model (the encoder)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one-per-patient", action="store_true",
                        help="a subset: each patient's first X-ray only (fewer, independent rows)")
    parser.add_argument("--patients", type=int, default=None,
                        help="a subset: this many patients drawn at random (seed 0)")
    parser.add_argument("--throughput-only", action="store_true",
                        help="only measure images/s and update the extrapolation in --out")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder to reuse (default: a new temp folder)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    if args.throughput_only:
        record = json.loads(args.out.read_text())
        record["train_images_per_s"] = throughput = train_throughput(args.encoder, sorted({record["image_size"], 224}))
        ratio = throughput[f"{record['image_size']}px"] / throughput["224px"]
        record["extrapolated_224px_train_s"] = round(record["train_s"] * ratio, 0)
        record["throughput_load_average"] = os.getloadavg()
        args.out.write_text(json.dumps(record, indent=1))
        print(throughput, record["extrapolated_224px_train_s"])
        return 0
    cache = args.cache or Path(tempfile.mkdtemp(prefix="scanatlas-finetune-bench-"))
    os.environ["SCANATLAS_CACHE"] = str(cache)
    from core.auth import local_user
    from core.encoders.device import available_cores, configure_cpu_threads
    from core.finetune.study import finetune_study
    from core.ingest import ingest, load_dataset

    configure_cpu_threads()
    load_at_start = os.getloadavg()
    began = time.perf_counter()
    folder = cache / "datasets" / "covid"
    if (folder / "images.parquet").is_file():
        dataset = load_dataset(folder)
    else:
        dataset = ingest(SHARED_DATA / "covid-chestxray", folder).dataset
    ingest_s = time.perf_counter() - began
    xrays = dataset.images[dataset.images["modality"] == "X-ray"]
    if args.one_per_patient:
        xrays = xrays.drop_duplicates("patient_id")
    if args.patients:
        chosen = xrays["patient_id"].drop_duplicates().sample(n=args.patients, random_state=0)
        xrays = xrays[xrays["patient_id"].isin(chosen)]
    xrays = xrays.reset_index(drop=True)
    dataset = replace(dataset, images=xrays)

    throughput: dict[str, float] = {}
    epochs: list[dict] = []

    def on_epoch(result) -> None:
        epochs.append(result.as_dict())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".partial.json").write_text(json.dumps(
            {"image_size": args.image_size, "rows": int(len(xrays)), "throughput": throughput,
             "epochs": epochs, "load_average": os.getloadavg()}, indent=1))
        print(f"{result.split} epoch {result.epoch}: loss {result.train_loss:.3f} val AUC "
              f"{result.val_auc:.3f} ({result.seconds:.0f} s)", flush=True)

    began = time.perf_counter()
    result = finetune_study(dataset, user=local_user(source="cli"), encoder=args.encoder, positive="COVID-19",
                            epochs=args.epochs, image_size=args.image_size, n_splits=args.splits,
                            final_model=args.final, device=args.device, on_epoch=on_epoch,
                            progress=lambda f, m: None)
    wall_s = time.perf_counter() - began
    # Measured after the run, the two sizes back to back, so their ratio sees the same load.
    throughput = train_throughput(args.encoder, sorted({args.image_size, 224}))
    per_epoch = [e["seconds"] for e in epochs]
    ratio = throughput[f"{args.image_size}px"] / throughput["224px"]
    comparison = result.comparison[["modality", "n_rows", "mean_auc", "auc_lo", "auc_hi", "mean_f1", "f1_lo", "f1_hi"]]
    record = {
        "what": "COVID-19 vs other, covid-chestxray X-rays, image level, patient-grouped folds",
        "encoder": args.encoder, "image_size": args.image_size, "epochs_max": args.epochs,
        "splits": args.splits, "final_model": args.final, "device": result.timing["device"],
        "subset": ("one X-ray per patient" if args.one_per_patient else "every X-ray")
        + (f", {args.patients} patients drawn at random (seed 0)" if args.patients else ""),
        "rows": int(len(xrays)), "patients": int(xrays["patient_id"].nunique()),
        "positives": int((xrays["label"] == "COVID-19").sum()),
        "comparison": json.loads(comparison.to_json(orient="records")),
        "wall_s": round(wall_s, 1), "ingest_s": round(ingest_s, 1),
        "train_s": round(sum(per_epoch), 1), "epochs_run": len(per_epoch),
        "s_per_epoch_mean": round(sum(per_epoch) / max(len(per_epoch), 1), 1),
        "epochs": epochs,
        "train_images_per_s": throughput,
        "extrapolated_224px_train_s": round(sum(per_epoch) * ratio, 0),
        "note": "extrapolated_224px_train_s = measured train_s x (images/s at this size / images/s at "
                "224 px), both measured in this process; an estimate, not a measurement",
        "load_average_start": load_at_start, "load_average_end": os.getloadavg(), "cores": available_cores(), "torch": torch.__version__,
        "python": platform.python_version(), "run_key": result.key,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(comparison.to_string(index=False))
    print(f"wall {wall_s:.0f} s; {len(per_epoch)} epochs, {record['s_per_epoch_mean']} s each; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
