"""``scanatlas explain DIR``: SHAP importances, cluster drivers, similar cases and Grad-CAM."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.clustering import cluster
from core.embed import embed_dataset
from core.encoders import DEFAULT_IMAGE_ENCODER
from core.explain import SimilarCases, cluster_drivers, shap_explanation
from core.ingest import load_dataset
from core.pixels import load_pixels

METADATA = ("age", "sex", "view", "modality")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="SHAP importances, metadata drivers of clusters, similar cases, Grad-CAM overlays",
        description="Writes shap_importance.csv (mean |SHAP| per metadata column and embedding "
        "principal component for the target), cluster_drivers.csv (which metadata columns "
        "predict k-means cluster membership), similar_cases.csv (nearest neighbours of every "
        "image in embedding space) and gradcam/*.png (where the CNN + linear head looked).",
    )
    parser.add_argument("dataset", help="ingested dataset folder")
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER)
    parser.add_argument("--target", default="label")
    parser.add_argument("--positive", help="positive class for a binary explanation, e.g. COVID-19")
    parser.add_argument("--k", type=int, default=4, help="clusters for the drivers table")
    parser.add_argument("--neighbours", type=int, default=5)
    parser.add_argument("--gradcam", type=int, default=4, help="how many Grad-CAM overlays to write")
    parser.add_argument("--out", required=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sklearn.linear_model import LogisticRegression

    from core.explain import gradcam_heatmap, overlay_heatmap

    dataset = load_dataset(args.dataset)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = dataset.images.reset_index(drop=True)
    vectors = embed_dataset(dataset, args.encoder).vectors
    labels = images[args.target].astype(object)
    y = labels.where(labels.isna(), labels == args.positive) if args.positive else labels
    metadata = images[[c for c in METADATA if c in images]]

    shap_result = shap_explanation(metadata, vectors, y)
    importance = shap_result.mean_abs(shap_result.classes[-1]).rename("mean_abs_shap").rename_axis("feature").reset_index()
    importance.to_csv(out / "shap_importance.csv", index=False)
    print("Top features by mean |SHAP|:")
    print(importance.head(8).to_string(index=False))

    clusters = cluster(np.where(np.isfinite(vectors), vectors, np.nan), algorithm="kmeans", k=args.k).labels
    drivers = cluster_drivers(metadata, clusters)
    drivers.to_csv(out / "cluster_drivers.csv", index=False)
    print(f"\nCluster drivers: metadata predicts cluster with CV accuracy {drivers.attrs['cv_accuracy']:.2f} "
          f"(baseline {drivers.attrs['baseline_accuracy']:.2f})")

    search = SimilarCases().fit(vectors, images["image_id"].to_numpy())
    rows = []
    for row in np.flatnonzero(np.isfinite(vectors).all(axis=1)):
        found = search.query(int(row), k=args.neighbours)
        rows += [{"image_id": images.at[row, "image_id"], "patient_id": images.at[row, "patient_id"],
                  "rank": r.rank, "neighbour_image_id": r.id, "neighbour_patient_id": images.at[r.row, "patient_id"],
                  "neighbour_label": images.at[r.row, args.target], "distance": r.distance}
                 for r in found.itertuples()]
    pd.DataFrame(rows).to_csv(out / "similar_cases.csv", index=False)

    known = y.notna().to_numpy() & np.isfinite(vectors).all(axis=1)
    if args.gradcam and known.sum() > 2 and y[known].nunique() > 1:
        head = LogisticRegression(max_iter=2000, class_weight="balanced").fit(vectors[known], y[known].astype(str))
        (out / "gradcam").mkdir(exist_ok=True)
        target = len(head.classes_) - 1
        for row in np.flatnonzero(known)[: args.gradcam]:
            image = load_pixels(images.at[row, "path"], int(images.at[row, "frame"]))
            heat = gradcam_heatmap(image, args.encoder, head.coef_, head.intercept_, target)
            name = f"{images.at[row, 'patient_id']}_{images.at[row, 'image_id'][:12]}.png"
            Image.fromarray(overlay_heatmap(image, heat)).save(out / "gradcam" / name)
    print(f"\nWrote {out}")
    return 0
