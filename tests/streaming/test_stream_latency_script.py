"""Smoke test of scripts/stream_latency.py, the source of the README's streaming latency table (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stream_latency_script_prints_every_row():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/stream_latency.py"), "--steps", "20", "--ticks", "5",
                          "--streams", "8"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "µs" not in line and "---" not in line]
    assert len(rows) == 6
    assert any("StreamingSession.step" in r for r in rows)
