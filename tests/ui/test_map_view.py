"""The Map's figure at scale: coordinates packed as float32 without per-point row ids, a
selection mapped back to table rows (and hostile selections ignored), hover text only up to
``HOVER_TEXT_MAX_POINTS`` points."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import plotly.io
import plotly.tools

from ui import charts


def a_table(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"patient_id": [f"P{i:05d}" for i in range(n)],
                          "label": rng.choice(["normal", "effusion", "nodule"], n),
                          "age": rng.integers(20, 90, n).astype(float)})
    coords = rng.normal(size=(n, 2))
    coords[3] = np.nan  # a row without a vector is not drawn
    return table, coords


def sent(view: charts.MapView) -> dict:
    """What st.plotly_chart sends for the view's figure."""
    figure = plotly.tools.return_figure_from_figure_or_data(view.figure, validate_figure=True)
    return json.loads(plotly.io.to_json(figure, validate=False))


def unpack(array: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])


def test_points_go_as_float32_and_a_selection_comes_back_as_table_rows() -> None:
    table, coords = a_table(500)
    view = charts.map_figure("t-small", "c", "k", "p", "label", 2, table, coords)
    assert view.n_plotted == 499
    traces = sent(view)["data"]
    assert all(t["x"]["dtype"] == "f4" and t["y"]["dtype"] == "f4" and "customdata" not in t for t in traces)
    for curve, trace in enumerate(traces):
        rows = view.trace_rows[curve]
        assert (table["label"].iloc[rows] == trace["name"]).all()
        assert np.array_equal(unpack(trace["x"]), coords[rows, 0].astype(np.float32))
    assert sorted(np.concatenate(view.trace_rows).tolist()) == [r for r in range(500) if r != 3]
    points = [{"curve_number": 1, "point_index": 2}, {"curve_number": 0, "point_index": 0},
              {"curve_number": 0, "point_index": 0}]
    assert view.selected_rows(points) == sorted({int(view.trace_rows[1][2]), int(view.trace_rows[0][0])})
    # Hover: who the point is, as text per point (small map).
    assert traces[0]["text"][0].startswith("patient_id: P") and traces[0]["hovertemplate"] == "%{text}<extra></extra>"


def test_a_selection_the_map_does_not_hold_is_ignored() -> None:
    table, coords = a_table(100, seed=1)
    view = charts.map_figure("t-hostile", "c", "k", "p", "label", 2, table, coords)
    hostile = [{"curve_number": 99, "point_index": 0}, {"curve_number": 0, "point_index": -1},
               {"curve_number": 0, "point_index": 10**9}, {"curve_number": "0", "point_index": 0},
               {"point_index": 0}, {"curve_number": 0, "point_index": 1.5}]
    assert view.selected_rows(hostile) == []


def test_a_large_map_sends_no_text_per_point(monkeypatch) -> None:
    monkeypatch.setattr(charts, "HOVER_TEXT_MAX_POINTS", 50)
    table, coords = a_table(400, seed=2)
    traces = sent(charts.map_figure("t-large", "c", "k", "p", "label", 2, table, coords))["data"]
    assert all("text" not in t and t["hovertemplate"] == f"label: {t['name']}<extra></extra>" for t in traces)
    numeric = sent(charts.map_figure("t-large", "c", "k", "p", "age", 2, table, coords))["data"]
    assert numeric[0]["marker"]["color"]["dtype"] == "f4" and "text" not in numeric[0]
    assert len(json.dumps(numeric)) < 400 * 16 + 1500  # x, y, colour: 12 bytes a point, 16 in base64


def test_a_large_map_is_drawn_at_one_webgl_pixel_per_css_pixel(monkeypatch) -> None:
    """Above HOVER_TEXT_MAX_POINTS the page passes Plotly's plotGlPixelRatio 1 (a quarter of the
    fragments of the default 2x canvas on every redraw); a small map keeps Plotly's default."""
    table, coords = a_table(400, seed=3)
    small = charts.map_figure("t-ratio", "c", "k", "p", "label", 2, table, coords)
    assert small.config == {}
    monkeypatch.setattr(charts, "HOVER_TEXT_MAX_POINTS", 50)
    large = charts.map_figure("t-ratio-large", "c", "k", "p", "label", 2, table, coords)
    assert large.config == {"plotGlPixelRatio": charts.LARGE_MAP_GL_PIXEL_RATIO} == {"plotGlPixelRatio": 1}
    # The figure itself is the same kind of figure: every point, float32, smaller markers.
    traces = sent(large)["data"]
    assert sum(len(unpack(t["x"])) for t in traces) == 399
    assert {t["marker"]["size"] for t in traces} == {2}
