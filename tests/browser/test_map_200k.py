"""The Map with 200,000 points in headless Chromium: every point drawn (counted in the page), a
lasso of about 1,000 points reaches the page as that many selected rows, listed without pixels; the
WebGL canvas is drawn at one pixel per CSS pixel (``ui.charts.LARGE_MAP_GL_PIXEL_RATIO``).

The dataset is synthetic vectors imported as a dataset (``core.ingest.synthetic``, seconds to
make; the issue-12 generator). Its PCA map and k-means clustering are computed once on the
server (seconds at 200k), never UMAP. No wall-clock assertion: ``benchmarks/bench_map.py``
measures the times.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

N_POINTS = 200_000


@pytest.fixture(scope="module")
def big_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.ingest.synthetic import make_synthetic_dataset

    cache = tmp_path_factory.mktemp("map-200k-cache")
    make_synthetic_dataset(cache / "datasets" / "synthetic-200k", N_POINTS)
    return cache


def test_the_map_draws_200k_points_and_a_lasso_selection_reaches_the_page(big_cache, start_server, new_tab, map_tools) -> None:
    server = start_server(cache=big_cache)
    started = time.monotonic()
    with new_tab() as tab:
        frames = map_tools.FrameCounter().attach(tab)
        map_tools.open_map(tab, server.base, "dataset=synthetic-200k&encoder=synthetic-vectors&level=image&method=pca",
                       N_POINTS, timeout_s=110)
        # The map is drawn before the 200k clustering is in (it runs in a worker process); when it
        # is, the page reruns and the map recolours by cluster, which would wipe a lasso made
        # meanwhile. Check and lasso the finished map.
        map_tools.wait_clustered(tab)
        map_tools.wait_idle(tab)
        print(f"map drawn and clustered {time.monotonic() - started:.1f} s after the server started")
        assert map_tools.drawn_points(tab) == N_POINTS
        caption = tab.get_by_text("200,000 images · synthetic-vectors · PCA")
        assert caption.count() == 1
        # The figure went as packed float32 and without a text per point: a few MB, not 17.
        assert frames.received < 40 * N_POINTS
        # Drawn at one WebGL pixel per CSS pixel (the page passed plotGlPixelRatio 1): Plotly's
        # default 2x canvas makes every redraw, and so every lasso, fill four times the fragments.
        canvas = tab.evaluate("""() => { const c = document.querySelector('CHART canvas.gl-canvas-context');
                                         return [c.width, parseFloat(c.style.width)]; }""".replace("CHART", map_tools.CHART))
        assert canvas[0] == canvas[1] > 100, canvas

        found = map_tools.lasso(tab, frames, target=1000, steps=1)  # each mouse move redraws the map
        print(f"lasso done {time.monotonic() - started:.1f} s after the server started: {found}")
        assert 800 <= found.expected <= 1300, found
        # The page's count is the lassoed points (a point within 1.5 px of the edge may go either way).
        assert found.expected_low <= found.selected <= found.expected_high, found
        # The selection table lists the selected rows; the dataset has no pixels and says so.
        table = tab.locator('[data-testid="stDataFrame"]').first
        table.wait_for()
        assert tab.get_by_text("This dataset has no images", exact=False).count() >= 1
        # Selecting did not send the map again.
        assert found.bytes_received < 5 * N_POINTS
        assert not tab.locator('[data-testid="stException"]').count()
        assert not tab.problems, tab.problems
