"""`make demo`: export a trained zoo model, prove parity, and run it on its held-out eval set.

Prints what each step did: the exporter used, the parity sweep, accuracy of PyTorch vs ONNX
Runtime on the committed eval set, and the time each took (same thread count).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "models/fashion_lstm.py:build"
EVAL = ROOT / "models/data/fashion_lstm-test.npz"
OUT = ROOT / "out/demo/fashion_lstm.onnx"
THREADS = 1


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _whole_set(fn, repeats: int = 3) -> tuple[np.ndarray, float]:
    """(output, median seconds) of ``repeats`` passes over the whole eval set."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def _median_ms(fn, repeats: int = 200) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


def main() -> int:
    import torch

    from edgeseq import Session
    from edgeseq.export import check, export, load_model
    from edgeseq.metrics import task_metric

    torch.set_num_threads(THREADS)
    OUT.parent.mkdir(parents=True, exist_ok=True)

    step(f"1/4 export {MODEL} -> {OUT.relative_to(ROOT)}")
    result = export(MODEL, OUT, log=lambda m: print("   " + m.replace(str(ROOT) + "/", "")))
    print(f"   exporter: {result.exporter}; {result.seconds:.1f}s")

    report = check(OUT, MODEL)  # lengths 1,2,17,100,1000 plus one longer than the export example
    batches = ",".join(map(str, sorted({c.batch for c in report.cases})))
    lengths = ",".join(map(str, sorted({c.length for c in report.cases})))
    step(f"2/4 parity sweep vs PyTorch (batch {batches} x length {lengths})")
    summary = report.summary()
    worst = max(report.cases, key=lambda c: c.max_abs)
    print(f"   {summary['cases']} cases, max abs error {summary['max_abs']:.2e} "
          f"(worst at batch {worst.batch}, length {worst.length}); tolerance atol {report.atol:g}, rtol {report.rtol:g}")
    if not report.passed:
        print("   PARITY FAILED", file=sys.stderr)
        return 1

    step(f"3/4 inference on the held-out eval set ({EVAL.relative_to(ROOT)})")
    data = np.load(EVAL)
    x, y = data["x"], data["y"]
    model = load_model(MODEL)

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([model(torch.from_numpy(x[i:i + 256])).numpy() for i in range(0, len(x), 256)])

    torch_out, torch_s = _whole_set(run_torch)
    session = Session(OUT, device="cpu", threads=THREADS)
    session.predict(x[:8])  # warm-up, as an app would after loading
    onnx_out, onnx_s = _whole_set(lambda: session.predict(x, batch_size=256))

    name, torch_metric = task_metric(torch_out, y)
    _, onnx_metric = task_metric(onnx_out, y)
    same = float(np.mean(torch_out.argmax(1) == onnx_out.argmax(1)))
    print(f"   {len(x)} samples, {x.shape[1]} steps x {x.shape[2]} features, {THREADS} thread, batches of 256 "
          "(median of 3 passes)")
    print(f"   PyTorch eager : {name} {torch_metric:.4f}  in {torch_s * 1000:7.1f} ms")
    print(f"   edgeseq (ORT) : {name} {onnx_metric:.4f}  in {onnx_s * 1000:7.1f} ms  on {session.providers[0]}")
    print(f"   same prediction on {same:.2%} of samples; whole-set speed-up {torch_s / onnx_s:.2f}x")

    # batch-1 latency, the edge case: one sample at a time, median of repeated calls
    single = x[:1]
    with torch.inference_mode():
        t_torch = _median_ms(lambda: model(torch.from_numpy(single)))
    t_onnx = _median_ms(lambda: session.predict(single))
    print(f"   batch-1 latency (median of 200): PyTorch {t_torch:.2f} ms, edgeseq {t_onnx:.2f} ms "
          f"-> {t_torch / t_onnx:.1f}x faster")

    step("4/4 quantize to INT8 (dynamic), gated on the eval set's accuracy")
    from edgeseq.quantize import quantize

    int8_path = OUT.with_name("fashion_lstm.int8.onnx")
    q = quantize(OUT, int8_path, mode="dynamic", eval_data=EVAL, log=lambda m: print("   " + m))
    int8 = Session(int8_path, device="cpu", threads=THREADS)
    int8.predict(x[:8])
    int8_out, int8_s = _whole_set(lambda: int8.predict(x, batch_size=256))
    _, int8_metric = task_metric(int8_out, y)
    t_int8 = _median_ms(lambda: int8.predict(single))
    print(f"   edgeseq INT8  : {name} {int8_metric:.4f}  in {int8_s * 1000:7.1f} ms  "
          f"({q.bytes / 1024:.0f} KiB, {q.bytes / q.float_bytes:.2f}x of float)")
    print(f"   batch-1 latency INT8: {t_int8:.2f} ms -> {t_torch / t_int8:.1f}x faster than PyTorch; "
          f"whole set {torch_s / int8_s:.2f}x")

    print(f"\nTry it yourself:\n   .venv/bin/edgeseq inspect {OUT.relative_to(ROOT)}\n"
          f"   .venv/bin/edgeseq infer {OUT.relative_to(ROOT)} --input {EVAL.relative_to(ROOT)} -o out/demo/y.npy")
    return 0


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def write_readme(text: str) -> None:
    """Put this run's output between the demo-output markers in README.md."""
    readme = ROOT / "README.md"
    start, end = "<!-- demo-output:start -->", "<!-- demo-output:end -->"
    doc = readme.read_text()
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n```text\n$ make demo\n{text.strip()}\n```\n{end}{tail}")


if __name__ == "__main__":
    if "--readme" in sys.argv:  # also record this run's output in README.md
        captured = io.StringIO()
        with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
            code = main()
        if code == 0:
            write_readme(captured.getvalue())
        sys.exit(code)
    sys.exit(main())
