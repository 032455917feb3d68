"""Big jobs: `edgeseq infer` over up to a million sequences in bounded memory, interruptible, with progress."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from robust_helpers import ROOT, leftovers

from edgeseq import Session

# Runs the command as its only child and reports that child's peak RSS (KiB on Linux) on stderr.
PEAK_RSS = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(r.returncode)")
CLI = [sys.executable, "-m", "edgeseq.cli"]
BLOCKS = (0, 0.5, 1.0)  # where the random rows sit (fractions of the file); the rest is zeros


def make_input(path: Path, samples: int) -> Path:
    """A (samples, 8, 4) float32 .npy written through a memmap: random blocks at start/middle/end, zeros between."""
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(samples, 8, 4))
    rng = np.random.default_rng(0)
    for frac in BLOCKS:
        start = min(int(frac * samples), samples - 5000)
        x[start : start + 5000] = rng.standard_normal((5000, 8, 4), dtype=np.float32)
    x.flush()
    del x
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    return {"small": make_input(folder / "small.npy", 5000), "200k": make_input(folder / "200k.npy", 200_000),
            "folder": folder}


def _peak_rss(args: list[str]) -> tuple[int, subprocess.CompletedProcess]:
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, *CLI, *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    last = r.stderr.strip().splitlines()[-1].split()
    assert last[0] == "peak_rss_kib", r.stderr
    return int(last[1]) * 1024, r


def test_infer_million_sequences_in_bounded_memory(tiny_model, inputs, tmp_path):
    samples = 1_000_000  # 122 MiB of float32 (8 steps x 4 features); ~3 s on 2 cores
    big = make_input(tmp_path / "1m.npy", samples)
    base_rss, r = _peak_rss(["infer", str(tiny_model), "-i", str(inputs["small"]), "-o", str(tmp_path / "small.npy"),
                             "--device", "cpu"])
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.npy"
    peak, r = _peak_rss(["infer", str(tiny_model), "-i", str(big), "-o", str(out), "--device", "cpu"])
    assert r.returncode == 0, r.stderr
    assert f"{samples} sample(s)" in r.stderr
    assert "\r" not in r.stderr and "infer [" not in r.stderr  # no progress bar when stderr is not a terminal
    growth = peak - base_rss
    size = big.stat().st_size
    print(f"input {size / 2**20:.1f} MiB: peak RSS {peak / 2**20:.1f} MiB, {base_rss / 2**20:.1f} MiB for 5000 samples "
          f"(growth {growth / 2**20:.1f} MiB)")
    # Flat, not proportional to the input: ~5.5 MiB measured for both 24 and 122 MiB inputs (reading it whole: +150 MiB).
    assert growth < min(size / 2, 16 * 2**20), f"peak RSS grew by {growth / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB input"
    y = np.load(out, mmap_mode="r")
    assert y.shape == (samples, 2) and y.dtype == np.float32
    x = np.load(big, mmap_mode="r")
    session = Session(tiny_model, device="cpu")
    for frac in BLOCKS:
        start = min(int(frac * samples), samples - 5000)
        rows = slice(start, start + 5000, 97)
        np.testing.assert_allclose(y[rows], session.predict(np.asarray(x[rows])), rtol=0, atol=1e-6)
    assert leftovers(tmp_path) == ["out.npy"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_no_output(tiny_model, inputs, tmp_path, signum):
    out = tmp_path / "out.npy"
    proc = subprocess.Popen([*CLI, "infer", str(tiny_model), "-i", str(inputs["200k"]), "-o", str(out),
                             "--device", "cpu", "--batch-size", "8"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until output is being written into the temporary file
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".out.npy.")]
        if temps and temps[0].stat().st_size > 4096:
            break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    else:
        pytest.fail("no output was being written")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if signum == signal.SIGINT else 143), err  # 128 + the signal, as shells say
    word = "Interrupted" if signum == signal.SIGINT else "Terminated"
    assert err.strip().splitlines()[-1] == f"{word}; no partial output was written."
    assert "Traceback" not in err
    assert leftovers(tmp_path) == []


def test_progress_bar_when_stderr_is_a_terminal(tiny_model, inputs, tmp_path):
    master, slave = pty.openpty()
    out = tmp_path / "out.npy"
    proc = subprocess.Popen([*CLI, "infer", str(tiny_model), "-i", str(inputs["200k"]), "-o", str(out),
                             "--device", "cpu"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # keep reading so the child never blocks on a full terminal buffer
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert proc.wait(timeout=120) == 0
    reader.join(timeout=10)
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert "infer" in screen and "200000/200000" in screen, screen[-500:]
    assert out.exists()


def test_stdout_closed_early_exits_quietly(tiny_model, inputs):
    """`edgeseq infer ... | head -1`: the reader leaves; no traceback, exit 141 like other Unix tools."""
    proc = subprocess.Popen([*CLI, "infer", str(tiny_model), "-i", str(inputs["200k"]), "--device", "cpu"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert len(json.loads(first)) == 2
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err
