"""Wall time of one fine-tuning epoch at full size on the covid-chestxray X-rays; writes
benchmarks/results/finetune_epoch.json.

    nice -n 10 .venv/bin/python benchmarks/finetune_epoch_time.py --cache DIR [--image-size 224]

Every X-ray (modality "X-ray") of an ingested covid-chestxray dataset under DIR/datasets/covid
(as benchmarks/finetune_covid.py leaves it), COVID-19 vs other; the training pool of the linear
probe's fold 0 (patient-grouped, 5 folds) split 4:1 by patient into training and validation,
exactly as ``finetune_study`` does; one epoch of efficientnet-lite0 (batch 16, augmentation on),
decode time reported apart. Times 5 epochs x (5 folds + final model) are an extrapolation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "finetune_epoch.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ["SCANATLAS_CACHE"] = str(args.cache)
    from core.classify import prepare_target
    from core.classify.cv import grouped_folds
    from core.encoders import get_spec
    from core.encoders.device import configure_cpu_threads
    from core.encoders.weights import ensure_weights
    from core.finetune.data import ImageBank
    from core.finetune.train import FineTuneNet, TrainSettings, train_split
    from core.ingest import load_dataset

    configure_cpu_threads()
    dataset = load_dataset(args.cache / "datasets" / "covid")
    images = dataset.images[dataset.images["modality"] == "X-ray"].reset_index(drop=True)
    target = prepare_target(images, "label", positive="COVID-19")
    groups = images["patient_id"].astype(str).to_numpy()
    folds = grouped_folds(target.y, groups, 5, random_state=0)
    pool = np.flatnonzero(folds != 0)
    inner = grouped_folds(target.y[pool], groups[pool], 5, random_state=0)
    train_rows, val_rows = pool[inner != 0], pool[inner == 0]
    spec = get_spec("efficientnet-lite0")
    bank = ImageBank(images["path"].tolist(), images["frame"].tolist(),
                     replace(spec.preprocessing, input_size=args.image_size))
    began = time.perf_counter()
    failed = bank.preload(pool)
    decode_s = time.perf_counter() - began
    torch.manual_seed(0)
    net = FineTuneNet(spec, spec.build(spec, ensure_weights(spec).path, torch.device("cpu")))
    load_start = os.getloadavg()
    began = time.perf_counter()
    result = train_split("fold0", net, bank, target.y, train_rows=train_rows, val_rows=val_rows,
                         predict_rows=np.array([], dtype=np.int64), settings=TrainSettings(epochs=1),
                         device=torch.device("cpu"))
    epoch_s = time.perf_counter() - began
    record = {
        "what": "one epoch, efficientnet-lite0, covid-chestxray X-rays, fold 0's training pool",
        "image_size": args.image_size, "train_images": int(len(train_rows)), "val_images": int(len(val_rows)),
        "decode_failed": len(failed), "decode_s": round(decode_s, 1), "epoch_s": round(epoch_s, 1),
        "train_loss": result.history[0]["train_loss"], "val_auc": result.history[0]["val_auc"],
        "extrapolated_5_epochs_one_training_s": round(5 * epoch_s, 0),
        "extrapolated_5_epochs_5_folds_plus_final_s": round(6 * 5 * epoch_s * len(images) * 0.8 / len(pool), 0),
        "note": "the extrapolations multiply this one measured epoch; they are estimates, not measurements",
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
    }
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
