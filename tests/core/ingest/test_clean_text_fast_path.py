"""clean_text skips ftfy for text ftfy cannot change (plain printable ASCII without "&", CR or
control characters): the result must equal ftfy's on every cell of the real metadata and on
random printable text."""

from __future__ import annotations

import random
import string
from pathlib import Path

import ftfy
import pandas as pd

from core.ingest.normalize import _REPLACEMENT_FIXES, clean_text


def _through_ftfy(value: str) -> str:
    text = ftfy.fix_text(value)
    for pattern, replacement in _REPLACEMENT_FIXES:
        text = pattern.sub(replacement, text)
    return text.strip()


def test_the_fast_path_equals_ftfy_on_real_and_random_text(covid_dir: Path):
    values = []
    for csv in (covid_dir / "metadata.csv", covid_dir.parent / "covid-chestxray-fullsize" / "metadata.csv"):
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        values += [value for column in frame.columns for value in frame[column]]
    rng = random.Random(0)
    values += ["".join(rng.choice(string.printable) for _ in range(rng.randint(0, 40))) for _ in range(5000)]
    lossy = [*string.printable, *"\ufffd" * 8, *" 37.8C'sdt"]  # U+FFFD among ASCII: no ftfy needed
    values += ["".join(rng.choice(lossy) for _ in range(rng.randint(0, 40))) for _ in range(5000)]
    values += ["a &amp; b", "x\r\ny", "tab\there", "  pad  ", "\x1b[31mred", "\x00nul", "café", "Ã©t\ufffds",
               "38\ufffdC", "People\ufffds"]
    assert len(values) > 10_000
    assert [v for v in values if clean_text(v) != _through_ftfy(v)] == []
    assert clean_text("a &amp; b") == "a & b" and clean_text("  plain  ") == "plain"
