"""Colours, marker shapes and hover text for charts of a cohort, and the contrast maths that
keeps chart text readable. Pure data: no plotting library here, the pages build the figures.

A categorical column gets its ``max_colours`` most frequent values coloured (each also with its
own marker shape, so two hues that look alike to a colour-blind reader still differ) and the
rest folded into ``OTHER``, drawn grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

OTHER = "other"
MISSING = "(none)"
# Ten hues far apart on a white background (plotly's Dark24 head): no two greens, no pale yellow.
CATEGORY_COLOURS = (
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF",
    "#222A2A", "#B68100", "#750D86", "#EB663B", "#511CFB",
)
OTHER_COLOUR = "#9E9E9E"
# WebGL 2-D scatter draws all of these; Plotly's 3-D scatter only knows the first five plus the
# open variants, so 3-D views cycle through ``SYMBOLS_3D``.
SYMBOLS_2D = ("circle", "square", "diamond", "triangle-up", "cross", "x",
              "triangle-down", "star", "hexagon", "pentagon")
SYMBOLS_3D = ("circle", "square", "diamond", "cross", "x",
              "circle-open", "square-open", "diamond-open")
# Chart text on white: #595959 is 7.0:1, comfortably past WCAG AA's 4.5:1 for small text.
CHART_TEXT_COLOUR = "#595959"
CHART_GRID_COLOUR = "#E5E5E5"


@dataclass(frozen=True)
class CategoryStyle:
    """How one category is drawn."""

    name: str
    colour: str
    symbol: str
    count: int


def group_rare(values: pd.Series, *, max_colours: int = 10) -> pd.Series:
    """``values`` as strings, missing ones as ``MISSING``, and every value outside the
    ``max_colours`` most frequent ones replaced by ``OTHER``.

    values : Series of shape (n_rows,); returns a Series of the same shape and index.
    Ties in frequency are broken by name, so the grouping does not depend on row order.
    """
    if max_colours < 1:
        raise ValueError(f"max_colours={max_colours} must be >= 1")
    as_text = values.astype(object).where(values.notna(), MISSING).astype(str)
    counts = as_text.value_counts()
    ranked = sorted(counts.index, key=lambda v: (-counts[v], v))
    if len(ranked) <= max_colours:
        return as_text
    kept = set(ranked[:max_colours])
    return as_text.where(as_text.isin(kept), OTHER)


def _natural_key(value: str) -> tuple:
    """C2 before C10: digits compare as numbers."""
    digits = "".join(ch for ch in value if ch.isdigit())
    prefix = "".join(ch for ch in value if not ch.isdigit())
    return (prefix, int(digits) if digits else -1, value)


def category_styles(grouped: pd.Series, *, three_d: bool = False) -> list[CategoryStyle]:
    """One style per distinct value of ``grouped`` (the output of ``group_rare``), in legend order:
    named categories in natural order (C2 before C10), then ``MISSING`` and ``OTHER`` last, grey.

    Colours and symbols go to the named categories by frequency (most frequent first), so the
    commonest values always get the first, most distinct colours.
    """
    counts = grouped.value_counts()
    named = [v for v in counts.index if v not in (OTHER, MISSING)]
    by_frequency = sorted(named, key=lambda v: (-counts[v], v))
    if len(by_frequency) > len(CATEGORY_COLOURS):
        raise ValueError(f"{len(by_frequency)} categories; group_rare keeps at most {len(CATEGORY_COLOURS)}")
    symbols = SYMBOLS_3D if three_d else SYMBOLS_2D
    assigned = {v: (CATEGORY_COLOURS[i], symbols[i % len(symbols)]) for i, v in enumerate(by_frequency)}
    styles = [CategoryStyle(v, *assigned[v], int(counts[v])) for v in sorted(named, key=_natural_key)]
    for grey in (MISSING, OTHER):
        if grey in counts.index:
            styles.append(CategoryStyle(grey, OTHER_COLOUR, symbols[0], int(counts[grey])))
    return styles


def hover_text(table: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One hover line block per row: ``column: value`` for each of ``columns`` present in
    ``table`` (missing values shown as an em dash), joined with ``<br>``; whole-number floats
    such as ages read ``54``, not ``54.0``."""
    present = [c for c in dict.fromkeys(columns) if c in table.columns]
    if not present:
        return pd.Series("", index=table.index, dtype=object)

    def shown(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return "—"
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        if isinstance(value, (float, np.floating)):
            return f"{float(value):.3g}"
        return str(value)

    parts = [table[c].map(shown).radd(f"{c}: ") for c in present]
    text = parts[0]
    for part in parts[1:]:
        text = text + "<br>" + part
    return text


def relative_luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a ``#RRGGBB`` colour, 0 (black) .. 1 (white)."""
    text = colour.lstrip("#")
    if len(text) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
        raise ValueError(f"colour={colour!r} must be #RRGGBB")
    channels = [int(text[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two ``#RRGGBB`` colours, 1 .. 21 (AA asks 4.5 for small text)."""
    lighter, darker = sorted((relative_luminance(foreground), relative_luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)
