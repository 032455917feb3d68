"""GPU benchmark: edgeseq on CUDA (float32, FP16) against PyTorch CUDA eager, plus the streaming step.

    python bench/gpu_bench.py                 # on a machine with a GPU and onnxruntime-gpu
    python bench/gpu_bench.py --smoke         # anywhere: same code paths on the CPU, tiny sizes

Writes ``bench/results/gpu-<device>.json`` (device = the GPU's name) and prints a table.  Where
CUDA is unusable for onnxruntime it prints why and exits 0 without writing anything.

Model: 2-layer LSTM, 16 features, hidden 128, + Linear head (the FINDINGS.md model), seeded.
Whole-sequence cases: batch 1/64/512 x length 100/1000, numpy in -> numpy out for every runner
(what an application sees: host->device copy, compute, device->host copy).  TF32 is off for both
PyTorch and ONNX Runtime so float32 means float32.  Streaming step: batch 1, one time step with
carried state: PyTorch eager (state on GPU), ONNX Runtime ``run`` (state through the host), I/O
binding with the state kept on the GPU, and that plus CUDA graphs (fixed shapes); the CPU run of
the same step is timed in the same process for the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURES, HIDDEN, LAYERS, CLASSES = 16, 128, 2, 10
BATCHES, LENGTHS = (1, 64, 512), (100, 1000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="run every code path on the CPU with tiny sizes; writes nothing")
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per case and runner")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for gpu-<device>.json")
    args = ap.parse_args(argv)

    from edgeseq.runtime.providers import probe_cuda

    status = probe_cuda()
    if not args.smoke and not status.usable:
        print(f"gpu_bench: skipped, CUDA is unusable for onnxruntime: {status.reason}", file=sys.stderr)
        return 0
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_bench: skipped, PyTorch cannot use CUDA here (torch.cuda.is_available() is False); "
              "install a CUDA build of torch for the baseline", file=sys.stderr)
        return 0
    bench = GpuBench(smoke=args.smoke, seconds=args.seconds if not args.smoke else 0.05)
    try:
        result = bench.run()
    finally:
        shutil.rmtree(bench.tmp, ignore_errors=True)  # the exported files (every run left its folder in /tmp)
    print(format_table(result))
    if args.smoke:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu-{slug(result['device']['name'])}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


class GpuBench:
    def __init__(self, smoke: bool, seconds: float) -> None:
        import torch

        from edgeseq.benchmark.timing import time_call

        self.torch, self.time_call = torch, time_call
        self.smoke, self.seconds = smoke, seconds
        self.device = "cpu" if smoke else "cuda"
        self.batches, self.lengths = ((1, 4), (5, 12)) if smoke else (BATCHES, LENGTHS)
        self.tmp = Path(tempfile.mkdtemp(prefix="edgeseq-gpu-bench-"))
        self.notes: list[str] = []
        if not smoke:  # float32 must mean float32 on both sides
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    # -- models and files ----------------------------------------------------------------------
    def build(self) -> Any:
        from models.families import StackedLSTMClassifier

        self.torch.manual_seed(0)
        return StackedLSTMClassifier(FEATURES, HIDDEN, LAYERS, CLASSES).eval()

    def files(self, model: Any) -> dict[str, Path]:
        from edgeseq.export import export
        from edgeseq.export.stateful import export_with_extras

        files = {"float32": self.tmp / "lstm.onnx", "stream": self.tmp / "lstm-stream.onnx"}
        export(model, files["float32"], exporter="torchscript")
        export_with_extras(model, files["stream"], streaming=True, exporter="torchscript")
        import onnx
        import onnxruntime.quantization  # noqa: F401 - before edgeseq's fp16 trims sys.path
        from onnxruntime.transformers.float16 import convert_float_to_float16

        try:
            from edgeseq.quantize.modes import fp16

            files["fp16"] = self.tmp / "lstm-fp16.onnx"  # edgeseq quantize --mode fp16 (recurrent nodes in float32)
            fp16(files["float32"], files["fp16"])
        except ImportError:
            self.notes.append("edgeseq.quantize is not available: no 'fp16' row (only 'fp16-all')")
        files["fp16-all"] = self.tmp / "lstm-fp16-all.onnx"  # every node in half precision, LSTM included
        onnx.save(convert_float_to_float16(onnx.load(str(files["float32"])), keep_io_types=True), str(files["fp16-all"]))
        return files

    # -- timing ---------------------------------------------------------------------------------
    def timed(self, fn: Callable[[], Any]) -> dict[str, float]:
        t = self.time_call(fn, reps=500, warmup=3, budget_s=self.seconds, min_reps=5)
        return {"median_ms": t.median_s * 1e3, "p99_ms": t.p99_s * 1e3, "min_ms": t.min_s * 1e3, "reps": t.reps}

    def run(self) -> dict[str, Any]:
        from edgeseq import Session

        torch = self.torch
        model = self.build()
        files = self.files(model)
        dev_model = self.build().to(self.device)
        half_model = self.build().to(self.device).half() if not self.smoke else None
        sessions = {}
        placement = {}
        for precision in ("float32", "fp16", "fp16-all"):
            if precision not in files:
                continue
            try:
                s = Session(files[precision], device=self.device)
            except Exception as exc:  # noqa: BLE001 - record and go on: one variant failing is a result too
                self.notes.append(f"{precision}: cannot run on {self.device}: {str(exc).splitlines()[0][:200]}")
                continue
            sessions[precision] = s
            placement[precision] = s.placement.counts() if s.placement else None
        unbound = Session(files["float32"], device=self.device, io_binding=False)
        rows = []
        rng = np.random.default_rng(0)
        for length in self.lengths:
            for batch in self.batches:
                x = rng.standard_normal((batch, length, FEATURES)).astype(np.float32)
                with torch.no_grad():
                    ref = model(torch.from_numpy(x)).numpy()

                def torch_run(m: Any = dev_model, dtype: Any = torch.float32) -> np.ndarray:
                    with torch.no_grad():
                        return m(torch.from_numpy(x).to(self.device, dtype)).float().cpu().numpy()

                runners: dict[str, Callable[[], np.ndarray]] = {"torch-eager-fp32": torch_run}
                if half_model is not None:
                    runners["torch-eager-fp16"] = lambda: torch_run(half_model, torch.float16)
                for precision, s in sessions.items():
                    runners[f"edgeseq-{precision}"] = lambda s=s: s.predict(x, batch_size=batch)
                runners["edgeseq-float32-no-iobinding"] = lambda: unbound.predict(x, batch_size=batch)
                for name, fn in runners.items():
                    out = fn()
                    rows.append({"batch": batch, "length": length, "runner": name, **self.timed(fn),
                                 "max_abs_vs_torch_cpu_fp32": float(np.max(np.abs(out - ref)))})
        return {
            "device": self.device_info(),
            "versions": self.versions(),
            "model": {"kind": "StackedLSTMClassifier", "features": FEATURES, "hidden": HIDDEN, "layers": LAYERS,
                      "classes": CLASSES},
            "placement": placement,
            "whole_sequence": rows,
            "streaming_step": self.streaming(model, files["stream"]),
            "notes": self.notes + ["times are numpy-in/numpy-out per call; median of repeated calls after warm-up",
                                   "TF32 disabled in PyTorch (cuDNN, matmul) and ONNX Runtime (use_tf32=0)"],
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    # -- streaming step -------------------------------------------------------------------------
    def streaming(self, model: Any, path: Path) -> list[dict[str, Any]]:
        import onnxruntime as ort

        from edgeseq.card import read_card
        from edgeseq.runtime.ort import session_options
        from edgeseq.runtime.providers import resolve_device
        from edgeseq.runtime.workarounds import disabled_optimizers

        torch = self.torch
        card = read_card(path)
        state_in, state_out = card["state_inputs"], card["state_outputs"]
        xt = np.random.default_rng(1).standard_normal((1, 1, FEATURES)).astype(np.float32)
        from edgeseq.benchmark.streaming import _state_slots

        # one tensor per state, or one per layer in files that split the state per layer
        zeros = {n: np.zeros([1 if isinstance(d, str) else d for d in shape], np.float32)
                 for n, _out, shape, _axis in _state_slots(path)}
        rows: list[dict[str, Any]] = []

        dev_model = self.build().to(self.device)
        h = torch.zeros(LAYERS, 1, HIDDEN, device=self.device)
        state = [h, h.clone()]

        def torch_step() -> np.ndarray:
            with torch.no_grad():
                out, (state[0], state[1]) = dev_model.lstm(torch.from_numpy(xt).to(self.device), (state[0], state[1]))
                return dev_model.head(out[:, -1]).cpu().numpy()

        rows.append({"runner": "torch-eager (state on device)", **self.timed(torch_step)})

        def plain(sess: Any) -> Callable[[], np.ndarray]:
            carried = dict(zeros)
            names = [o.name for o in sess.get_outputs()]

            def step() -> np.ndarray:
                out = sess.run(names, {"x": xt, **carried})
                carried.update({i: v for i, v in zip(state_in, out[1:])})
                return out[0]

            return step

        choice = resolve_device(self.device)
        skip = disabled_optimizers(path)
        sess = ort.InferenceSession(str(path), session_options(), providers=choice.providers, disabled_optimizers=skip)
        rows.append({"runner": f"onnxruntime-{self.device} run (state via host)", **self.timed(plain(sess))})
        cpu = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=skip)
        rows.append({"runner": "onnxruntime-cpu run (same process)", **self.timed(plain(cpu))})
        rows.append({"runner": f"onnxruntime-{self.device} iobinding (state on device)",
                     **self.timed(self.bound_stepper(sess, xt, zeros, state_in, state_out, choice.ort_device))})
        if not self.smoke:
            rows.append(self.cuda_graph_row(path, xt, zeros, state_in, state_out, choice.index))
        return rows

    def bound_stepper(self, sess: Any, xt: np.ndarray, zeros: dict[str, np.ndarray], state_in: list[str],
                      state_out: list[str], device: tuple[str, int]) -> Callable[[], np.ndarray]:
        import onnxruntime as ort

        kind, idx = device
        state = [ort.OrtValue.ortvalue_from_numpy(zeros[n], kind, idx) for n in state_in]
        first = sess.get_outputs()[0].name

        def step() -> np.ndarray:
            b = sess.io_binding()
            b.bind_cpu_input("x", xt)
            for name, value in zip(state_in, state):
                b.bind_ortvalue_input(name, value)
            b.bind_output(first, "cpu")
            for name in state_out:
                b.bind_output(name, kind, idx)
            sess.run_with_iobinding(b)
            out = b.get_outputs()
            state[:] = out[1:]
            return out[0].numpy()

        return step

    def cuda_graph_row(self, path: Path, xt: np.ndarray, zeros: dict[str, np.ndarray], state_in: list[str],
                       state_out: list[str], index: int) -> dict[str, Any]:
        """CUDA graphs need fixed shapes and fixed buffers: two graphs ping-pong between two state sets."""
        import onnxruntime as ort

        from edgeseq.runtime.ort import session_options
        from edgeseq.runtime.providers import cuda_provider_options, placement_of
        from edgeseq.runtime.workarounds import disabled_optimizers

        name = "onnxruntime-cuda iobinding + CUDA graph (fixed shapes)"
        try:
            opts = session_options()
            opts.add_free_dimension_override_by_name("batch", 1)
            opts.add_free_dimension_override_by_name("seq", 1)
            sess = ort.InferenceSession(str(path), opts, providers=[
                ("CUDAExecutionProvider", {**cuda_provider_options(index), "enable_cuda_graph": "1"})],
                disabled_optimizers=disabled_optimizers(path))
            x_dev = ort.OrtValue.ortvalue_from_numpy(xt, "cuda", index)
            y_dev = ort.OrtValue.ortvalue_from_shape_and_type([1, CLASSES], np.float32, "cuda", index)
            sets = [[ort.OrtValue.ortvalue_from_numpy(zeros[n], "cuda", index) for n in state_in] for _ in range(2)]
            bindings, run_opts = [], []
            for g in range(2):
                b = sess.io_binding()
                b.bind_ortvalue_input("x", x_dev)
                for n, v in zip(state_in, sets[g]):
                    b.bind_ortvalue_input(n, v)
                b.bind_ortvalue_output(sess.get_outputs()[0].name, y_dev)
                for n, v in zip(state_out, sets[1 - g]):
                    b.bind_ortvalue_output(n, v)
                ro = ort.RunOptions()
                ro.add_run_config_entry("gpu_graph_id", str(g + 1))
                bindings.append(b)
                run_opts.append(ro)
            turn = [0]

            def step() -> np.ndarray:
                x_dev.update_inplace(xt)
                g = turn[0]
                sess.run_with_iobinding(bindings[g], run_opts[g])
                turn[0] = 1 - g
                return y_dev.numpy()

            row = {"runner": name, **self.timed(step)}
            placed = placement_of(sess)
            row["placement"] = placed.counts() if placed else None
            return row
        except Exception as exc:  # noqa: BLE001 - CUDA graphs refuse graphs with CPU nodes: record why
            return {"runner": name, "error": str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}

    # -- context --------------------------------------------------------------------------------
    def device_info(self) -> dict[str, Any]:
        from edgeseq.runtime.doctor import nvidia_smi
        from edgeseq.runtime.providers import probe_cuda

        if self.smoke:
            return {"name": f"cpu-smoke-{platform.machine()}"}
        status = probe_cuda()
        gpus, _ = nvidia_smi()
        dev = status.devices[0] if status.devices else None
        return {"name": dev.name if dev else (gpus[0]["name"] if gpus else "unknown-gpu"),
                "memory_gib": round(dev.memory_bytes / 2**30, 1) if dev else None,
                "compute_capability": dev.capability if dev else None, "driver_cuda": status.driver_cuda,
                "nvidia_smi": gpus}

    def versions(self) -> dict[str, Any]:
        import onnxruntime as ort

        from edgeseq.runtime.providers import build_flavour, onnxruntime_packages

        torch = self.torch
        return {"onnxruntime": ort.__version__, "onnxruntime_build": build_flavour(),
                "onnxruntime_packages": [f"{n} {v}" for n, v in onnxruntime_packages()],
                "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                "python": platform.python_version()}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"device: {result['device']['name']}", "", "| batch | length | runner | median ms | p99 ms | max abs vs torch fp32 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in result["whole_sequence"]:
        lines.append(f"| {r['batch']} | {r['length']} | {r['runner']} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['max_abs_vs_torch_cpu_fp32']:.2g} |")
    lines += ["", "| streaming step (batch 1) | median µs | p99 µs |", "| --- | --- | --- |"]
    for r in result["streaming_step"]:
        if "error" in r:
            lines.append(f"| {r['runner']} | failed: {r['error']} | |")
        else:
            lines.append(f"| {r['runner']} | {r['median_ms'] * 1e3:.0f} | {r['p99_ms'] * 1e3:.0f} |")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
