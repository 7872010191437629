"""core.explain: SHAP over metadata + embedding PCs, cluster drivers, Grad-CAM on real chest
X-rays with a real encoder, and similar-case search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from core.explain import (
    SimilarCases,
    cluster_drivers,
    encode_metadata,
    shap_beeswarm_figure,
    shap_explanation,
    shap_waterfall_figure,
)
from core.explain.gradcam import (
    SUPPORTED_CAM_ENCODERS,
    build_cam_network,
    gradcam_heatmap,
    gradcam_with_encoder,
    overlay_heatmap,
)
from core.metadata import sum_by_source
from core.pixels import load_pixels

# A wide PA film (512 x 396 px): the encoders see its centred 396 x 396 square only.
WIDE_XRAY = "nejmc2001573_f1a.jpeg"
N_XRAYS = 20


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def xray_table(covid_dir: Path) -> pd.DataFrame:
    """The first PA chest X-ray of each of the first N_XRAYS patients (real metadata)."""
    metadata = pd.read_csv(covid_dir / "metadata.csv", encoding_errors="replace")
    present = {path.name for path in (covid_dir / "images").iterdir()}
    rows = metadata[(metadata["modality"] == "X-ray") & (metadata["view"] == "PA")
                    & metadata["filename"].isin(present)]
    rows = rows.drop_duplicates("patientid").head(N_XRAYS).reset_index(drop=True)
    assert WIDE_XRAY in set(rows["filename"])
    return rows.assign(path=[str(covid_dir / "images" / name) for name in rows["filename"]])


@pytest.fixture(scope="module")
def xray_images(xray_table: pd.DataFrame) -> list[np.ndarray]:
    """Grey float32 [0, 1] images, as load_pixels gives them."""
    images = []
    for path in xray_table["path"]:
        image = load_pixels(path)
        images.append(image.mean(axis=2) if image.ndim == 3 else image)
    return images


@pytest.fixture(scope="module")
def effnet():
    from core.encoders import get_encoder

    return get_encoder("efficientnet-lite0", device="cpu")


def embed(encoder, images: list[np.ndarray]) -> np.ndarray:
    return encoder.embed_batch(torch.stack([encoder.preprocess(image) for image in images]))


@pytest.fixture(scope="module")
def xray_embeddings(effnet, xray_images: list[np.ndarray]) -> np.ndarray:
    return embed(effnet, xray_images)


def centre_square(shape: tuple[int, ...]) -> tuple[int, int, int]:
    height, width = shape[:2]
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def add_patch(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A checkerboard square in the upper-right quarter of the part the encoder sees, and the
    mask of where it is."""
    top, left, side = centre_square(image.shape)
    row, col, size = top + side // 8, left + 5 * side // 8, side // 4
    cell = max(1, size // 8)
    rows, cols = np.mgrid[0:size, 0:size]
    patched = image.copy()
    patched[row : row + size, col : col + size] = ((rows // cell + cols // cell) % 2).astype(
        np.float32)
    mask = np.zeros(image.shape, dtype=bool)
    mask[row : row + size, col : col + size] = True
    return patched, mask


@pytest.fixture(scope="module")
def patch_head(effnet, xray_table: pd.DataFrame, xray_images: list[np.ndarray]):
    """Logistic regression on real embeddings of 12 X-rays, half of them with a planted patch:
    a head whose evidence is known to sit in the patch."""
    training = [image for name, image in zip(xray_table["filename"], xray_images, strict=True)
                if name != WIDE_XRAY][:12]
    images = [add_patch(image)[0] if index % 2 else image for index, image in enumerate(training)]
    labels = np.arange(len(images)) % 2
    head = LogisticRegression(max_iter=2000).fit(embed(effnet, images), labels)
    assert head.score(embed(effnet, images), labels) == 1.0
    return head


@pytest.fixture(scope="module")
def wide_xray(xray_table: pd.DataFrame, xray_images: list[np.ndarray]) -> np.ndarray:
    position = int(np.flatnonzero(xray_table["filename"] == WIDE_XRAY)[0])
    return xray_images[position]


# ---------------------------------------------------------------- metadata encoding


def test_encode_metadata_imputes_flags_one_hots_and_reports_skipped_columns() -> None:
    frame = pd.DataFrame({
        "age": [30.0, np.nan, 50.0, 70.0],
        "sex": ["M", "F", None, "M"],
        "dose": ["1.5", "2", None, "3"],  # numbers stored as text
        "site": ["A", "A", "A", "A"],
        "empty": [np.nan] * 4,
    })
    encoded = encode_metadata(frame, max_categories=20)
    assert encoded.feature_names == [
        "age", "age missing", "sex=M", "sex=(missing)", "sex=F", "dose", "dose missing"]  # ties by name
    assert encoded.sources == ["age", "age", "sex", "sex", "sex", "dose", "dose"]
    np.testing.assert_array_equal(encoded.matrix[:, 0], [30.0, 50.0, 50.0, 70.0])  # median 50
    np.testing.assert_array_equal(encoded.matrix[:, 1], [0, 1, 0, 0])
    np.testing.assert_array_equal(encoded.matrix[:, 2], [1, 0, 0, 1])
    np.testing.assert_array_equal(encoded.matrix[:, 5], [1.5, 2.0, 2.0, 3.0])
    assert encoded.skipped == {"site": "constant", "empty": "all values missing"}


def test_encode_metadata_skips_identifiers_and_pools_rare_categories() -> None:
    frame = pd.DataFrame({
        "patient": [f"p{i}" for i in range(30)],
        "site": ["A"] * 12 + ["B"] * 10 + ["C"] * 5 + ["D"] * 3,
    })
    encoded = encode_metadata(frame, max_categories=2)
    assert "identifier-like" in encoded.skipped["patient"]
    assert encoded.feature_names == ["site=A", "site=B", "site=(other)"]
    assert encoded.matrix[:, 2].sum() == 8


def test_sum_by_source_adds_one_hot_parts() -> None:
    values = np.array([[1.0, -0.5, 2.0], [0.0, 0.25, -1.0]])
    summed, names = sum_by_source(values, ["sex", "sex", "age"])
    assert names == ["sex", "age"]
    np.testing.assert_allclose(summed, [[0.5, 2.0], [0.25, -1.0]])


# ---------------------------------------------------------------- SHAP


def synthetic_cohort(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Metadata where ``marker`` alone decides y, plus noise columns and noise embeddings."""
    rng = np.random.default_rng(seed)
    marker = rng.normal(size=n)
    metadata = pd.DataFrame({
        "age": rng.normal(60, 15, n),
        "sex": rng.choice(["M", "F"], n),
        "marker": marker,
    })
    embeddings = rng.normal(size=(n, 32))
    return metadata, embeddings, np.where(marker > 0, "covid", "other")


@pytest.mark.slow
def test_linear_shap_is_additive_on_real_xrays(xray_table, xray_embeddings) -> None:
    metadata = xray_table[["age", "sex", "offset"]]
    y = np.where(xray_table["finding"] == "COVID-19", "covid", "other")
    # A background of every training row: its mean is 0 in the standardised model input.
    result = shap_explanation(metadata, xray_embeddings, y, n_components=4, background=100)
    assert result.explainer_name == "LinearExplainer" and result.output == "log-odds"
    assert result.feature_names[-4:] == ["PC1", "PC2", "PC3", "PC4"]
    assert result.values.shape == (N_XRAYS, len(result.feature_names))
    margin = result.model.decision_function(result.model_input())
    np.testing.assert_allclose(result.values.sum(axis=1) + result.base_values, margin, atol=1e-9)
    # Interventional linear SHAP by hand: coefficient x (value - background mean).
    np.testing.assert_allclose(result.values, result.model.coef_[0] * result.model_input(),
                               atol=1e-9)
    np.testing.assert_allclose(result.base_values, result.model.intercept_[0], atol=1e-9)
    assert result.explained.all() and result.index.equals(metadata.index)


def test_feature_that_decides_y_has_the_largest_mean_abs_shap() -> None:
    metadata, embeddings, y = synthetic_cohort()
    for model in (None, "gbm"):
        result = shap_explanation(metadata, embeddings, y, n_components=5, model=model)
        ranking = result.mean_abs()
        assert ranking.index[0] == "marker", (model, ranking.head(3))
        assert ranking.iloc[0] > 3 * ranking.iloc[1]


def test_tree_and_multiclass_shap_add_up_to_the_model_output() -> None:
    metadata, embeddings, _ = synthetic_cohort()
    y = np.digitize(metadata["marker"], [-0.5, 0.5])
    linear = shap_explanation(metadata, embeddings, y, n_components=3)
    assert linear.values.shape == (120, 7, 3) and list(linear.classes) == [0, 1, 2]
    np.testing.assert_allclose(
        linear.values.sum(axis=1) + linear.base_values,
        linear.model.decision_function(linear.model_input()), atol=1e-9)
    boosted = shap_explanation(metadata, embeddings, y, n_components=3, model="gbm")
    assert boosted.explainer_name == "TreeExplainer" and boosted.output == "log-odds"
    np.testing.assert_allclose(
        boosted.values.sum(axis=1) + boosted.base_values,
        boosted.model.decision_function(boosted.model_input()), atol=1e-6)


@pytest.mark.slow
def test_model_agnostic_shap_explains_probabilities() -> None:
    metadata, embeddings, y = synthetic_cohort(n=40)
    result = shap_explanation(metadata, embeddings, y, n_components=2,
                              model=KNeighborsClassifier(5), background=20)
    assert result.explainer_name == "PermutationExplainer" and result.output == "probability"
    probability = result.model.predict_proba(result.model_input())[:, 1]
    np.testing.assert_allclose(result.values.sum(axis=1) + result.base_values, probability,
                               atol=1e-9)
    assert result.mean_abs().index[0] == "marker"


def test_rows_without_embedding_or_label_stay_aligned() -> None:
    metadata, embeddings, y = synthetic_cohort()
    metadata.index = [f"img{i}" for i in range(120)]
    embeddings[[3, 7]] = np.nan
    labels = y.astype(object)
    labels[[10, 11]] = None
    result = shap_explanation(metadata, embeddings, labels, n_components=3)
    assert result.values.shape[0] == 120 and list(result.index) == list(metadata.index)
    assert not result.explained[[3, 7]].any() and np.isnan(result.values[[3, 7]]).all()
    assert result.reasons[3] == "no embedding (NaN vector)" and result.reasons[0] is None
    # Unlabelled rows are not fitted on but are still explained.
    assert result.explained[[10, 11]].all() and np.isfinite(result.values[[10, 11]]).all()


def test_binary_class_values_mirror_the_positive_class() -> None:
    metadata, embeddings, y = synthetic_cohort()
    result = shap_explanation(metadata, embeddings, y, n_components=2)
    assert list(result.classes) == ["covid", "other"]
    positive, base, output = result.class_values()
    negative, negative_base, negative_output = result.class_values("covid")
    np.testing.assert_allclose(negative, -positive)
    np.testing.assert_allclose(negative_output, -output)
    probability = result.model.predict_proba(result.model_input())[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-output)), probability, atol=1e-9)
    with pytest.raises(ValueError, match="not a class"):
        result.class_values("flu")


def test_shap_explanation_rejects_bad_inputs() -> None:
    metadata, embeddings, y = synthetic_cohort(n=20)
    with pytest.raises(ValueError, match="n_components=40 must be <="):
        shap_explanation(metadata, embeddings, y, n_components=40)
    with pytest.raises(ValueError, match="at least two classes"):
        shap_explanation(metadata, embeddings, np.array(["covid"] * 20), n_components=2)
    with pytest.raises(ValueError, match="y has 19 values"):
        shap_explanation(metadata, embeddings, y[:19], n_components=2)
    with pytest.raises(ValueError, match="embeddings must have shape"):
        shap_explanation(metadata, embeddings[:5], y, n_components=2)
    with pytest.raises(ValueError, match="not a known model"):
        shap_explanation(metadata, embeddings, y, n_components=2, model="forest")
    with pytest.raises(ValueError, match="no features"):
        shap_explanation(None, embeddings, y, n_components=0)


# ---------------------------------------------------------------- figures


def test_beeswarm_plots_each_features_shap_values_in_importance_order() -> None:
    metadata, embeddings, y = synthetic_cohort()
    result = shap_explanation(metadata, embeddings, y, n_components=3)
    figure = shap_beeswarm_figure(result, max_display=4)
    ranking = list(result.mean_abs().index[:4])
    assert list(figure.layout.yaxis.ticktext) == ranking[::-1]  # largest on top
    assert "3 weaker features not shown" in figure.layout.title.text  # 7 features
    for trace in figure.data:
        feature = result.feature_names.index(trace.name)
        np.testing.assert_allclose(np.sort(trace.x), np.sort(result.values[:, feature]))
        colours = np.asarray(trace.marker.color, dtype=float)
        assert colours.min() >= 0 and colours.max() <= 1
    marker = next(trace for trace in figure.data if trace.name == "marker")
    # The positive class is "other" and a high marker means "covid": red dots sit left.
    colours = np.asarray(marker.marker.color, dtype=float)
    assert np.corrcoef(colours, marker.x)[0, 1] < -0.8


def test_waterfall_steps_from_base_value_to_model_output() -> None:
    metadata, embeddings, y = synthetic_cohort()
    embeddings[5] = np.nan
    result = shap_explanation(metadata, embeddings, y, n_components=3)
    figure = shap_waterfall_figure(result, 0, max_display=3)
    steps = figure.data[0]
    assert list(steps.measure) == ["absolute", "relative", "relative", "relative", "relative",
                                   "total"]
    assert steps.y[0] == "E[f(x)]" and steps.y[-2] == "4 other features" and steps.y[-1] == "f(x)"
    assert steps.x[0] + sum(steps.x[1:-1]) == pytest.approx(result.output_values[0])
    margin = result.model.decision_function(result.model_input()[:1])[0]
    assert steps.x[-1] == pytest.approx(margin)
    with pytest.raises(ValueError, match="row 5 was not explained: no embedding"):
        shap_waterfall_figure(result, 5)
    with pytest.raises(ValueError, match="row=120 must be"):
        shap_waterfall_figure(result, 120)


# ---------------------------------------------------------------- cluster drivers


def test_cluster_drivers_find_the_planted_column() -> None:
    rng = np.random.default_rng(0)
    n = 240
    site = rng.choice(["A", "B", "C"], n)
    clusters = pd.Series(site).map({"A": 0, "B": 1, "C": -1}).to_numpy(dtype=object)
    relabelled = rng.random(n) < 0.1  # the driver explains most, not all, of the clustering
    clusters[relabelled] = rng.choice([0, 1, -1], relabelled.sum())
    clusters[:4] = None  # rows that were never clustered
    metadata = pd.DataFrame({
        "age": rng.normal(60, 15, n),
        "sex": rng.choice(["M", "F", None], n),
        "site": site,
        "noise": rng.normal(size=n),
        "accession": [f"acc{i:04d}" for i in range(n)],
    })
    drivers = cluster_drivers(metadata, clusters)
    assert list(drivers.columns) == ["cluster", "column", "mean_abs_shap", "rank"]
    assert set(drivers["cluster"]) == {-1, 0, 1}
    top = drivers[drivers["rank"] == 1]
    assert list(top["column"]) == ["site"] * 3
    for _, rows in drivers.groupby("cluster"):
        assert rows["mean_abs_shap"].iloc[0] > 5 * rows["mean_abs_shap"].iloc[1]
    attrs = drivers.attrs
    assert attrs["cv_accuracy"] > 0.8 and attrs["cv_accuracy"] > attrs["baseline_accuracy"] + 0.4
    assert attrs["n_rows_used"] == n - 4 and attrs["n_rows_unlabelled"] == 4
    assert "accession" in attrs["skipped_columns"]


def test_cluster_drivers_report_each_fold_and_score_as_cross_val_score_does() -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from core.metadata import encode_metadata

    rng = np.random.default_rng(2)
    metadata = pd.DataFrame({"site": rng.choice(["A", "B"], 120), "age": rng.normal(60, 15, 120)})
    clusters = np.where(metadata["site"] == "A", 0, 1)
    clusters[rng.random(120) < 0.2] = 2
    seen: list[tuple[float, str]] = []
    drivers = cluster_drivers(metadata, clusters, n_estimators=20,
                              progress=lambda fraction, message: seen.append((fraction, message)))
    messages = [m for _, m in seen]
    assert [m for m in messages if m.startswith("cross-validation")] == [
        f"cross-validation fold {i} of 5 done" for i in range(1, 6)]
    assert messages[-2:] == ["SHAP values of 0 of 120 rows", "SHAP values done"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] > 0 and fractions[-1] < 1
    # The fold-by-fold loop scores exactly as scikit-learn's cross_val_score.
    forest = RandomForestClassifier(n_estimators=20, max_depth=8, min_samples_leaf=2, class_weight="balanced",
                                    random_state=0, n_jobs=1)
    expected = cross_val_score(forest, encode_metadata(metadata).matrix, clusters,
                               cv=StratifiedKFold(5, shuffle=True, random_state=0), scoring="accuracy")
    assert drivers.attrs["cv_accuracy"] == pytest.approx(expected.mean())
    assert drivers.attrs["cv_accuracy_std"] == pytest.approx(expected.std())


def test_cluster_drivers_of_many_rows_learn_from_a_stratified_sample_and_say_so() -> None:
    rng = np.random.default_rng(3)
    n = 600
    site = rng.choice(["A", "B", "C"], n, p=[0.6, 0.35, 0.05])
    clusters = pd.Series(site).map({"A": 0, "B": 1, "C": 2}).to_numpy()
    metadata = pd.DataFrame({"site": site, "age": rng.normal(60, 15, n)})
    seen: list[str] = []
    drivers = cluster_drivers(metadata, clusters, n_estimators=20, fit_max_rows=300, shap_max_rows=120,
                              progress=lambda fraction, message: seen.append(message))
    attrs = drivers.attrs
    assert attrs["n_rows_used"] == pytest.approx(300, abs=3) and attrs["n_rows_shap"] == pytest.approx(120, abs=3)
    assert attrs["notes"][:2] == [f"the forest learned from a sample of {attrs['n_rows_used']:,} of the 600 rows "
                                  "(stratified by cluster)",
                                  f"mean |SHAP| over a sample of {attrs['n_rows_shap']:,} rows (stratified by cluster)"]
    assert set(drivers["cluster"]) == {0, 1, 2}  # the 5% cluster is in the sample too
    assert list(drivers[drivers["rank"] == 1]["column"]) == ["site"] * 3
    assert attrs["baseline_accuracy"] == pytest.approx((clusters == 0).mean())  # over every row
    assert f"SHAP values of 0 of {attrs['n_rows_shap']} rows" in seen
    everything = cluster_drivers(metadata, clusters, n_estimators=20, fit_max_rows=None, shap_max_rows=None)
    assert everything.attrs["n_rows_used"] == everything.attrs["n_rows_shap"] == 600
    assert everything.attrs["notes"] == []


def test_cluster_drivers_report_low_accuracy_when_metadata_says_nothing() -> None:
    rng = np.random.default_rng(1)
    metadata = pd.DataFrame({"age": rng.normal(60, 15, 200), "sex": rng.choice(["M", "F"], 200)})
    drivers = cluster_drivers(metadata, rng.integers(0, 3, 200))
    assert drivers.attrs["cv_accuracy"] < drivers.attrs["baseline_accuracy"] + 0.15


def test_cluster_drivers_reject_bad_inputs() -> None:
    metadata = pd.DataFrame({"age": np.arange(10.0)})
    with pytest.raises(ValueError, match="at least two clusters"):
        cluster_drivers(metadata, [1] * 10)
    with pytest.raises(ValueError, match="cluster_labels has 9 values"):
        cluster_drivers(metadata, [0, 1] * 4 + [0])
    with pytest.raises(ValueError, match="no usable metadata columns"):
        cluster_drivers(pd.DataFrame({"site": ["A"] * 10}), [0, 1] * 5)


# ---------------------------------------------------------------- Grad-CAM


@pytest.mark.slow
def test_gradcam_on_a_real_xray_finds_the_planted_evidence(patch_head, wide_xray) -> None:
    patched, mask = add_patch(wide_xray)
    heatmap = gradcam_heatmap(patched, "efficientnet-lite0", patch_head.coef_,
                              patch_head.intercept_, 1, device="cpu")
    assert heatmap.shape == wide_xray.shape and heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1
    assert heatmap.std() > 0.05
    assert mask.ravel()[np.argmax(heatmap)]
    assert heatmap[mask].mean() > 3 * heatmap[~mask].mean()
    # Outside the centred square the model never saw the image: no evidence there.
    top, left, side = centre_square(wide_xray.shape)
    assert left > 0 and not heatmap[:, :left].any() and not heatmap[:, left + side:].any()


@pytest.mark.slow
def test_gradcam_changes_with_the_target_class_and_the_head(effnet, patch_head, wide_xray) -> None:
    patched, mask = add_patch(wide_xray)
    patch_class = gradcam_with_encoder(patched, effnet, patch_head.coef_, patch_head.intercept_, 1)
    other_class = gradcam_with_encoder(patched, effnet, patch_head.coef_, patch_head.intercept_, 0)
    assert np.corrcoef(patch_class.ravel(), other_class.ravel())[0, 1] < 0.3
    assert other_class[mask].mean() < patch_class[mask].mean() / 3
    rng = np.random.default_rng(0)
    random_head = rng.normal(size=(2, effnet.spec.dim)).astype(np.float32) * 0.05
    unrelated = gradcam_with_encoder(patched, effnet, random_head, None, 1)
    assert np.abs(unrelated - patch_class).mean() > 0.05


@pytest.mark.slow
def test_cam_network_pools_exactly_the_encoder_embedding(effnet, wide_xray) -> None:
    """The wrapped network must reproduce each encoder's vector, so the CAM explains the
    model the head was trained on (random weights stand in where the file is not here)."""
    import torchvision
    import torchxrayvision as xrv

    from core.encoders import ImageEncoder, get_spec

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    resnet.fc = torch.nn.Identity()
    encoders = [effnet]
    for name, model in (("resnet18", resnet),
                        ("densenet121-xrv", xrv.models.DenseNet(weights=None))):
        encoders.append(ImageEncoder(get_spec(name), device=torch.device("cpu"), model=model.eval()))
    for encoder in encoders:
        head = np.random.default_rng(1).normal(size=(3, encoder.spec.dim)).astype(np.float32)
        network = build_cam_network(encoder, head, np.zeros(3))
        batch = encoder.preprocess(wide_xray)[None]
        with torch.no_grad():
            pooled = network.pooled(batch).numpy()
        np.testing.assert_allclose(pooled, encoder.embed_batch(batch), rtol=1e-4, atol=1e-4)
        heatmap = gradcam_with_encoder(wide_xray, encoder, head, None, 2)
        assert heatmap.shape == wide_xray.shape and np.isfinite(heatmap).all()


def test_gradcam_refuses_encoders_without_conv_layers() -> None:
    head = np.zeros((2, 288), dtype=np.float32)
    for name in ("pixels", "minilm"):
        with pytest.raises(ValueError, match="no conv layers") as error:
            gradcam_heatmap(np.zeros((8, 8), np.float32), name, head, None, 0)
        for supported in SUPPORTED_CAM_ENCODERS:
            assert supported in str(error.value)
    with pytest.raises(ValueError, match="unknown encoder 'vit'"):
        gradcam_heatmap(np.zeros((8, 8), np.float32), "vit", head, None, 0)


def test_gradcam_rejects_bad_heads_before_loading_a_model() -> None:
    image = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match=r"head_weights must have shape \(n_classes, 1280\)"):
        gradcam_heatmap(image, "efficientnet-lite0", np.zeros((2, 10)), None, 0)
    with pytest.raises(ValueError, match=r"head_bias must have shape \(2,\)"):
        gradcam_heatmap(image, "efficientnet-lite0", np.zeros((2, 1280)), np.zeros(3), 0)
    with pytest.raises(ValueError, match="target_class=2 must be an integer in 0..1"):
        gradcam_heatmap(image, "efficientnet-lite0", np.zeros((2, 1280)), None, 2)


def test_overlay_blends_jet_colours_over_the_scan() -> None:
    image = np.full((2, 3), 0.5, dtype=np.float32)
    heatmap = np.array([[0.0, 0.5, 1.0], [0.0, 0.5, 1.0]], dtype=np.float32)
    assert overlay_heatmap(image, heatmap, alpha=0.0).tolist() == [[[128] * 3] * 3] * 2
    colours = overlay_heatmap(image, heatmap, alpha=1.0)
    assert colours.shape == (2, 3, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == [[0, 0, 128], [128, 255, 128], [128, 0, 0]]
    with pytest.raises(ValueError, match="heatmap shape"):
        overlay_heatmap(image, heatmap[:, :2])
    with pytest.raises(ValueError, match="alpha=1.5"):
        overlay_heatmap(image, heatmap, alpha=1.5)


# ---------------------------------------------------------------- similar cases


@pytest.mark.slow
def test_flipped_copy_is_the_nearest_case(effnet, xray_table, xray_images, xray_embeddings) -> None:
    flipped = embed(effnet, [np.ascontiguousarray(xray_images[0][:, ::-1])])
    ids = list(xray_table["filename"]) + ["flipped copy"]
    search = SimilarCases(metric="cosine").fit(np.vstack([xray_embeddings, flipped]), ids)
    answer = search.query(0, k=5)
    assert list(answer["rank"]) == [1, 2, 3, 4, 5]
    assert answer["id"].iloc[0] == "flipped copy"
    assert xray_table["filename"].iloc[0] not in set(answer["id"])
    assert answer["distance"].iloc[0] < 0.5 * answer["distance"].iloc[1]
    assert answer["distance"].is_monotonic_increasing


def test_similar_cases_skip_nan_rows_but_keep_ids_aligned() -> None:
    vectors = np.array([[0.0, 0.0], [np.nan, 1.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0],
                        [3.0, 4.0]])
    ids = ["a", "b", "c", "d", "e", "f"]
    search = SimilarCases(metric="euclidean").fit(vectors, ids)
    assert search.excluded_ids_ == ["b"]
    answer = search.query(0, k=4)
    assert list(answer["id"]) == ["e", "c", "d", "f"]  # "e" duplicates "a": a real answer
    assert list(answer["row"]) == [4, 2, 3, 5]
    np.testing.assert_allclose(answer["distance"], [0.0, 1.0, 2.0, 5.0])
    by_vector = search.query(np.array([3.0, 3.0]), k=2)
    assert list(by_vector["id"]) == ["f", "d"]
    np.testing.assert_allclose(by_vector["distance"], [1.0, np.hypot(3, 1)])
    with pytest.raises(ValueError, match="row 1 \\(id 'b'\\) has no vector"):
        search.query(1)
    with pytest.raises(ValueError, match="k=5 must be an integer in 1..4"):
        search.query(0, k=5)


def test_similar_cases_reject_bad_inputs() -> None:
    with pytest.raises(ValueError, match="metric='jaccard' is not supported"):
        SimilarCases(metric="jaccard").fit(np.ones((3, 2)))
    with pytest.raises(ValueError, match="ids has 2 values but vectors has 3 rows"):
        SimilarCases().fit(np.ones((3, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="all 2 vectors contain NaN"):
        SimilarCases().fit(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="not fitted"):
        SimilarCases().query(0)
    search = SimilarCases().fit(np.eye(3))
    with pytest.raises(ValueError, match="vector of length 3"):
        search.query(np.ones(2))
    with pytest.raises(ValueError, match="row=7 must be in 0..2"):
        search.query(7)
    assert list(search.query(np.array([1.0, 0.1, 0.0]), k=1)["id"]) == [0]


def test_explain_package_imports_without_torch_or_streamlit() -> None:
    import subprocess
    import sys

    code = ("import sys, core.explain; "
            "print('torch' in sys.modules, 'streamlit' in sys.modules, 'shap' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[3]).stdout
    assert output.split() == ["False", "False", "False"]


def test_lazy_gradcam_names_resolve() -> None:
    import core.explain

    assert core.explain.gradcam_heatmap is gradcam_heatmap
    with pytest.raises(AttributeError):
        _ = core.explain.no_such_name
