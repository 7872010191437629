"""``scanatlas finetune DIR``: fine-tune an image encoder on a binary label, compared with the
frozen linear probe on the same patient folds.

The run is a named run of kind ``finetune``: the same command again loads it; an interrupted
run (Ctrl-C, a killed process) continues from its last completed epoch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.auth import local_user
from core.encoders import DEFAULT_IMAGE_ENCODER
from core.ingest import load_dataset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a CNN encoder on a binary label; compare with the frozen linear probe",
        description="Fine-tune an image encoder (efficientnet-lite0, resnet18, densenet121-xrv) on "
        "POSITIVE vs the rest: flips and small rotations, early stopping on a validation split of "
        "the training patients, a checkpoint every epoch. Scored on the linear probe's "
        "patient-grouped folds with the same bootstrap intervals; the final network becomes the "
        "encoder ENCODER-ft-<run>, usable by embed and the app.",
    )
    parser.add_argument("dataset", help="ingested dataset folder")
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER)
    parser.add_argument("--positive", required=True, help="value of the positive class, e.g. COVID-19")
    parser.add_argument("--target", default="label", help="label column (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="most epochs per split (default %(default)s)")
    parser.add_argument("--patience", type=int, default=2,
                        help="stop after this many epochs without a better validation AUC (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="training image side in pixels (default: the encoder's input size)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--no-final", action="store_true",
                        help="skip the final model on all rows (no derived encoder)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    parser.add_argument("--recompute", action="store_true", help="train again even when the run store holds this run")
    parser.add_argument("--out", type=Path, help="also write comparison.csv, history.csv and per_class.csv here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cli.commands import fraction_bar
    from core.atomic import atomic_write
    from core.finetune import FineTuneCancelled
    from core.finetune.study import finetune_study

    dataset = load_dataset(args.dataset)
    lines: list[str] = []
    try:
        with fraction_bar("finetune") as progress:
            result = finetune_study(
                dataset, user=local_user(source="cli"), encoder=args.encoder, positive=args.positive,
                target_column=args.target, epochs=args.epochs, patience=args.patience,
                image_size=args.image_size, batch_size=args.batch_size, n_splits=args.splits,
                n_bootstrap=args.bootstrap, final_model=not args.no_final, device=args.device,
                progress=progress, force=args.recompute,
                on_epoch=lambda r: lines.append(f"{r.split} epoch {r.epoch}: loss {r.train_loss:.3f}, "
                                                f"validation AUC {r.val_auc:.3f}, {r.seconds:.0f} s"),
            )
    except (KeyboardInterrupt, FineTuneCancelled):
        print("Stopped. Completed epochs are checkpointed: the same command continues from there.")
        return 130
    for line in lines:
        print(line)
    if result.from_store:
        print(f"Reused the saved run {result.key} from {result.created} (--recompute to train again).")
    fmt = {"float_format": lambda v: f"{v:.3f}"}
    shown = ["modality", "n_rows", "mean_auc", "auc_lo", "auc_hi", "mean_f1", "f1_lo", "f1_hi", "rank"]
    print(result.comparison[shown].to_string(index=False, **fmt))
    print(f"Training: {result.timing.get('epochs_run', 0)} epochs in {result.timing.get('train_seconds', 0):.0f} s "
          f"on {result.timing.get('device', '?')}")
    for note in result.notes:
        print(f"note: {note}")
    if result.encoder_name:
        print(f"Encoder registered: {result.encoder_name} (scanatlas embed {args.dataset} --encoder {result.encoder_name})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, frame in (("comparison", result.comparison), ("history", result.history),
                            ("per_class", result.per_class)):
            atomic_write(args.out / f"{name}.csv", lambda handle, f=frame: f.to_csv(handle, index=False))
        print(f"Wrote {args.out}")
    print(f"Run {result.key}")
    return 0


__all__ = ["add_parser", "run"]
