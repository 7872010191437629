import pandas as pd
import pytest

from core.palette import (
    CATEGORY_COLOURS,
    CHART_TEXT_COLOUR,
    MISSING,
    OTHER,
    OTHER_COLOUR,
    SYMBOLS_2D,
    SYMBOLS_3D,
    category_styles,
    contrast_ratio,
    group_rare,
    hover_text,
)


def test_group_rare_keeps_the_most_frequent_and_folds_the_rest() -> None:
    values = pd.Series(["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] + ["e"], index=range(10, 24))
    grouped = group_rare(values, max_colours=3)
    assert grouped.index.tolist() == values.index.tolist()
    assert grouped.tolist() == ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + [OTHER, OTHER]


def test_group_rare_breaks_ties_by_name_and_shows_missing() -> None:
    values = pd.Series(["z", "y", None, "x"])
    assert group_rare(values, max_colours=2).tolist() == [OTHER, OTHER, MISSING, "x"]
    assert group_rare(values, max_colours=4).tolist() == ["z", "y", MISSING, "x"]


def test_group_rare_rejects_zero_colours() -> None:
    with pytest.raises(ValueError, match="max_colours=0"):
        group_rare(pd.Series(["a"]), max_colours=0)


def test_no_two_categories_share_a_colour_or_a_symbol() -> None:
    labels = pd.Series([f"disease {i}" for i in range(14) for _ in range(20 - i)])
    styles = category_styles(group_rare(labels))
    named = [s for s in styles if s.name != OTHER]
    assert len(named) == 10 and styles[-1].name == OTHER and styles[-1].colour == OTHER_COLOUR
    assert styles[-1].count == 10 + 9 + 8 + 7  # diseases 10..13
    assert len({s.colour for s in named}) == 10 and OTHER_COLOUR not in {s.colour for s in named}
    assert len({s.symbol for s in named}) == 10
    # The most frequent category gets the first colour and symbol.
    first = next(s for s in styles if s.name == "disease 0")
    assert (first.colour, first.symbol, first.count) == (CATEGORY_COLOURS[0], SYMBOLS_2D[0], 20)


def test_category_order_is_natural_and_3d_symbols_are_drawable() -> None:
    clusters = pd.Series(["C10"] * 1 + ["C2"] * 2 + ["noise"] * 3 + ["C1"] * 4)
    styles = category_styles(group_rare(clusters), three_d=True)
    assert [s.name for s in styles] == ["C1", "C2", "C10", "noise"]
    assert {s.symbol for s in styles} <= set(SYMBOLS_3D)


def test_hover_text_names_each_column_and_never_shows_coordinates() -> None:
    table = pd.DataFrame({"patient_id": ["p1", "p2"], "label": ["COVID-19", None], "age": [54.0, 61.5],
                          "sex": ["F", "M"], "dim1": [5.727373, 1.0]})
    text = hover_text(table, ["patient_id", "label", "age", "sex", "view"])
    assert text.tolist() == ["patient_id: p1<br>label: COVID-19<br>age: 54<br>sex: F",
                             "patient_id: p2<br>label: —<br>age: 61.5<br>sex: M"]


def test_contrast_ratio_matches_wcag_by_hand() -> None:
    assert contrast_ratio("#000000", "#FFFFFF") == pytest.approx(21.0)
    assert contrast_ratio("#FFFFFF", "#FFFFFF") == pytest.approx(1.0)
    # #777777: channel 0.4667 -> linear 0.1845; (1.05) / (0.2345) = 4.48, just short of AA.
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    # #595959: linear 0.0999 -> 1.05 / 0.1499 = 7.00.
    assert contrast_ratio(CHART_TEXT_COLOUR, "#FFFFFF") == pytest.approx(7.0, abs=0.02)
    with pytest.raises(ValueError, match="#RRGGBB"):
        contrast_ratio("grey", "#FFFFFF")
