"""Float vs INT8 vs FP16 for every zoo model: size, task metric, batch-1 latency; plus the measurements
behind the defaults of ``edgeseq quantize`` (calibration method, per-channel, the INT8 check threshold).

    .venv/bin/python scripts/quantize_table.py            # rewrite the tables in models/README.md and docs
    .venv/bin/python scripts/quantize_table.py --no-write fashion_lstm

Each model is exported (``edgeseq.export.export``), quantized with ``edgeseq.quantize.quantize`` in
every mode with the accuracy gate on its committed eval set ``models/data/<name>-test.npz``.
Static calibration uses a quarter of the eval set (at most 128 samples, evenly spaced): these samples
are also in the eval set; they only set activation ranges, but say so when quoting the numbers.
Latency: ONNX Runtime, one thread, batch 1, the eval set's first sample (variable-length sets: the
sample of median length, unpadded); the best of 30 interleaved rounds of 20 calls each, all files in
one process (the minimum resists other load on a shared machine; compare ratios, not absolutes).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeseq.errors import EdgeseqError
from edgeseq.quantize import quantize
from edgeseq.quantize.cpu import int8_cpu_settings
from edgeseq.runtime.ort import session_options
from edgeseq.runtime.session import Session
from edgeseq.runtime.workarounds import disabled_optimizers
from edgeseq.tolerances import max_metric_drop

README = ROOT / "models" / "README.md"
DOC = ROOT / "docs" / "quantization.md"
MAIN_README = ROOT / "README.md"
MODES = ("dynamic", "static", "fp16")
LATENCY_ROUNDS, LATENCY_CALLS = 30, 20


def replace_between(path: Path, name: str, text: str) -> None:
    """Put ``text`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` (markers appended if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = path.read_text(encoding="utf-8") if path.exists() else ""
    if start not in content:
        content = content.rstrip("\n") + f"\n\n{start}\n{end}\n"
    a, b = content.index(start), content.index(end)
    path.write_text(content[: a + len(start)] + "\n" + text + "\n" + content[b:], encoding="utf-8")


def write_calibration(data: dict[str, np.ndarray], path: Path) -> tuple[Path, int]:
    """A quarter of the eval set (at most 128 samples, evenly spaced: the sets are sorted by class)."""
    n = len(data["y"])
    idx = np.linspace(0, n - 1, max(1, min(128, n // 4))).round().astype(np.int64)
    np.savez(path, **{k: v[idx] for k, v in data.items() if k in ("x", "lengths")})
    return path, len(idx)


def export_float(recipe, path: Path) -> str:
    from edgeseq.export import export

    model = recipe.build(pretrained=True)
    try:
        export(model, path)
        return ""
    except EdgeseqError as exc:  # e.g. msft: random normal "prices" give log(<0) = NaN in the quick gate
        export(model, path, check=False)
        return f"exported with --no-check ({str(exc)[:80]}...)"


def latency_sample(data: dict[str, np.ndarray]) -> np.ndarray:
    if "lengths" not in data:
        return np.ascontiguousarray(data["x"][:1])
    i = int(np.argsort(data["lengths"])[len(data["lengths"]) // 2])
    return np.ascontiguousarray(data["x"][i : i + 1, : int(data["lengths"][i])])


def latencies(paths: dict[str, Path], x: np.ndarray) -> dict[str, float]:
    """Batch-1 latency in microseconds per file: best round (mean of its calls), rounds interleaved."""
    import onnxruntime as ort

    sessions = {}
    for key, path in paths.items():
        sess = ort.InferenceSession(str(path), session_options(threads=1), providers=["CPUExecutionProvider"],
                                    disabled_optimizers=disabled_optimizers(path))
        name = sess.get_inputs()[0].name
        sess.run(None, {name: x})
        sessions[key] = (sess, name)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(LATENCY_ROUNDS):
        for key, (sess, name) in sessions.items():
            t0 = time.perf_counter()
            for _ in range(LATENCY_CALLS):
                sess.run(None, {name: x})
            times[key].append((time.perf_counter() - t0) / LATENCY_CALLS)
    return {k: 1e6 * float(np.min(v)) for k, v in times.items()}


def check_sqnr(path: Path, recipe) -> float:
    """Pooled SQNR of ``edgeseq check`` (default sweep, random inputs) against PyTorch."""
    from edgeseq.export.check import check

    report = check(path, recipe.build(pretrained=True))
    pooled = [c for c in report.cases if c.output.endswith("*")]
    return pooled[0].sqnr_db if pooled else math.nan


def fmt_metric(metric: str, value: float) -> str:
    return f"acc {value:.4f}" if metric == "accuracy" else f"MAE ${value:.4f}"


def fmt_size(n: int, base: int) -> str:
    return f"{n / 1024:.0f} KiB ({n / base:.2f}x)"


def run_model(recipe, tmp: Path, with_check: bool) -> dict:
    data = dict(np.load(recipe.eval_path, allow_pickle=False))
    eval_path = recipe.eval_path
    cal_path, n_cal = write_calibration(data, tmp / f"{recipe.name}-cal.npz")
    float_path = tmp / f"{recipe.name}.onnx"
    note = export_float(recipe, float_path)
    row = {"name": recipe.name, "note": note, "float_bytes": float_path.stat().st_size, "modes": {}, "n_cal": n_cal}
    paths = {"float": float_path}
    for mode in MODES + ("auto",):
        out = tmp / f"{recipe.name}-{mode}.onnx"
        try:
            r = quantize(float_path, out, mode=mode, eval_data=eval_path, calibration=cal_path)
        except EdgeseqError as exc:
            row["modes"][mode] = {"error": str(exc)}
            continue
        q = r.card["quantization"]
        row["metric"] = r.metric.metric
        row["float_metric"] = r.metric.float_value
        row["modes"][mode] = {"bytes": r.bytes, "value": r.metric.quantized_value, "drop": r.metric.drop,
                              "sqnr": r.drift.sqnr_db, "chosen": r.mode, "reason": q.get("auto_reason", ""),
                              "kept_float": q["settings"].get("kept_float", [])}
        if mode != "auto":
            paths[mode] = out
            if with_check and mode != "fp16":
                row["modes"][mode]["check_sqnr"] = check_sqnr(out, recipe)
    lat = latencies(paths, latency_sample(data))
    row["latency"] = lat
    return row


def main_table(rows: list[dict]) -> str:
    lines = [
        "| model | float32 | INT8 dynamic | INT8 static | FP16 | `--mode auto` picks |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        metric = row.get("metric", "accuracy")
        float_cell = (f"{fmt_size(row['float_bytes'], row['float_bytes'])}"
                      f"<br>{fmt_metric(metric, row.get('float_metric', math.nan))}<br>{row['latency']['float']:.0f} µs")
        cells = [float_cell]
        for mode in MODES:
            m = row["modes"].get(mode, {})
            if "error" in m or not m:
                reason = m.get("error", "not run").removeprefix("refused, nothing written: ").split(";")[0]
                cells.append(f"refused: {reason.split(': ', 1)[-1].split(' (')[0]}")
                continue
            kept = f"<br>({', '.join(m['kept_float'])} stays float)" if m["kept_float"] else ""
            cells.append(f"{fmt_size(m['bytes'], row['float_bytes'])}<br>{fmt_metric(metric, m['value'])}"
                         f"<br>{row['latency'][mode]:.0f} µs{kept}")
        cells.append(row["modes"].get("auto", {}).get("chosen", "-"))
        lines.append(f"| `{row['name']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_table(rows: list[dict]) -> str:
    lines = ["| model | INT8 dynamic | INT8 static | drift vs float on the eval set (dynamic / static / fp16) |",
             "|---|---|---|---|"]
    for row in rows:
        def cell(mode: str, key: str, row: dict = row) -> str:
            v = row["modes"].get(mode, {}).get(key)
            if v is None:
                return "-"
            if math.isnan(v) or v == -math.inf:
                return "n/a (float model NaN on random inputs)"
            return "identical" if v == math.inf else f"{v:.1f} dB"
        lines.append(f"| `{row['name']}` | {cell('dynamic', 'check_sqnr')} | {cell('static', 'check_sqnr')} | "
                     f"{cell('dynamic', 'sqnr')} / {cell('static', 'sqnr')} / {cell('fp16', 'sqnr')} |")
    return "\n".join(lines)


def calibration_table(recipe, tmp: Path) -> str:
    """Static INT8 on one model with each calibration method and per-channel setting."""
    data = dict(np.load(recipe.eval_path, allow_pickle=False))
    cal_path, _ = write_calibration(data, tmp / f"{recipe.name}-cal.npz")
    float_path = tmp / f"{recipe.name}.onnx"
    if not float_path.exists():
        export_float(recipe, float_path)
    lines = ["| mode | calibration | per-channel | metric | drift SQNR vs float | size |", "|---|---|---|---|---|---|"]
    runs = [("dynamic", "-", False), ("dynamic", "-", True)]
    runs += [("static", method, pc) for method in ("minmax", "entropy", "percentile") for pc in (False, True)]
    for mode, method, pc in runs:
        out = tmp / f"{recipe.name}-cal-{mode}-{method}-{pc}.onnx"
        r = quantize(float_path, out, mode=mode, eval_data=recipe.eval_path, calibration=cal_path,
                     calibration_method=method if method != "-" else "minmax", per_channel=pc,
                     max_drop=0.99)  # measure every setting; the gate is not the question here
        lines.append(f"| {mode} | {method} | {'yes' if pc else 'no'} | {fmt_metric(r.metric.metric, r.metric.quantized_value)}"
                     f" | {r.drift.sqnr_db:.1f} dB | {r.bytes / 1024:.1f} KiB |")
    return "\n".join(lines)


def gate_demo(tmp: Path) -> str:
    """The accuracy gate on a model with one outlier weight (as in tests/quantize/conftest.py)."""
    import torch

    from edgeseq.export.check import check
    from edgeseq.export.parity import spec_of_session
    from models.families import FAMILIES

    model = FAMILIES["stacked_lstm"]()
    with torch.no_grad():
        model.head.weight.mul_(30)
        model.head.bias.zero_()
        w = model.lstm.weight_ih_l0
        w[0, 0] = 1000 * w.abs().max()
    from edgeseq.export import export

    src = tmp / "outlier.onnx"
    export(model, src)
    session = Session(src, device="cpu")
    x = spec_of_session(session).random(64, 20, seed=1)[0]
    evalset = tmp / "outlier-eval.npz"
    np.savez(evalset, x=x, y=session.predict(x).argmax(-1))
    lines = ["| variant | accuracy (float 1.0000) | gate (max drop 1 point) | `edgeseq check` pooled SQNR |",
             "|---|---|---|---|"]
    for label, kwargs in (("dynamic, per-tensor", {}), ("dynamic, per-channel", {"per_channel": True})):
        out = tmp / f"outlier-{len(lines)}.onnx"
        r = quantize(src, out, mode="dynamic", eval_data=evalset, max_drop=0.99, **kwargs)
        verdict = "passes" if r.metric.drop <= max_metric_drop(r.metric.metric) else "refused"
        pooled = next(c for c in check(out, model).cases if c.output.endswith("*"))
        lines.append(f"| {label} | {r.metric.quantized_value:.4f} | {verdict} | {pooled.sqnr_db:.1f} dB |")
    auto = quantize(src, tmp / "outlier-auto.onnx", mode="auto", eval_data=evalset)
    picked = f"{auto.mode}{' per-channel' if auto.card['quantization']['settings'].get('per_channel') else ''}"
    lines.append(f"| `--mode auto` -> {picked} | {auto.metric.quantized_value:.4f} | passes | - |")
    return "\n".join(lines)


def small_layers(recipe, tmp: Path) -> str:
    """Dynamic INT8 with and without keeping layers under modes.MIN_WEIGHTS in float."""
    from edgeseq.quantize import modes

    src = tmp / f"{recipe.name}.onnx"
    if not src.exists():
        export_float(recipe, src)
    paths = {"float32": src}
    for label, minimum in (("INT8, every layer", 0), (f"INT8, layers < {modes.MIN_WEIGHTS} weights float", modes.MIN_WEIGHTS)):
        out = tmp / f"{recipe.name}-min{minimum}.onnx"
        modes.dynamic(src, out, min_weights=minimum)
        paths[label] = out
    data = dict(np.load(recipe.eval_path, allow_pickle=False))
    lat = latencies(paths, latency_sample(data))
    lines = ["| `msft_cnnlstm` | size | batch-1 latency |", "|---|---|---|"]
    for label, path in paths.items():
        lines.append(f"| {label} | {path.stat().st_size / 1024:.1f} KiB | {lat[label]:.1f} µs |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from models.zoo import BY_NAME, ZOO

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="zoo models (default: all)")
    ap.add_argument("--no-write", action="store_true", help="print the tables instead of rewriting the files")
    ap.add_argument("--no-check", action="store_true", help="skip 'edgeseq check' against PyTorch (faster)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    recipes = [BY_NAME[n] for n in args.names] if args.names else list(ZOO)
    cpu = int8_cpu_settings()
    rows = []
    with tempfile.TemporaryDirectory(prefix="quant-table-") as tmp_name:
        tmp = Path(tmp_name)
        for recipe in recipes:
            t0 = time.time()
            row = run_model(recipe, tmp, with_check=not args.no_check)
            rows.append(row)
            print(f"{recipe.name}: " + ", ".join(f"{k} {v:.0f}us" for k, v in row["latency"].items())
                  + f" ({time.time() - t0:.0f}s) {row['note']}", flush=True)
            for mode, m in row["modes"].items():
                print(f"  {mode}: {m}", flush=True)
        extras = {}
        if not args.names:
            extras["quant-calibration"] = calibration_table(BY_NAME["msft_cnnlstm"], tmp)
            extras["quant-small-layers"] = small_layers(BY_NAME["msft_cnnlstm"], tmp)
            extras["quant-gate-demo"] = gate_demo(tmp)
    header = (f"Generated by `scripts/quantize_table.py` on {time.strftime('%Y-%m-%d')}: ONNX Runtime CPU, one thread, "
              f"batch 1; reduce_range {'on' if cpu.reduce_range else 'off'} ({cpu.reason}). Cells: file size "
              "(ratio to float32), task metric on the committed eval set, batch-1 latency (best of "
              f"{LATENCY_ROUNDS} rounds of {LATENCY_CALLS} calls).")
    table = header + "\n\n" + main_table(rows)
    checks = check_table(rows)
    if args.no_write or args.names:
        print(table, checks, *extras.values(), sep="\n\n")
        return 0
    replace_between(README, "quant-table", table)
    for doc in (DOC, MAIN_README):  # the main README carries the same section as docs/quantization.md
        replace_between(doc, "quant-table", table)
        replace_between(doc, "quant-check", checks)
        for name, text in extras.items():
            replace_between(doc, name, text)
    print(f"updated {README}, {DOC} and {MAIN_README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
