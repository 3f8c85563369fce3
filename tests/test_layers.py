"""The package keeps its floors: no import cycle, no import back up, and the CLI starts without torch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph)  # type: ignore[union-attr]


def test_package_has_no_cycle_no_upward_import_no_unplaced_module():
    src = ROOT / "src"
    found = graph.edges(src)
    assert graph.cycles(found) == []
    assert graph.upward(found) == []
    assert graph.unplaced(src) == []


def test_checker_sees_a_function_level_cycle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "kardia"
    (pkg / "eval").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "eval" / "__init__.py").write_text("")
    (pkg / "eval" / "run.py").write_text("def f():\n    from .report import g\n")
    (pkg / "eval" / "report.py").write_text("from . import run\n")
    (pkg / "spans.py").write_text(textwrap.dedent("""
        def parse():
            from kardia.eval.run import f
    """))
    (pkg / "mystery.py").write_text("")
    found = graph.edges(tmp_path)
    assert graph.cycles(found) == [["kardia.eval.report", "kardia.eval.run"]]
    assert ("kardia.spans", "kardia.eval.run") in graph.upward(found)
    assert graph.unplaced(tmp_path) == ["kardia.mystery"]


def test_cli_import_loads_no_heavy_library():
    code = ("import sys, kardia.cli; heavy = ('torch', 'transformers', 'trl', 'peft', 'datasets', 'accelerate'); "
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})
    assert out.stdout.strip() == ""
