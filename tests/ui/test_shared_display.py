"""What every session shares on Map and Clusters: a ``SharedFigure`` sends exactly what the
figure it wraps would, and a gallery JPEG is the scan's thumbnail (pixelated when asked)."""

from __future__ import annotations

import io

import numpy as np
import plotly.graph_objects as go
import plotly.io
import plotly.tools
from PIL import Image

from core.deid import obscure_image
from ui import charts, data, widgets


def test_a_shared_figure_sends_what_its_figure_would_and_builds_that_once():
    rng = np.random.default_rng(0)
    figure = charts.readable(go.Figure([
        go.Scattergl(x=rng.normal(size=50), y=rng.normal(size=50), mode="markers", name="C0",
                     text=[f"p{i}" for i in range(50)], customdata=[[i] for i in range(50)]),
        go.Scattergl(x=rng.normal(size=7), y=rng.normal(size=7), mode="markers", name="other"),
    ]))
    shared = charts.SharedFigure(figure)
    # What st.plotly_chart does with a figure: to_dict (validated), then to_json.
    sent = plotly.tools.return_figure_from_figure_or_data(shared, validate_figure=True)
    assert plotly.io.to_json(sent, validate=False) == plotly.io.to_json(figure.to_dict(), validate=False)
    assert shared.to_dict() is shared.to_dict()  # made once, not per rerun
    assert sent["data"][0]["customdata"][:3] == [[0], [1], [2]]  # lists: selections return [row]


def test_a_gallery_jpeg_is_the_thumbnail_and_pixelated_when_obscured(tmp_path):
    gradient = np.tile(np.linspace(0, 255, 300, dtype=np.float32), (200, 1))
    gradient[40:60, 30:270] = 255  # a bright band, like burned-in text
    path = tmp_path / "scan.png"
    Image.fromarray(gradient.astype(np.uint8)).save(path)
    thumbnail = data.thumbnail(str(path), 0)
    assert thumbnail is not None

    def decoded(jpeg: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=float)

    plain = widgets.thumbnail_jpeg(str(path), 0, False)
    hidden = widgets.thumbnail_jpeg(str(path), 0, True)
    assert plain is widgets.thumbnail_jpeg(str(path), 0, False)  # encoded once for every session
    assert np.abs(decoded(plain) - thumbnail * 255).max() <= 3
    assert np.abs(decoded(hidden) - obscure_image(thumbnail) * 255).max() <= 3
    assert np.abs(decoded(hidden) - decoded(plain)).max() > 50
    assert widgets.thumbnail_jpeg(str(tmp_path / "missing.png"), 0, False) is None


def test_the_gallery_columns_are_unique_and_hold_what_a_caption_needs():
    from core.columns import DESCRIBING_COLUMNS

    assert len(set(widgets.GALLERY_COLUMNS)) == len(widgets.GALLERY_COLUMNS)  # else pandas drops some
    assert {"path", "frame", "burned_in_annotation", *DESCRIBING_COLUMNS} <= set(widgets.GALLERY_COLUMNS)
