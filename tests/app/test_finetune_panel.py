"""The Classifiers page's fine-tuning panel (``ui.finetune.panel``) rendered with AppTest on the
demo cohort: controls for a role that may start a run, the binary-only hint, and no errors."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _panel_app(dataset_root: str, positive: str | None) -> None:
    from core.ingest import load_dataset
    from ui import finetune

    finetune.panel(load_dataset(dataset_root), target="label", positive=positive, encoder="efficientnet-lite0")


def test_panel_offers_a_run_and_explains_binary_only(demo_dataset, cache_env):
    at = AppTest.from_function(_panel_app, args=(str(demo_dataset.root), "Normal"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.button(key="classifiers_ft_start").label == "Fine-tune efficientnet-lite0"
    assert at.selectbox(key="classifiers_ft_size").value == 224
    assert any("No saved fine-tuning run" in c.value for c in at.caption)

    at = AppTest.from_function(_panel_app, args=(str(demo_dataset.root), None), default_timeout=120).run()
    assert not at.exception
    assert any("Fine-tuning is binary" in i.value for i in at.info)
