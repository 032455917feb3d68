"""Peak memory and time of one ``Session.predict`` on long sequences, each in a fresh process.

ONNX Runtime keeps every step's gates and outputs of a run and its arena keeps the peak for the life of
the session, so the samples per run (``runtime/session.py``: ``CPU_RUN_BYTES``) set the memory a service
holds after a long request.  Usage::

    python scripts/run_memory.py out/demo/fashion_lstm.onnx 8x20000 128x1000 32x5000
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time


def _one(path: str, n: int, steps: int) -> None:
    import numpy as np

    from edgeseq import Session

    session = Session(path, device="cpu")
    features = session.data_inputs()[0].shape[-1]
    x = np.random.default_rng(0).standard_normal((n, steps, features)).astype(np.float32)
    start_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    session.predict(x)
    took = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - start_mb
    print(f"{n} x {steps} steps: {session._rows(None, steps)} sample(s) per run, peak {peak:.0f} MB over the start, "
          f"{took * 1e3:.0f} ms")


def main(argv: list[str]) -> None:
    if len(argv) >= 3 and argv[0] == "--one":
        _one(argv[1], *map(int, argv[2].split("x")))
        return
    if len(argv) < 2:
        sys.exit(__doc__)
    for case in argv[1:]:
        subprocess.run([sys.executable, __file__, "--one", argv[0], case], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
