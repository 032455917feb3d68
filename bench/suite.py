"""The benchmark suite over the trained zoo: edgeseq (float, INT8, FP16) against PyTorch eager,
ONNX Runtime with default settings and OpenVINO, in one run, at equal thread counts.

    python -m bench.suite                 # everything (make bench), ~6-8 minutes on 2 cores
    python -m bench.suite --quick --models motion_lstm --out /tmp/b   # a smoke run in seconds

Writes ``<out>/<model>.json`` per model, ``<out>/summary.json``, ``<out>/summary.md`` and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import artifacts, coldstart  # noqa: E402
from edgeseq.benchmark import (  # noqa: E402
    bound_seconds,  # noqa: E402
    machine_info,
    measure_peaks,
    recurrent_macs,
    run_cases,
)
from edgeseq.benchmark import runners as R  # noqa: E402
from edgeseq.benchmark.streaming import streaming_runner, torch_streaming_runner  # noqa: E402
from edgeseq.errors import EdgeseqError  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PRECISIONS = ("float", "int8", "fp16")
SWEEP = (1, 10, 100, 1000)  # batch-1 lengths for the latency-vs-length curve (plus the natural length)
THROUGHPUT_BATCH = 64


def zoo_recipes(names: list[str] | None) -> list[Any]:
    """The trained zoo models with a ``build()`` factory (models/<name>.py:build), or ``names``."""
    from models.zoo import ZOO

    recipes = [r for r in ZOO if (r.name in names if names else r.factory.endswith(":build"))]
    missing = set(names or []) - {r.name for r in recipes}
    if missing:
        raise SystemExit(f"unknown zoo model(s): {', '.join(sorted(missing))}; choose from {', '.join(r.name for r in ZOO)}")
    return recipes


def _try(runners: dict[str, R.Runner], skipped: dict[str, str], name: str, make: Callable[[], R.Runner]) -> None:
    try:
        runners[name] = make()
    except (EdgeseqError, ImportError, RuntimeError) as exc:
        skipped[name] = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


def sequence_runners(art: artifacts.ModelArtifacts, model: Any, threads: int) -> tuple[dict[str, R.Runner], dict[str, str]]:
    runners: dict[str, R.Runner] = {}
    skipped: dict[str, str] = {}
    _try(runners, skipped, "pytorch", lambda: R.torch_runner(model, threads))
    for p in PRECISIONS:
        if p in art.files:
            _try(runners, skipped, f"edgeseq {p}", lambda p=p: R.edgeseq_runner(art.files[p], threads))
        else:
            skipped[f"edgeseq {p}"] = art.skipped.get(p, "not built")
    flt = art.files["float"]
    _try(runners, skipped, "onnxruntime-default", lambda: R.ort_default_runner(flt))
    _try(runners, skipped, "openvino", lambda: R.openvino_runner(flt, threads))
    _try(runners, skipped, "openvino-f32", lambda: R.openvino_runner(flt, threads, precision="f32"))
    return runners, skipped


def step_runners(art: artifacts.ModelArtifacts, model: Any, threads: int) -> tuple[dict[str, R.Runner], dict[str, str]]:
    runners: dict[str, R.Runner] = {}
    skipped: dict[str, str] = {}
    if "stream-float" not in art.files:
        return runners, {"all": art.skipped.get("stream-float", "no streaming export")}
    stream = art.files["stream-float"]
    _try(runners, skipped, "pytorch", lambda: torch_streaming_runner(model, threads))
    _try(runners, skipped, "edgeseq float", lambda: streaming_runner("edgeseq", stream, threads))
    if "stream-int8" in art.files:
        _try(runners, skipped, "edgeseq int8", lambda: streaming_runner("edgeseq", art.files["stream-int8"], threads))
    else:
        skipped["edgeseq int8"] = art.skipped.get("stream-int8", "not built")
    _try(runners, skipped, "onnxruntime-default", lambda: streaming_runner("onnxruntime-default", stream))
    _try(runners, skipped, "openvino", lambda: streaming_runner("openvino", stream, threads))
    _try(runners, skipped, "openvino-f32", lambda: streaming_runner("openvino-f32", stream, threads))
    return runners, skipped


def agreement(runners: dict[str, R.Runner], x: np.ndarray) -> dict[str, dict[str, float]]:
    """Each runtime's outputs on real samples against PyTorch's: max abs difference, and the share
    of samples with the same predicted class (classifiers) — speed means nothing without this."""
    ref = _first(runners["pytorch"].call([x]))
    out = {}
    for name, runner in runners.items():
        if name == "pytorch":
            continue
        try:
            y = _first(runner.call([x]))
        except Exception as exc:  # noqa: BLE001
            out[name] = {"error": str(exc).splitlines()[0][:160]}
            continue
        entry = {"max_abs_diff": float(np.abs(y - ref).max())}
        if ref.ndim == 2 and ref.shape[1] > 1:
            entry["same_class"] = float((y.argmax(-1) == ref.argmax(-1)).mean())
        out[name] = entry
    return out


def _first(value: Any) -> np.ndarray:
    if isinstance(value, dict):
        value = next(iter(value.values()))
    elif hasattr(value, "values") and not isinstance(value, np.ndarray) and not hasattr(value, "numpy"):
        value = list(value.values())[0]  # OpenVINO's OVDict
    elif isinstance(value, (list, tuple)):
        value = value[0]
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value, dtype=np.float64)


def bench_model(recipe: Any, threads: int, budget_s: float, quick: bool, fresh: bool,
                log: Callable[[str], None]) -> dict[str, Any]:
    log(f"== {recipe.name}")
    start = time.perf_counter()
    art = artifacts.build(recipe, log, fresh=fresh)
    if "float" not in art.files:
        return {"model": recipe.name, "skipped": art.skipped.get("float", "export failed")}
    model = recipe.build()
    spec = R.input_spec_of(art.files["float"])
    result: dict[str, Any] = {
        "model": recipe.name, "task": recipe.task, "threads": threads, "natural_length": art.natural_length,
        "files": {k: {"path": str(p.relative_to(ROOT)), "bytes": p.stat().st_size} for k, p in art.files.items()},
        "checkpoint_bytes": art.checkpoint.stat().st_size, "build_seconds": art.seconds, "skipped": dict(art.skipped),
    }
    # -- whole sequences: latency vs length at batch 1, throughput at batch 64 ---------------------
    runners, skipped = sequence_runners(art, model, threads)
    result["skipped"].update({f"sequence/{k}": v for k, v in skipped.items()})
    result["runtimes"] = {name: {"threads": r.threads, **r.notes} for name, r in runners.items()}
    lengths = sorted({art.natural_length, *((1, 100) if quick else SWEEP)})
    grid = [(1, n) for n in lengths] + [(THROUGHPUT_BATCH, art.natural_length)]
    cases = run_cases(runners, spec, grid, sample=[art.batch_sample], budget_s=budget_s, reps=1000,
                      rounds=1 if quick else 3, log=log)
    result["agreement"] = agreement(runners, art.batch_sample) if "pytorch" in runners else {}
    # -- streaming: one step with carried state ------------------------------------------------
    steppers, step_skipped = step_runners(art, model, threads)
    result["skipped"].update({f"step/{k}": v for k, v in step_skipped.items()})
    if steppers:
        chunk = np.ascontiguousarray(art.sample[:, :1])
        cases += run_cases(steppers, spec, [(1, 1)], sample=[chunk], budget_s=budget_s, reps=2000,
                           rounds=1 if quick else 3, mode="step", log=log)
    # -- hardware bound ---------------------------------------------------------------------------
    macs = recurrent_macs(art.files["float"])
    peaks = measure_peaks(macs, (1, THROUGHPUT_BATCH), threads)
    result["macs"] = macs.to_dict()
    result["peaks"] = {k: p.to_dict() for k, p in peaks.items()}
    result["cases"] = []
    for c in cases:
        d = c.to_dict()
        bound = bound_seconds(macs, peaks, c.batch, c.length) if c.mode == "sequence" else None
        if bound and c.timing:
            d["bound_s"], d["times_bound"] = bound, c.timing.median_s / bound
        result["cases"].append(d)
    # -- cold start of a whole process ------------------------------------------------------------
    result["coldstart"] = coldstart_runs(art, threads, repeats=1 if quick else 5, log=log)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def coldstart_runs(art: artifacts.ModelArtifacts, threads: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    folder = artifacts.BUILD / art.name
    sample = folder / "sample.npy"
    commands = {"pytorch script": coldstart.torch_cmd(art.factory, sample, folder / "out-torch.npy", threads)}
    for p in ("float", "int8"):
        if p in art.files:
            commands[f"edgeseq {p}"] = coldstart.edgeseq_cmd(art.files[p], sample, folder / f"out-{p}.npy", threads)
    out = {}
    for name, cmd in commands.items():
        try:
            out[name] = coldstart.measure(cmd, repeats)
            log(f"  cold start {name:>16}: {out[name]['wall_s']:.3f} s, {out[name]['peak_rss_mib']:.0f} MiB")
        except RuntimeError as exc:
            out[name] = {"error": str(exc)[:300]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated zoo names (default: every models/<name>.py:build)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for every runtime (default 1)")
    ap.add_argument("--budget", type=float, default=1.2, help="seconds per case and runtime (default 1.2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer lengths, one round, one cold start")
    ap.add_argument("--fresh", action="store_true", help="rebuild exported files instead of reusing bench/build")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--readme", type=Path, help="also refresh this README's <!-- bench:start/end --> section")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = []
    for recipe in zoo_recipes(args.models.split(",") if args.models else None):
        res = bench_model(recipe, args.threads, args.budget, args.quick, args.fresh, log)
        (args.out / f"{recipe.name}.json").write_text(json.dumps(_clean(res), indent=1) + "\n")
        results.append(res)
    from bench import report

    summary = report.summarize(results, machine_info(), args.threads, time.perf_counter() - start, args.quick)
    (args.out / "summary.json").write_text(json.dumps(_clean(summary), indent=1) + "\n")
    (args.out / "summary.md").write_text(report.markdown(summary, results))
    if not args.no_plots:
        report.plots(results, args.out)
    if args.readme and not report.update_readme(args.readme, summary):
        log(f"{args.readme}: no {report.README_START} / {report.README_END} markers; README left as it is")
    log(f"wrote {args.out}/summary.md, {len(results)} model(s) in {time.perf_counter() - start:.0f} s")
    print(report.targets_text(summary))
    return 0


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


if __name__ == "__main__":
    raise SystemExit(main())
