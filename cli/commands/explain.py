"""``scanatlas explain DIR``: SHAP importances, cluster drivers, similar cases and Grad-CAM.

SHAP and Grad-CAM explain a classifier study (the same options as ``scanatlas classify``; a
study already in the run store is reused), through the same core functions the app calls.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cli.commands import add_where_argument, load_filtered
from cli.commands.classify import add_study_arguments, run_study
from core.clustering import cluster
from core.embed import embed_dataset
from core.explain import (
    SUPPORTED_CAM_ENCODERS,
    SimilarCases,
    cluster_drivers,
    study_gradcam,
    study_shap,
)
from core.pixels import PixelError

METADATA = ("age", "sex", "view", "modality")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="SHAP importances, metadata drivers of clusters, similar cases, Grad-CAM overlays",
        description="Writes shap_importance.csv (mean |SHAP| per metadata column and embedding "
        "principal component for the target), cluster_drivers.csv (which metadata columns "
        "predict k-means cluster membership), similar_cases.csv (nearest neighbours of every "
        "image in embedding space) and gradcam/*.png (where the CNN + linear head looked). "
        "The classifier explained is the study `scanatlas classify` runs with the same options.",
    )
    parser.add_argument("dataset", help="ingested dataset folder")
    add_study_arguments(parser)
    parser.add_argument("--k", type=int, default=4, help="clusters for the drivers table")
    parser.add_argument("--neighbours", type=int, default=5)
    parser.add_argument("--gradcam", type=int, default=4, help="how many Grad-CAM overlays to write")
    parser.add_argument("--out", required=True)
    add_where_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dataset = load_filtered(args.dataset, args.where)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = dataset.images.reset_index(drop=True)
    study = run_study(dataset, args)
    classes = list(study.report.target.classes)

    shap_result = study_shap(study)
    importance = shap_result.mean_abs(shap_result.classes[-1]).rename("mean_abs_shap").rename_axis("feature").reset_index()
    importance.to_csv(out / "shap_importance.csv", index=False)
    print(f"Top features by mean |SHAP| towards '{shap_result.classes[-1]}':")
    print(importance.head(8).to_string(index=False))

    vectors = embed_dataset(dataset, args.encoder).vectors
    metadata = images[[c for c in METADATA if c in images]]
    clusters = cluster(np.where(np.isfinite(vectors), vectors, np.nan), algorithm="kmeans", k=args.k).labels
    drivers = cluster_drivers(metadata, clusters)
    drivers.to_csv(out / "cluster_drivers.csv", index=False)
    print(f"\nCluster drivers: metadata predicts cluster with CV accuracy {drivers.attrs['cv_accuracy']:.2f} "
          f"(baseline {drivers.attrs['baseline_accuracy']:.2f})")

    label_column = study.report.target.columns[0]
    search = SimilarCases().fit(vectors, images["image_id"].to_numpy())
    rows = []
    for row in np.flatnonzero(np.isfinite(vectors).all(axis=1)):
        found = search.query(int(row), k=args.neighbours)
        rows += [{"image_id": images.at[row, "image_id"], "patient_id": images.at[row, "patient_id"],
                  "rank": r.rank, "neighbour_image_id": r.id, "neighbour_patient_id": images.at[r.row, "patient_id"],
                  "neighbour_label": images.at[r.row, label_column], "distance": r.distance}
                 for r in found.itertuples()]
    pd.DataFrame(rows).to_csv(out / "similar_cases.csv", index=False)

    if args.gradcam and args.encoder not in SUPPORTED_CAM_ENCODERS:
        print(f"\nNo Grad-CAM: {args.encoder} has no conv layers (Grad-CAM encoders: {', '.join(SUPPORTED_CAM_ENCODERS)})")
    elif args.gradcam and study.report.kind != "multilabel":
        scans = images if args.level == "image" else images.groupby("patient_id", sort=False).nth(0)
        labelled = scans[scans[label_column].notna()].head(args.gradcam)
        (out / "gradcam").mkdir(exist_ok=True)
        for _, scan in labelled.iterrows():
            try:
                result = study_gradcam(study, str(scan["path"]), int(scan["frame"]))
            except PixelError as error:
                print(f"Grad-CAM skipped for {scan['path']}: {error}")
                continue
            if result is None:
                print("No Grad-CAM: too few labelled rows for a linear head")
                break
            name = f"{scan['patient_id']}_{str(scan['image_id'])[:12]}.png"
            Image.fromarray(result[1]).save(out / "gradcam" / name)
        print(f"Grad-CAM towards '{classes[-1]}' in {out / 'gradcam'}")
    print(f"\nWrote {out}")
    return 0
