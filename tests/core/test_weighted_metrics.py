"""Dependencies point one way: fairness uses the shared weighted metrics and never imports the
classifiers, which import fairness for their subgroup tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_importing_fairness_does_not_import_the_classifiers():
    loaded = _modules_after("import core.fairness")
    assert "core.fairness" in loaded and "core.weighted_metrics" in loaded
    assert not {m for m in loaded if m == "core.classify" or m.startswith("core.classify.")}


def test_the_classifiers_import_fairness_and_the_shared_metrics():
    loaded = _modules_after("import core.classify.study")
    assert {"core.fairness", "core.weighted_metrics"} <= loaded


def test_the_shared_metrics_need_neither_package_nor_sklearn():
    loaded = _modules_after("import core.weighted_metrics")
    assert not {m for m in loaded if m.startswith(("core.classify", "core.fairness", "sklearn"))}
