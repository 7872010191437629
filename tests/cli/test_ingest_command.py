"""``scanatlas ingest`` starts without torch (it was most of the command's time and memory) and
stores previews unless ``--no-previews``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from core.previews import PreviewStore

REPO = Path(__file__).resolve().parents[2]


def _source(covid_dir: Path, root: Path) -> Path:
    (root / "xray").mkdir(parents=True)
    for path in sorted((covid_dir / "images").glob("*.jpg"))[:3]:
        shutil.copy(path, root / "xray" / path.name)
    return root


def _run(*args: str) -> dict:
    code = ("import json, sys; from cli.main import main; code = main(sys.argv[1:]); "
            "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'sklearn': 'sklearn' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ingest_runs_without_importing_torch_and_stores_previews(covid_dir: Path, tmp_path: Path):
    source = _source(covid_dir, tmp_path / "src")
    run = _run("ingest", str(source), "--out", str(tmp_path / "with"), "--layout", "class-folders")
    assert run == {"code": 0, "torch": False, "sklearn": False}
    assert len(PreviewStore.open(tmp_path / "with")) == 3

    run = _run("ingest", str(source), "--out", str(tmp_path / "without"), "--layout", "class-folders", "--no-previews")
    assert run["code"] == 0 and PreviewStore.open(tmp_path / "without") is None


def test_commands_that_name_encoders_still_see_fine_tuned_ones():
    # `encoders` lists the registry, fine-tuned encoders included: it must still register them.
    run = _run("encoders")
    assert run["code"] == 0 and run["torch"]
