"""Plotly versions of SHAP's beeswarm and waterfall plots (the app draws no matplotlib)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from core.explain.shap_values import ShapResult

# SHAP's own palette: blue for low feature values, red for high.
LOW_COLOUR = "#008bfb"
HIGH_COLOUR = "#ff0052"
MISSING_COLOUR = "#b0b0b0"


def _swarm_offsets(values: np.ndarray, rng: np.random.Generator, n_bins: int = 100) -> np.ndarray:
    """Vertical offsets in [-0.4, 0.4] that stack points sharing an x bin, as shap does."""
    if values.size == 0:
        return values
    spread = values.max() - values.min()
    quantised = np.round(n_bins * (values - values.min()) / (spread + 1e-8))
    order = np.argsort(quantised + rng.normal(size=values.size) * 1e-6)
    offsets = np.zeros(values.size)
    layer, last_bin = 0, None
    for position in order:
        if quantised[position] != last_bin:
            layer = 0
        offsets[position] = np.ceil(layer / 2) * ((layer % 2) * 2 - 1)
        layer += 1
        last_bin = quantised[position]
    peak = np.abs(offsets).max()
    return offsets * (0.4 / peak) if peak > 0 else offsets


def _colour_scale(data: np.ndarray) -> np.ndarray:
    """Feature values -> [0, 1] by the 5th..95th percentile (outliers do not wash out the
    colours); NaN stays NaN."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.full(data.shape, np.nan)
    low, high = np.percentile(finite, [5, 95])
    if high <= low:
        low, high = finite.min(), finite.max()
    if high <= low:
        return np.where(np.isfinite(data), 0.5, np.nan)
    return np.clip((data - low) / (high - low), 0.0, 1.0)


def _class_name(result: ShapResult, class_label: Any) -> Any:
    if class_label is not None:
        return class_label
    return result.classes[1 if result.is_binary else 0]


def _format(value: float) -> str:
    if not np.isfinite(value):
        return "missing"
    return f"{value:.4g}"


def shap_beeswarm_figure(
    result: ShapResult, *, class_label: Any = None, max_display: int = 15, seed: int = 0
) -> go.Figure:
    """One row of dots per feature: x = SHAP value, colour = feature value (blue low, red
    high), features ordered by mean |SHAP| (largest on top); the rest are left out and the
    title says how many.

    class_label : the class to explain (see ``ShapResult.class_values``).
    Raises ValueError for max_display < 1 or an unknown class.
    """
    if max_display < 1:
        raise ValueError(f"max_display={max_display} must be >= 1")
    values, _, _ = result.class_values(class_label)
    rows = np.flatnonzero(result.explained)
    importance = result.mean_abs(class_label)
    shown = list(importance.index[:max_display])
    rng = np.random.default_rng(seed)
    figure = go.Figure()
    ids = np.asarray(result.index.astype(str))[rows]
    for level, name in enumerate(reversed(shown)):
        feature = result.feature_names.index(name)
        shap_values = values[rows, feature]
        raw = result.data[rows, feature]
        colour = _colour_scale(raw)
        offsets = level + _swarm_offsets(shap_values, rng)
        customdata = np.column_stack([ids, [_format(v) for v in raw]])
        hover = (f"<b>{name}</b> = %{{customdata[1]}}<br>SHAP %{{x:.4g}}"
                 "<br>row %{customdata[0]}<extra></extra>")
        known = np.isfinite(colour)
        figure.add_trace(go.Scatter(
            x=shap_values[known], y=offsets[known], mode="markers", name=name,
            showlegend=False, customdata=customdata[known], hovertemplate=hover,
            marker=dict(size=5, color=colour[known], coloraxis="coloraxis", line=dict(width=0)),
        ))
        if not known.all():
            figure.add_trace(go.Scatter(
                x=shap_values[~known], y=offsets[~known], mode="markers",
                name=f"{name} (missing)", showlegend=False, customdata=customdata[~known],
                hovertemplate=hover, marker=dict(size=5, color=MISSING_COLOUR, line=dict(width=0)),
            ))
    hidden = len(importance) - len(shown)
    title = f"SHAP values ({result.output}) towards class {_class_name(result, class_label)}"
    if hidden:
        title += f"; {hidden} weaker features not shown"
    figure.add_vline(x=0, line_width=1, line_color="#888")
    figure.update_layout(
        title=title,
        xaxis_title=f"SHAP value (impact on {result.output})",
        yaxis=dict(tickmode="array", tickvals=list(range(len(shown))),
                   ticktext=list(reversed(shown)), range=[-0.6, len(shown) - 0.4]),
        coloraxis=dict(
            colorscale=[[0.0, LOW_COLOUR], [1.0, HIGH_COLOUR]], cmin=0.0, cmax=1.0,
            colorbar=dict(title="Feature value", tickvals=[0, 1], ticktext=["Low", "High"]),
        ),
        height=max(300, 40 * len(shown) + 120),
        template="plotly_white",
    )
    return figure


def shap_waterfall_figure(
    result: ShapResult, row: int, *, class_label: Any = None, max_display: int = 10
) -> go.Figure:
    """How one row's output is built: the expected output E[f(x)], then each feature's push
    (largest |SHAP| first; the rest pooled as "N other features"), ending at f(x).

    row : position of the row (0..n_rows-1), not its id.
    Raises ValueError for a row out of range or not explained (with its reason).
    """
    n_rows = len(result.explained)
    if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < n_rows:
        raise ValueError(f"row={row!r} must be an integer position in 0..{n_rows - 1}")
    if max_display < 1:
        raise ValueError(f"max_display={max_display} must be >= 1")
    if not result.explained[row]:
        raise ValueError(f"row {row} was not explained: {result.reasons[row]}")
    values, base, output = result.class_values(class_label)
    contributions = values[row]
    order = np.argsort(-np.abs(contributions), kind="stable")
    shown = order[:max_display]
    labels = ["E[f(x)]"]
    steps = [float(base[row])]
    for feature in shown:
        labels.append(f"{result.feature_names[feature]} = {_format(result.data[row, feature])}")
        steps.append(float(contributions[feature]))
    rest = order[max_display:]
    if rest.size:
        labels.append(f"{rest.size} other features")
        steps.append(float(contributions[rest].sum()))
    labels.append("f(x)")
    steps.append(float(output[row]))
    measures = ["absolute"] + ["relative"] * (len(steps) - 2) + ["total"]
    text = [f"{steps[0]:.4g}"] + [f"{step:+.4g}" for step in steps[1:-1]] + [f"{steps[-1]:.4g}"]
    figure = go.Figure(go.Waterfall(
        orientation="h",
        measure=measures,
        y=labels,
        x=steps,
        text=text,
        textposition="outside",
        increasing=dict(marker=dict(color=HIGH_COLOUR)),
        decreasing=dict(marker=dict(color=LOW_COLOUR)),
        totals=dict(marker=dict(color="#555555")),
        connector=dict(line=dict(color="#bbbbbb", width=1)),
    ))
    figure.update_layout(
        title=(f"Row {result.index[row]}, class {_class_name(result, class_label)}: "
               f"f(x) = {output[row]:.4g} ({result.output})"),
        xaxis_title=result.output,
        yaxis=dict(autorange="reversed"),
        height=max(300, 32 * len(labels) + 120),
        template="plotly_white",
        showlegend=False,
    )
    return figure
