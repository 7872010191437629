"""Fine-tuning on real covid-chestxray X-rays: tiny runs (small images, few patients, 1-3 epochs)
that check the outputs, the checkpoint resume, the derived encoder and the refusals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from core.auth import User, local_user
from core.encoders import WeightsUnavailableError, get_encoder, get_spec
from core.encoders.weights import ensure_weights
from core.finetune.data import Augmentation, ImageBank, augment
from core.finetune.train import (
    FineTuneCancelled,
    FineTuneNet,
    TrainSettings,
    load_checkpoint,
    precision_for,
    predict,
    train_split,
)

ADMIN = local_user(source="cli")
SIZE = 64  # small images keep the CPU cost of these tests low


@pytest.fixture(scope="module")
def xrays(covid_dir, tmp_path_factory):
    """12 COVID-19 and 12 other patients, one X-ray each: real files of the shared collection,
    copied into a temp folder with their metadata rows and ingested (faster than all 646)."""
    import shutil

    from core.ingest import ingest

    metadata = pd.read_csv(covid_dir / "metadata.csv")
    present = metadata["filename"].map(lambda name: (covid_dir / "images" / str(name)).is_file())
    rows = metadata[present & (metadata["modality"] == "X-ray")].drop_duplicates("patientid")
    picked = pd.concat([rows[rows["finding"] == "COVID-19"].head(12), rows[rows["finding"] != "COVID-19"].head(12)])
    source = tmp_path_factory.mktemp("covid-small")
    (source / "images").mkdir()
    for name in picked["filename"]:
        shutil.copy(covid_dir / "images" / name, source / "images" / name)
    picked.to_csv(source / "metadata.csv", index=False)
    dataset = ingest(source, tmp_path_factory.mktemp("covid-small-dataset")).dataset
    assert len(dataset.images) == 24 and dataset.images["label"].eq("COVID-19").sum() == 12
    return dataset


@pytest.fixture(scope="module")
def bank(xrays):
    spec = get_spec("efficientnet-lite0")
    images = xrays.images
    bank = ImageBank(images["path"].tolist(), images["frame"].tolist(),
                     replace(spec.preprocessing, input_size=SIZE))
    assert bank.preload(range(len(images))) == []
    return bank


def _net(seed: int = 0) -> FineTuneNet:
    spec = get_spec("efficientnet-lite0")
    torch.manual_seed(seed)
    return FineTuneNet(spec, spec.build(spec, ensure_weights(spec).path, torch.device("cpu")))


def _labels(xrays) -> np.ndarray:
    return (xrays.images["label"] == "COVID-19").to_numpy().astype(np.int64)


def test_augment_flips_and_rotates_reproducibly():
    batch = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    flipped = augment(batch, Augmentation(flip_probability=1.0, max_rotation=0.0), torch.Generator().manual_seed(0))
    assert torch.allclose(flipped, torch.flip(batch, dims=[-1]), atol=1e-4)
    same = augment(batch, Augmentation(flip_probability=0.0, max_rotation=0.0), torch.Generator().manual_seed(0))
    assert torch.equal(same, batch)
    rotated = [augment(batch, Augmentation(0.0, 10.0), torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(rotated[0], rotated[1]) and not torch.allclose(rotated[0], batch)
    with pytest.raises(ValueError, match="max_rotation=90"):
        Augmentation(max_rotation=90)


def test_bank_reports_an_undecodable_image_and_keeps_the_rest(tmp_path, xrays):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths = [str(broken), xrays.images["path"].iloc[0]]
    bank = ImageBank(paths, [0, 0], replace(get_spec("efficientnet-lite0").preprocessing, input_size=SIZE))
    batch, kept = bank.batch([0, 1])
    assert kept == [1] and batch.shape == (1, 3, SIZE, SIZE)
    assert 0 in bank.failures and bank.failures[0]


def test_training_lowers_the_loss_on_real_xrays(xrays, bank):
    y = _labels(xrays)
    rows = np.arange(len(y))
    net = _net()
    loss = torch.nn.functional.binary_cross_entropy

    def training_loss() -> float:
        p = predict(net, bank, rows, device=torch.device("cpu"), batch_size=8)
        return float(loss(torch.as_tensor(p).clamp(1e-6, 1 - 1e-6), torch.as_tensor(y, dtype=torch.float64)))

    before = training_loss()
    settings = TrainSettings(epochs=3, patience=3, batch_size=8, lr=1e-3, head_lr=1e-2,
                             augmentation=Augmentation(0.0, 0.0))
    result = train_split("fit", net, bank, y, train_rows=rows, val_rows=rows, predict_rows=rows,
                         settings=settings, device=torch.device("cpu"))
    net.load_state_dict(result.state)
    after = training_loss()
    assert after < before, (before, after)
    assert ((result.probabilities >= 0) & (result.probabilities <= 1)).all()
    assert len(result.history) == 3 and 1 <= result.best_epoch <= 3


def test_a_cancelled_split_resumes_from_its_checkpoint(tmp_path, xrays, bank):
    y = _labels(xrays)
    rows = np.arange(len(y))
    train, val = rows[::2], rows[1::2]
    settings = TrainSettings(epochs=2, patience=2, batch_size=6)
    checkpoint = tmp_path / "fold0.pt"
    seen: list[int] = []

    def on_epoch(result) -> None:
        seen.append(result.epoch)

    with pytest.raises(FineTuneCancelled, match="resumes"):
        train_split("fold0", _net(), bank, y, train_rows=train, val_rows=val, predict_rows=val,
                    settings=settings, device=torch.device("cpu"), checkpoint=checkpoint,
                    on_epoch=on_epoch, cancel=lambda: bool(seen))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)  # plain tensors and values
    assert saved["epoch"] == 1 and seen == [1]
    assert load_checkpoint(checkpoint)["history"][0]["epoch"] == 1

    result = train_split("fold0", _net(seed=1), bank, y, train_rows=train, val_rows=val, predict_rows=val,
                         settings=settings, device=torch.device("cpu"), checkpoint=checkpoint, on_epoch=on_epoch)
    assert result.resumed_from == 1
    assert seen == [1, 2]  # only epoch 2 ran again
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[0] == saved["history"][0]
    assert np.isfinite(result.probabilities).all()

    checkpoint.write_bytes(b"damaged")  # a damaged checkpoint is ignored, never trusted
    assert load_checkpoint(checkpoint) is None


def test_mixed_precision_only_on_cuda():
    assert precision_for(torch.device("cpu")) == (None, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_mixed_precision_split(xrays, bank):
    y = _labels(xrays)
    rows = np.arange(len(y))
    device = torch.device("cuda")
    dtype, _ = precision_for(device)
    assert dtype in (torch.bfloat16, torch.float16)
    result = train_split("cuda", _net(), bank, y, train_rows=rows, val_rows=rows, predict_rows=rows,
                         settings=TrainSettings(epochs=1, batch_size=8), device=device)
    assert ((result.probabilities >= 0) & (result.probabilities <= 1)).all()


@pytest.fixture(scope="module")
def study(xrays, cache_env):
    from core.finetune.study import finetune_study

    epochs = []
    result = finetune_study(xrays, user=ADMIN, encoder="efficientnet-lite0", positive="COVID-19",
                            epochs=1, image_size=SIZE, batch_size=8, n_splits=2, n_bootstrap=50,
                            device="cpu", on_epoch=epochs.append)
    return result, epochs


def test_study_is_one_more_row_on_the_same_folds(study, xrays):
    from core.classify import evaluate, prepare_target
    from core.embed import embed_dataset

    result, epochs = study
    assert [e.split for e in epochs] == ["fold0", "fold1", "final"]
    assert not result.from_store
    target = prepare_target(xrays.images, "label", positive="COVID-19")
    vectors = embed_dataset(xrays, "efficientnet-lite0").vectors
    frozen = evaluate(vectors, target, xrays.images["patient_id"].astype(str).to_numpy(),
                      n_splits=2, n_bootstrap=50)
    assert np.array_equal(result.folds, frozen.folds)
    assert result.frozen_auc == pytest.approx(frozen.mean_auc)
    table = result.comparison.set_index("modality")
    assert len(table) == 2 and table["n_rows"].nunique() == 1
    assert {"auc_lo", "auc_hi", "f1_lo", "f1_hi"} <= set(table.columns)
    evaluated = result.folds >= 0
    p = result.probability[evaluated]
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert np.isnan(result.probability[~evaluated]).all()
    row = table.loc[[m for m in table.index if m.startswith("fine-tuned")][0]]
    assert row["auc_lo"] <= row["mean_auc"] <= row["auc_hi"]


def test_study_is_a_saved_run_and_is_reused(study, xrays):
    from core.finetune.study import finetune_runs, finetune_study
    from core.runs import RunStore

    result, _ = study
    run = RunStore().load("finetune", result.key)
    assert run is not None and run.summary["derived_encoder"] == result.encoder_name
    again = finetune_study(xrays, user=ADMIN, encoder="efficientnet-lite0", positive="COVID-19", epochs=1,
                           image_size=SIZE, batch_size=8, n_splits=2, n_bootstrap=50, device="cpu")
    assert again.from_store and again.key == result.key
    assert np.array_equal(again.folds, result.folds)
    assert [r.key for r in finetune_runs(xrays)] == [result.key]
    assert not (RunStore().root.parent / "finetune" / result.key).exists()  # checkpoints cleaned up


def test_derived_encoder_embeds_and_differs_from_the_base(study, xrays):
    from core.embed import embed_dataset
    from core.encoders import ENCODERS, clear_model_cache
    from core.finetune import register_finetuned_encoders

    result, _ = study
    name = result.encoder_name
    assert name.startswith("efficientnet-lite0-ft-")
    ENCODERS.pop(name)  # as in a fresh process: found again from the run store
    clear_model_cache()
    assert name in register_finetuned_encoders()
    spec = get_spec(name)
    assert spec.input_size == SIZE and result.key[-20:-8] in spec.version and spec.dim == 1280
    few = replace(xrays, images=xrays.images.head(4))
    tuned = embed_dataset(few, name)
    assert tuned.vectors.shape == (4, 1280) and np.isfinite(tuned.vectors).all()
    base_encoder = get_encoder("efficientnet-lite0")
    tensors = torch.stack([bank_tensor(p, SIZE) for p in few.images["path"]])
    base = base_encoder.spec.forward(base_encoder.model, tensors).numpy()
    assert not np.allclose(tuned.vectors, base, atol=1e-3)
    assert tuned.namespace != embed_dataset(few, "efficientnet-lite0").namespace


def bank_tensor(path: str, size: int) -> torch.Tensor:
    from core.encoders.image import preprocess_image
    from core.pixels import load_pixels

    return preprocess_image(load_pixels(path, 0, min_size=size),
                            replace(get_spec("efficientnet-lite0").preprocessing, input_size=size))


@pytest.mark.parametrize("encoder, variable", [("resnet18", "SCANATLAS_RESNET18_WEIGHTS"),
                                                ("densenet121-xrv", "SCANATLAS_XRV_WEIGHTS")])
def test_missing_weights_fail_with_the_registry_message(xrays, tmp_path, monkeypatch, encoder, variable):
    from core.finetune.study import finetune_study

    monkeypatch.setenv(variable, str(tmp_path / "absent.pt"))
    with pytest.raises(WeightsUnavailableError, match="absent.pt"):
        finetune_study(xrays, user=ADMIN, encoder=encoder, positive="COVID-19", device="cpu")


def test_refusals(xrays):
    from core.finetune.study import finetune_study

    viewer = User(id="t|viewer", email="v@x.org", name="v", role="viewer", source="test")
    with pytest.raises(PermissionError, match="fine-tune"):
        finetune_study(xrays, user=viewer, encoder="efficientnet-lite0", positive="COVID-19")
    with pytest.raises(ValueError, match="no trainable network"):
        finetune_study(xrays, user=ADMIN, encoder="pixels", positive="COVID-19")
    with pytest.raises(ValueError, match="binary target"):
        finetune_study(xrays, user=ADMIN, encoder="efficientnet-lite0", positive=None)
    with pytest.raises(ValueError, match="epochs=0"):
        finetune_study(xrays, user=ADMIN, encoder="efficientnet-lite0", positive="COVID-19", epochs=0)
    with pytest.raises(ValueError, match="unknown encoder"):
        finetune_study(xrays, user=ADMIN, encoder="nope", positive="COVID-19")


def test_a_killed_study_continues_from_its_checkpoints(xrays, cache_env):
    from core.finetune.study import finetune_study
    from core.settings import cache_root

    options = {"user": ADMIN, "encoder": "efficientnet-lite0", "positive": "COVID-19", "epochs": 1,
               "image_size": 32, "batch_size": 8, "n_splits": 2, "n_bootstrap": 20,
               "final_model": False, "device": "cpu"}
    first: list = []
    with pytest.raises(FineTuneCancelled):
        finetune_study(xrays, on_epoch=first.append, cancel=lambda: bool(first), **options)
    assert [(e.split, e.epoch) for e in first] == [("fold0", 1)]
    (folder,) = [p for p in (cache_root() / "finetune").iterdir() if p.name.startswith("finetune-")]
    assert (folder / "fold0.pt").is_file()  # the epoch is saved; its predictions were not made

    second: list = []
    result = finetune_study(xrays, on_epoch=second.append, **options)
    assert [(e.split, e.epoch) for e in second] == [("fold1", 1)]  # fold0 was not trained again
    assert list(result.history["split"]) == ["fold0", "fold1"]
    assert np.isfinite(result.probability[result.folds >= 0]).all()
    assert result.encoder_name is None and not folder.exists()
