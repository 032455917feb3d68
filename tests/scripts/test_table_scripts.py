"""Smoke tests of the scripts that produce README numbers: they must keep running (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_quantize_table_script_runs_on_one_model():
    out = _run("scripts/quantize_table.py", "--no-write", "--no-check", "motion_lstm")
    assert "| `motion_lstm` |" in out.stdout


def test_zoo_evaluation_runs_on_one_model():
    out = _run("-m", "models.evaluate", "--no-readme", "motion_lstm")
    assert "motion_lstm" in out.stdout and "OK" in out.stdout


def test_demo_script_runs_end_to_end():
    out = _run("scripts/demo.py")
    assert "parity" in out.stdout and "accuracy" in out.stdout and "INT8" in out.stdout


def test_troubleshooting_tables_agree():
    """docs/troubleshooting.md repeats the README's table; they must not drift apart."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def table(path: Path) -> str:
        return re.search(r"^\| You see.*?\n(?=\n|\Z)", path.read_text(), re.S | re.M).group(0)

    assert table(root / "README.md") == table(root / "docs" / "troubleshooting.md")
