"""``edgeseq check``: parity of an ONNX file against its PyTorch (or Keras) source over a sweep.

The tolerance profile follows the file's ``precision`` (see :mod:`edgeseq.tolerances`): float
files are judged element by element; INT8 files by drift, i.e. the SQNR pooled over the whole
sweep (one tiny output at length 1 says little about quantization noise), with every case's SQNR
reported.  With an eval set, a quantized file must also keep the task metric within the
accuracy gate (1 accuracy point / 5 % relative MAE by default, ``max_drop`` to change it).

>>> report = check("m.onnx", "models/motion_lstm.py:build", lengths=[1, 17, 1000])  # doctest: +SKIP
>>> report.passed                                                                    # doctest: +SKIP
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..card import forward_takes_lengths
from ..quantize.cpu import vnni_mismatch
from ..tolerances import Tolerance, is_quantized, max_metric_drop, tolerance_for
from . import parity
from .loading import is_keras_ref, model_and_source
from .packed import unpacked

DEFAULT_BATCH_SIZES = (1, 3, 16)
DEFAULT_LENGTHS = (1, 2, 17, 100, 1000)


def check(
    onnx_path: str | Path,
    against: Any,
    *,
    weights: str | Path | None = None,
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    lengths: Iterable[int] = DEFAULT_LENGTHS,
    atol: float | None = None,
    rtol: float | None = None,
    device: str = "cpu",
    eval_data: str | Path | None = None,
    max_drop: float | None = None,
    progress: Callable[[str], None] | None = None,
    allow_pickle: bool = False,
) -> parity.ParityReport:
    """Measure parity of ``onnx_path`` against a model reference or ``nn.Module`` (no raising on mismatch).

    Lengths always include 1 and one longer than the export example. Without ``atol``/``rtol``, a float file
    exported with looser ones (``edgeseq export --atol``, recorded in its card) is held to those.
    """
    from ..runtime.session import Session

    session = Session(onnx_path, device=device)
    spec = parity.spec_of_session(session)
    labels = _eval_labels(eval_data) if eval_data is not None else None  # said before the sweep, not after it
    carded = bool(session.card.get("inputs"))
    # a file edgeseq exported at one length (the model runs at that length only) is checked there; another
    # exporter's file is swept anyway, to see whether it froze a length the model does not have
    notes: list[str] = []
    asked = sorted(set(lengths))
    if spec.fixed_length and carded:
        lengths = [spec.fixed_length]
        if asked != lengths:
            notes.append(f"note: the file runs at {spec.fixed_length} steps only (its model does), so it was checked "
                         f"there, not at {','.join(map(str, asked))}")
    else:
        lengths = sorted(set(lengths) | {1, 2 * spec.example_length + 1})
    most = session.card.get("max_steps")  # the model's own longest length: longer cases would only be skipped
    if isinstance(most, int) and not isinstance(most, bool):
        if any(n > most for n in lengths):
            notes.append(f"note: the model takes at most {most} steps (recorded at export), so longer lengths were "
                         f"checked at {most}")
        lengths = sorted({min(n, most) for n in lengths})
    precision = session.card.get("precision", "float32")
    if max_drop is not None and (eval_data is None or not is_quantized(precision)):
        notes.append("note: --max-drop ignored: it limits a quantized file's metric drop on --eval's data")
    base = tolerance_for(precision)
    if base.elementwise:  # a file exported with a looser --atol/--rtol is checked at that tolerance by default
        exported = session.card.get("parity") or {}
        atol = atol if atol is not None else _looser(exported.get("atol"), base.atol)
        rtol = rtol if rtol is not None else _looser(exported.get("rtol"), base.rtol)
    tol = base.overridden(atol, rtol)
    # drift-judged profiles: cases report their SQNR, the pooled SQNR decides (added below)
    case_tol = tol if tol.elementwise else Tolerance(tol.atol, tol.rtol, None)
    names = [o.name for o in session.data_outputs()]
    if isinstance(against, str) and is_keras_ref(against):
        from ..keras import keras_reference

        keras_fn = keras_reference(against)

        def run_ref(arrays: list[np.ndarray]) -> list[np.ndarray]:
            out = keras_fn(*arrays)
            return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
    else:
        model, _ = model_and_source(against, weights, allow_pickle=allow_pickle)
        if forward_takes_lengths(session.card):  # compared as forward(x), every sample at full length
            model = unpacked(model, session.card.get("layout") == "time_first") or model
        run_ref = parity.torch_runner(model)

    pairs: list[tuple[list[np.ndarray], list[np.ndarray]]] = []
    last_ref: list[list[np.ndarray]] = []

    def run_ref_recorded(arrays: list[np.ndarray]) -> list[np.ndarray]:
        last_ref[:] = [run_ref(arrays)]
        return last_ref[0]

    def run_onnx(arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = session.run(dict(zip(spec.names, arrays)))
        got = [out[n] for n in names]
        pairs.append((got, last_ref[0]))
        return got

    report = parity.measure_runners(run_onnx, run_ref_recorded, spec, names, batch_sizes, lengths, case_tol,
                                    precision, progress=progress)
    report.min_sqnr_db = tol.min_sqnr_db
    report.provider = session.providers[0]
    report.every_batch = True
    if notes:
        report.extra.setdefault("metric_lines", []).extend(notes)
    if not tol.elementwise:
        _judge_pooled_drift(report, pairs, names, tol)
        warning = vnni_mismatch(session.card.get("quantization", {}).get("settings"))
        if warning:
            report.extra.setdefault("metric_lines", []).append(f"warning: {warning}")
    if eval_data is not None:
        _compare_metrics(report, session, run_ref, eval_data, labels, precision, max_drop)
    if not carded:
        _name_frozen_axes(report, spec, session.data_inputs()[0])
    if not report.passed and "hint" not in report.extra and weights is None and isinstance(against, (str, Path)) and not is_keras_ref(str(against)):
        report.extra["hint"] = missing_weights_hint(session.card, str(against), model, allow_pickle)
    return report


def _name_frozen_axes(report: parity.ParityReport, spec: Any, first: Any) -> None:
    """Say so where ONNX Runtime failed at a batch or length that the file's first input fixes and PyTorch ran."""
    info = spec.inputs[0]
    fixed = {"length": spec.fixed_length, "batch": spec.fixed_batch}
    frozen = set()
    for case in report.failures:
        if not case.note.startswith("ONNX Runtime failed"):
            continue
        off = [what for what, size in fixed.items() if size is not None and getattr(case, what) != size]
        if off:
            takes = " and ".join(f"{what} {fixed[what]}" for what in off)
            ran = ", ".join(f"{what} {getattr(case, what)}" for what in off)
            case.note = f"the file takes {takes} only; PyTorch ran at {ran}: frozen at export"
            frozen.update(off)
    if frozen:
        shape = ", ".join(str(d) for d in first.shape)
        which = " and ".join(sorted(frozen))
        was = "were" if len(frozen) > 1 else "was"
        report.extra["hint"] = (f"; the file's input {info.name!r} is fixed at [{shape}] while the PyTorch model runs "
                                f"at other sizes: its {which} {was} frozen when it was exported; export it with "
                                "`edgeseq export` for dynamic axes")


def missing_weights_hint(card: dict[str, Any], against: str, model: Any, allow_pickle: bool = False) -> str:
    """Why a reference without ``--weights`` may not be the model that was exported ('' if no sign of it).

    The usual cause of a total parity failure in ``check``: the factory builds untrained, random
    weights, and the export loaded a checkpoint.  The card names the export's ``--weights``; else two
    calls of the factory are compared.
    """
    import torch

    source = str(card.get("source", ""))
    if "--weights" in source:
        return f"; the file was exported from {source}: pass the same --weights"
    if ":" not in Path(against).name:
        return ""
    again, _ = model_and_source(against, None, allow_pickle=allow_pickle)
    first, second = model.state_dict(), again.state_dict()
    if any(not torch.equal(first[k], second[k]) for k in first if k in second):
        return (f"; {against} builds different random weights on each call, so no exported file can match it: "
                "pass --weights with the trained checkpoint (or seed the factory)")
    return ""


def _looser(recorded: Any, default: float) -> float | None:
    """``recorded`` (the export's tolerance, from the card) when it is a number above ``default``, else None."""
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and math.isfinite(recorded):
        return float(recorded) if recorded > default else None
    return None


def criteria(report: parity.ParityReport) -> str:
    """What the report was judged by, in words: "atol 1e-05, rtol 1e-05" or "pooled SQNR >= 15 dB; ..."."""
    if math.isfinite(report.atol):
        text = f"atol {report.atol:g}, rtol {report.rtol:g}"
    else:
        text = f"{report.precision}: SQNR pooled over the sweep >= {report.min_sqnr_db:g} dB"
    metrics = report.extra.get("metrics", {})
    if "max_drop" in metrics:
        limit = metrics["max_drop"]
        text += (f"; eval accuracy drop <= {100 * limit:.2f} points" if metrics["metric"] == "accuracy"
                 else f"; eval MAE increase <= {100 * limit:.2f}%")
    return text


def pooled_sqnr(pairs: list[tuple[list[np.ndarray], list[np.ndarray]]], index: int) -> tuple[float, float]:
    """(SQNR in dB, max abs error) of output ``index`` pooled over every (onnx, reference) pair."""
    signal = noise = max_abs = 0.0
    for got, ref in pairs:
        if index >= len(got) or index >= len(ref) or got[index].shape != ref[index].shape:
            continue
        a, b = got[index].astype(np.float64), ref[index].astype(np.float64)
        signal += float(np.sum(b**2))
        noise += float(np.sum((a - b) ** 2))
        max_abs = max(max_abs, float(np.max(np.abs(a - b))) if a.size else 0.0)
    if not math.isfinite(noise):
        return -math.inf, math.inf
    return (math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)), max_abs


def _judge_pooled_drift(report: parity.ParityReport, pairs: list[tuple[list[np.ndarray], list[np.ndarray]]],
                        names: list[str], tol: Tolerance) -> None:
    """Append one verdict case per output: SQNR pooled over the sweep against ``tol.min_sqnr_db``."""
    if not pairs or tol.min_sqnr_db is None:
        return
    for i, name in enumerate(names):
        sqnr, max_abs = pooled_sqnr(pairs, i)
        max_rel = max((c.max_rel for c in report.cases if c.output == name and not c.skipped), default=0.0)
        ok = sqnr >= tol.min_sqnr_db
        note = f"pooled over {len(pairs)} runs: SQNR {sqnr:.1f} dB {'>=' if ok else '<'} {tol.min_sqnr_db:g} dB"
        # batch/length 0 mark a verdict over the whole sweep rather than one shape
        report.cases.append(parity.ParityCase(0, 0, f"{name}*", max_abs, max_rel, sqnr, ok, note=note))


def _eval_labels(path: str | Path) -> np.ndarray:
    """The ``y`` of an eval set ``.npz``; InputError in one line for anything else."""
    from ..errors import InputError

    fix = "save it with numpy.savez(path, x=..., y=...)"
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):
            raise InputError(f"{path}: --eval takes an .npz holding x and y (labels); {fix}")
        with data:
            if "y" not in data.files:
                raise InputError(f"{path}: an eval set needs labels, and this one holds only {', '.join(data.files)}; "
                                 f"{fix}, or drop --eval")
            return data["y"]
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - not an .npz, damaged, pickled objects
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: not a readable eval set ({first}); {fix}") from None


def _compare_metrics(report: parity.ParityReport, session: Any, run_ref: Callable[..., list[np.ndarray]],
                     eval_data: str | Path, y: np.ndarray, precision: str = "float32",
                     max_drop: float | None = None) -> None:
    """Add the task metric of PyTorch and ONNX on an eval set (x, y[, lengths]) to the report.

    For quantized precisions the metric is also a verdict: a drop beyond the gate fails the report.
    """
    from ..metrics import binary_threshold, metric_drop, predictions, target_scale, task_metric
    from ..runtime.io import read_input, read_npz_inputs

    inputs = session.data_inputs()
    if len(inputs) > 1:  # several inputs, each an array of the .npz named after it
        lengths_name = session.lengths_input
        arrays = read_npz_inputs(eval_data, [i.name for i in inputs], optional=[lengths_name] if lengths_name else [])
        lengths = arrays.pop(lengths_name, None) if lengths_name else None
        x = arrays[inputs[0].name]
        if lengths is None:
            onnx_out, ref_out = _several_inputs_outputs(session, run_ref, arrays)
        else:  # a --lengths file: each sample as if alone, its static inputs beside it
            onnx_out, _ = _several_inputs_outputs(session, None, {**arrays, lengths_name: lengths})
            ref_out = reference_outputs(run_ref, np.require(x, requirements=["W"]), lengths,
                                        others=[arrays[i.name] for i in inputs[1:]])
    else:
        batch = read_input(eval_data)
        batch.x = np.require(batch.x, requirements=["W"])  # torch.from_numpy warns on read-only arrays
        onnx_out = session.predict(batch.x, lengths=batch.lengths)
        if session._unbatched:  # one sequence per call: each sample alone, outputs stacked as predict does
            ref_out = reference_each(run_ref, batch.x, batch.lengths)
        else:
            ref_out = reference_outputs(run_ref, batch.x, batch.lengths, batch_axis=session._batch_axis())
        x, lengths = batch.x, batch.lengths
    length = int(x.shape[1]) if x.ndim > 1 else 1
    threshold = binary_threshold(ref_out)  # a one-output model: probability or logit, read from PyTorch's outputs
    seq_axis = session._seq_axis() if len(inputs) == 1 else 1
    steps = int(x.shape[seq_axis]) if x.ndim > seq_axis else None  # the padded length, which per-step targets follow
    name, onnx_value = task_metric(onnx_out, y, threshold, lengths, steps=steps)
    _, ref_value = task_metric(ref_out, y, threshold, lengths, steps=steps)
    agree = (float(np.mean(predictions(onnx_out, threshold) == predictions(ref_out, threshold)))
             if name == "accuracy" else None)
    report.extra["metrics"] = {"metric": name, "pytorch": ref_value, "onnx": onnx_value, "agreement": agree,
                               "samples": len(y)}
    line = f"eval set {Path(eval_data).name}: {name} PyTorch {ref_value:.4f} vs ONNX {onnx_value:.4f}"
    if agree is not None:
        line += f"; same prediction on {agree:.2%} of {len(y)} samples"
    report.extra.setdefault("metric_lines", []).append(line)
    if not is_quantized(precision):
        return
    drop = metric_drop(name, ref_value, onnx_value, target_scale(y) if name == "mae" else None)
    limit = max_metric_drop(name, max_drop)
    ok = bool(np.isfinite(onnx_value)) and drop <= limit + 1e-12
    shown = (f"{100 * drop:.2f} points (max {100 * limit:.2f})" if name == "accuracy"
             else f"{100 * drop:+.2f}% (max +{100 * limit:.2f}%)")
    note = f"{precision} vs PyTorch on the eval set: {name} drop {shown}"
    report.extra["metrics"].update(drop=drop, max_drop=limit, passed=ok)
    report.cases.append(parity.ParityCase(len(y), length, f"eval:{name}", 0.0, 0.0, math.inf, ok, note=note))
    report.extra["metric_lines"].append(("ok: " if ok else "FAIL: ") + note)


def _several_inputs_outputs(session: Any, run_ref: Callable[..., list[np.ndarray]] | None,
                            arrays: dict[str, np.ndarray], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """First output of ONNX Runtime and of the reference (None: not run) for a multi-input model, in batches."""
    out = session.data_outputs()[0].name
    n = len(next(iter(arrays.values())))
    onnx_parts, ref_parts = [], []
    for i in range(0, n, batch_size):
        part = {k: np.require(v[i : i + batch_size], requirements=["W"]) for k, v in arrays.items()}
        onnx_parts.append(session.run(part, outputs=[out])[out])
        if run_ref is not None:
            ref_parts.append(run_ref(list(part.values()))[0])
    return np.concatenate(onnx_parts), (np.concatenate(ref_parts) if run_ref is not None else None)


def reference_each(run_ref: Callable[..., list[np.ndarray]], x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """First output of a one-sequence-per-call reference on each sample of ``x`` (cut to its length), stacked;
    outputs of different lengths end in their last row, repeated (as :meth:`Session.predict` gives them)."""
    outs = [run_ref([np.ascontiguousarray(x[i, : int(lengths[i])] if lengths is not None else x[i])])[0]
            for i in range(len(x))]
    if any(o.shape != outs[0].shape for o in outs):
        longest = max(len(o) for o in outs)
        outs = [np.concatenate([o, np.repeat(o[-1:], longest - len(o), axis=0)]) for o in outs]
    return np.stack(outs)


def reference_outputs(run_ref: Callable[..., list[np.ndarray]], x: np.ndarray, lengths: np.ndarray | None,
                      batch_size: int = 256, batch_axis: int = 0, others: list[np.ndarray] | None = None) -> np.ndarray:
    """First output of the reference on x; samples with lengths run unpadded, grouped by length.

    A per-step output comes back at the padded length, each sample's last valid step held over its padding
    (as :meth:`Session.predict` gives it), so the two line up step for step. ``batch_axis`` 1: ``x`` is a
    time-first model's ``(steps, samples, ...)``; the result has samples first. ``others``: the model's
    per-sample inputs after ``x`` (``forward(x, meta)``), samples first, passed beside each group.
    """
    def run(part: np.ndarray, steps: int) -> np.ndarray:
        chunk = x[:steps, part] if batch_axis == 1 else x[part, :steps]
        y = run_ref([np.ascontiguousarray(chunk), *[np.require(o[part], requirements=["W", "C"]) for o in others or []]])[0]
        if batch_axis == 1 and y.ndim >= 2 and y.shape[0] != len(part) and y.shape[1] == len(part):
            y = np.swapaxes(y, 0, 1)  # (steps, samples, ...) outputs: samples first, like the labels
        return y

    n, steps = (x.shape[1], x.shape[0]) if batch_axis == 1 else (len(x), x.shape[1])
    if lengths is None:
        return np.concatenate([run(np.arange(i, min(n, i + batch_size)), steps) for i in range(0, n, batch_size)])
    pieces: list[tuple[np.ndarray, int, np.ndarray]] = []
    for length in np.unique(lengths):
        idx = np.flatnonzero(lengths == length)
        for i in range(0, len(idx), batch_size):
            part = idx[i : i + batch_size]
            pieces.append((part, int(length), run(part, int(length))))
    per_step = all(y.ndim >= 2 and y.shape[1] == n for _, n, y in pieces) and (
        pieces[0][2].ndim >= 3 or len({n for _, n, _ in pieces}) > 1)
    first = pieces[0][2]
    shape = (n, steps, *first.shape[2:]) if per_step else (n, *first.shape[1:])
    result = np.empty(shape, first.dtype)
    for part, n, y in pieces:
        if per_step and n < steps:
            y = np.concatenate([y, np.repeat(y[:, n - 1 : n], steps - n, axis=1)], axis=1)
        result[part] = y
    return result
