"""Cold start: wall time and peak memory of a whole process that loads a model and runs one sample.

``edgeseq infer model.onnx -i sample.npy -o out.npy`` against ``bench/torch_infer.py`` (a plain
PyTorch script: import torch, build the model, load the checkpoint, run, save).  Peak memory is the
child's own maximum resident set size from ``os.wait4`` (Linux reports it in KiB).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# A small helper process forks and execs the command, then reports the child's own rusage: a child
# forked (or vforked) straight from this large process would count the parent's pages in its peak RSS.
_LAUNCH = """
import json, os, sys, time
err = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(err, 2)
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
print(json.dumps([wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]))
"""


def run_once(cmd: Sequence[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit status) of one process running ``cmd``."""
    import json
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".err") as err:
        out = subprocess.run([sys.executable, "-c", _LAUNCH, err.name, *cmd], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        wall, rss, code = json.loads(out.stdout)
        if code:
            text = Path(err.name).read_text(errors="replace").strip()
            raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({code}): {text[-300:]}")
    return wall, rss, code


def measure(cmd: Sequence[str], repeats: int = 5) -> dict[str, Any]:
    """Median wall time and peak memory over ``repeats`` runs after one untimed run (warms the page cache)."""
    run_once(cmd)
    walls, rss = [], []
    for _ in range(repeats):
        w, m, _ = run_once(cmd)
        walls.append(w)
        rss.append(m)
    return {"wall_s": statistics.median(walls), "wall_min_s": min(walls), "peak_rss_mib": statistics.median(rss),
            "repeats": repeats, "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}


def edgeseq_cmd(model: Path, sample: Path, out: Path, threads: int) -> list[str]:
    exe = Path(sys.executable).with_name("edgeseq")
    return [str(exe), "infer", str(model), "-i", str(sample), "-o", str(out), "--device", "cpu",
            "--threads", str(threads)]


def torch_cmd(factory: str, sample: Path, out: Path, threads: int) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "torch_infer.py"), factory, str(sample), str(out), str(threads)]
