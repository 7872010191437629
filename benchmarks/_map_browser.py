"""The Map page in headless Chromium: open it, wait until every point is drawn, lasso about
``target`` points, wait until the selection reaches the page; count the websocket bytes.

Shared by ``benchmarks/bench_map.py`` and ``tests/browser/test_map_200k.py`` (loaded by file path:
benchmarks/ is not a package). The server side is ``benchmarks/_server.py``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
CHART = '[data-testid="stPlotlyChart"] .js-plotly-plot'

# Points drawn: the sum of every trace's length as Plotly computed it, once a WebGL canvas exists.
DRAWN_POINTS_JS = """() => {
  const gd = document.querySelector('CHART');
  if (!gd || !gd._fullData || !gd.querySelector('canvas.gl-canvas-context')) return -1;
  return gd._fullData.reduce((n, t) => n + (t.visible === true ? (t._length || 0) : 0), 0);
}""".replace("CHART", CHART)

# A square (in screen pixels) around one point of the first trace that holds about `target`
# points: its corners in page coordinates and how many points lie strictly inside it.
LASSO_SQUARE_JS = """(target) => {
  const gd = document.querySelector('CHART');
  const fl = gd._fullLayout, xa = fl.xaxis, ya = fl.yaxis;
  const box = gd.getBoundingClientRect();
  const px = [], py = [];
  for (const t of gd._fullData) {
    if (t.visible !== true) continue;
    for (let i = 0; i < t._length; i++) {
      px.push(box.left + xa._offset + xa.c2p(t.x[i]));
      py.push(box.top + ya._offset + ya.c2p(t.y[i]));
    }
  }
  // The centre: the point nearest the middle of the plot area, so the square stays inside it.
  const mx = box.left + xa._offset + xa._length / 2, my = box.top + ya._offset + ya._length / 2;
  let centre = 0, best = Infinity;
  for (let i = 0; i < px.length; i++) {
    const d = Math.abs(px[i] - mx) + Math.abs(py[i] - my);
    if (d < best) { best = d; centre = i; }
  }
  const cx = px[centre], cy = py[centre];
  const reach = px.map((x, i) => Math.max(Math.abs(x - cx), Math.abs(py[i] - cy))).sort((a, b) => a - b);
  const half = Math.max(4, Math.round(reach[Math.min(target, reach.length - 1)]));
  // Inside the square, and inside it shrunk / grown by 1.5 px: a point within a pixel or two of
  // the lasso's edge may go either way (Plotly's lasso test and the mouse path round).
  const count = (h) => {
    let n = 0;
    for (let i = 0; i < px.length; i++) if (Math.abs(px[i] - cx) < h && Math.abs(py[i] - cy) < h) n++;
    return n;
  };
  return {x0: cx - half, x1: cx + half, y0: cy - half, y1: cy + half, inside: count(half),
          inside_low: count(half - 1.5), inside_high: count(half + 1.5), total: px.length};
}""".replace("CHART", CHART)

# Page-side timestamps of a selection: mouse up, Plotly's "selected" event, the rerun starting
# (the selection reached the server) and ending.
SELECTION_CLOCK_JS = """() => {
  window.__selection = {};
  const mark = (name) => { if (!(name in window.__selection)) window.__selection[name] = performance.now(); };
  document.addEventListener('mouseup', () => mark('mouseup'), {capture: true, once: true});
  document.querySelector('CHART').on('plotly_selected', () => mark('plotly_selected'));
  const app = document.querySelector('[data-testid="stApp"]');
  new MutationObserver(() => mark(app.getAttribute('data-test-script-state') === 'running' ? 'running' : 'x'))
    .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}""".replace("CHART", CHART)

SELECTED = re.compile(r"^([\d,]+) \w+s? selected$")


@dataclass
class FrameCounter:
    """Bytes of every websocket frame the page received (what the server sent it)."""

    received: int = 0
    frames: list[int] = field(default_factory=list)

    def attach(self, page) -> FrameCounter:
        def on_socket(socket) -> None:
            socket.on("framereceived", self._add)
        page.on("websocket", on_socket)
        return self

    def _add(self, payload) -> None:
        size = len(payload.encode() if isinstance(payload, str) else payload)
        self.received += size
        self.frames.append(size)


def wait_idle(page, timeout_ms: float = 120_000) -> None:
    page.wait_for_selector(IDLE, timeout=timeout_ms)


def wait_clustered(page, timeout_ms: float = 240_000) -> None:
    """Wait until the Map's caption names the finished clustering ("clusters: kmeans (4)"). A
    large cohort's map is drawn before its clustering is in; when it is, the page reruns and
    recolours the map, which wipes a lasso made meanwhile."""
    page.get_by_text(re.compile(r"clusters: [\w-]+ \(\d+\)")).first.wait_for(timeout=timeout_ms)


def drawn_points(page) -> int:
    return int(page.evaluate(DRAWN_POINTS_JS))


def open_map(page, base: str, query: str, n_points: int, *, timeout_s: float = 110) -> float:
    """Open ``base/map?query`` and return the seconds until all ``n_points`` are drawn
    (``DRAWN_POINTS_JS``). Raises ``TimeoutError`` with the count reached."""
    started = time.perf_counter()
    page.goto(f"{base}/map?{query}")
    deadline = started + timeout_s
    count = -1
    while time.perf_counter() < deadline:
        count = drawn_points(page)
        if count == n_points:
            return time.perf_counter() - started
        if page.locator('[data-testid="stException"]').count():
            raise RuntimeError(f"the Map page shows an exception: {page.locator('[data-testid=stException]').first.inner_text()}")
        time.sleep(0.05)
    raise TimeoutError(f"{count} of {n_points} points drawn after {timeout_s:.0f} s")


@dataclass
class Lasso:
    expected: int  # points strictly inside the lassoed square, counted in the page
    expected_low: int  # ... inside the square shrunk by 1.5 px on every side
    expected_high: int  # ... inside the square grown by 1.5 px on every side
    selected: int  # the count the page reported back ("N patients selected")
    seconds: float  # mouse up -> the selection's table shown and the rerun finished
    bytes_received: int  # websocket bytes the server sent for that rerun
    selected_event_s: float | None = None  # mouse up -> Plotly's "selected" event
    rerun_started_s: float | None = None  # mouse up -> the rerun started (the selection reached the server)


def lasso(page, frames: FrameCounter, *, target: int = 1000, steps: int = 12, timeout_s: float = 110) -> Lasso:
    """Drag a lasso around a square holding about ``target`` points (the Map's default drag mode
    is lasso), then wait for the "N ... selected" heading and the end of the rerun."""
    square = page.evaluate(LASSO_SQUARE_JS, target)
    x0, x1, y0, y1 = square["x0"], square["x1"], square["y0"], square["y1"]
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    page.mouse.move(*corners[0])
    page.mouse.down()
    for (ax, ay), (bx, by) in zip(corners, corners[1:], strict=False):
        for step in range(1, steps + 1):
            page.mouse.move(ax + (bx - ax) * step / steps, ay + (by - ay) * step / steps)
    page.evaluate(SELECTION_CLOCK_JS)
    before = frames.received
    started = time.perf_counter()
    page.mouse.up()
    heading = page.get_by_role("heading", name=SELECTED)
    heading.wait_for(timeout=timeout_s * 1000)
    wait_idle(page, timeout_s * 1000)
    seconds = time.perf_counter() - started
    match = SELECTED.match(heading.inner_text().strip())
    clock = page.evaluate("() => window.__selection")
    since_up = {name: round((at - clock["mouseup"]) / 1000, 2) for name, at in clock.items() if "mouseup" in clock}
    return Lasso(int(square["inside"]), int(square["inside_low"]), int(square["inside_high"]),
                 int(match.group(1).replace(",", "")), seconds, frames.received - before,
                 since_up.get("plotly_selected"), since_up.get("running"))


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and its children (the server's process group), MB."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if status.parent.name == str(pid) or fields.get("PPid", "").strip() == str(pid):
            total += int(fields.get("VmRSS", "0 kB").split()[0])
    return total / 1024
