"""The shape of the code, enforced: dependencies point one way (pages/CLI -> core task modules
-> core primitives), core has no import cycles and never needs Streamlit, tqdm or a terminal,
pages import no numerical libraries, atomic writes have one home, and encoder names live in the
registry alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRONT_ENDS = ("app_pages", "ui", "cli")
# Task modules compose primitives into named runs; primitives never import them.
TASK_MODULES = {
    "core.cohort", "core.datasets", "core.embed", "core.clustering.runs", "core.drift.study",
    "core.classify.study", "core.uploads", "core.imports", "core.finetune.study", "core.audit.runs",
    "core.audit.export", "core.ray_engine",
}
HEAVY = ("sklearn", "umap", "torch", "torchvision", "shap", "scipy", "pytorch_grad_cam")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(*folders: str) -> list[Path]:
    files = [p for folder in folders for p in (ROOT / folder).rglob("*.py")]
    return [*files, ROOT / "app.py"] if "app_pages" in folders else files


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def core_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in python_files("core")}
    return {name: {d for d in imports_of(path) if d in modules and d != name} for name, path in modules.items()}


def test_core_never_imports_a_front_end_streamlit_or_tqdm():
    # At run time only Streamlit is checked: third-party libraries (shap, umap) import tqdm.
    modules = sorted(core_graph())
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('streamlit', 'cli', 'ui', 'app_pages') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert len(modules) > 40
    assert result.stdout.strip() == "[]"
    for path in python_files("core"):
        front = {m for m in imports_of(path) if m.split(".")[0] in (*FRONT_ENDS, "streamlit", "tqdm")}
        assert not front, f"{path.relative_to(ROOT)} imports {sorted(front)}"


@pytest.mark.parametrize("folder", ["app_pages", "ui"])
def test_pages_only_render(folder):
    for path in python_files(folder):
        heavy = {m for m in imports_of(path) if m.split(".")[0] in HEAVY}
        assert not heavy, f"{path.relative_to(ROOT)} imports {sorted(heavy)}: move that work into core"


def test_front_ends_do_not_import_each_other():
    for path in python_files("cli"):
        assert not {m for m in imports_of(path) if m.split(".")[0] in ("ui", "app_pages", "streamlit")}, path
    for path in python_files("app_pages", "ui"):
        assert not {m for m in imports_of(path) if m.split(".")[0] == "cli"}, path


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Modules collapsed to their package under core (core.classify.cv -> core.classify)."""
    top = lambda name: ".".join(name.split(".")[:2])  # noqa: E731
    collapsed: dict[str, set[str]] = {}
    for name, deps in graph.items():
        collapsed.setdefault(top(name), set()).update(top(d) for d in deps if top(d) != top(name))
    return collapsed


def test_core_has_no_import_cycles_between_modules_or_packages():
    graph = core_graph()
    assert strongly_connected(graph) == []
    assert strongly_connected(package_graph(graph)) == []


def test_primitives_never_import_task_modules():
    graph = core_graph()
    assert set(graph) >= TASK_MODULES, sorted(TASK_MODULES - set(graph))
    for name, deps in graph.items():
        if name not in TASK_MODULES:
            assert not deps & TASK_MODULES, f"{name} (a primitive) imports task module(s) {sorted(deps & TASK_MODULES)}"


def test_cycle_finder_finds_a_planted_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_one_atomic_write_helper_in_core():
    writers = [p.relative_to(ROOT).as_posix() for p in python_files("core")
               if re.search(r"os\.replace\(|\.replace\(tmp|os\.rename\(", p.read_text(encoding="utf-8"))]
    assert writers == ["core/atomic.py"]


def test_the_cli_lists_every_subcommand():
    from cli.main import COMMANDS, build_parser

    help_text = build_parser().format_help()
    for name in COMMANDS:  # serve_app.py is `scanatlas serve-app`, import_embeddings `import-embeddings`
        assert name.replace("_", "-") in help_text
    assert set(COMMANDS) == {p.stem for p in (ROOT / "cli" / "commands").glob("*.py")} - {"__init__"}
