"""Describe an ONNX file: inputs/outputs with dynamic dims, operator histogram, size, model card.

>>> describe("model.onnx")["operators"]      # doctest: +SKIP
{'LSTM': 2, 'Gemm': 1, ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .card import op_histogram, read_card


def describe(path: str | Path) -> dict[str, Any]:
    from .runtime.checks import spec_of
    from .runtime.ort import create_inference_session, model_bytes, open_model_file
    from .runtime.providers import resolve_device

    path = open_model_file(path)
    sess = create_inference_session(path, resolve_device("cpu"), threads=1)
    def tensors(nodes: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "dtype": np.dtype(s.dtype).name, "shape": list(s.shape)} for s in map(spec_of, nodes)]

    top, every = op_histogram(path), op_histogram(path, nested=True)
    in_loops = dict(sorted(((k, v - top.get(k, 0)) for k, v in every.items() if v > top.get(k, 0)),
                           key=lambda kv: (-kv[1], kv[0])))
    return {
        "path": str(path),
        "size_kib": model_bytes(path) / 1024,
        "inputs": tensors(sess.get_inputs()),
        "outputs": tensors(sess.get_outputs()),
        "operators": top,
        "operators_in_loops": in_loops,  # run once per step by a Loop/Scan (or per branch of an If)
        "card": read_card(path),
    }


def card_lines(card: dict[str, Any]) -> list[str]:
    """Human-readable summary of a model card, one fact per line."""
    if not card:
        return ["model card: none (not exported by edgeseq)"]
    lines = ["model card:"]
    for key in ("source", "exporter", "opset", "precision", "layout", "features", "example_length"):
        if card.get(key) is not None:
            lines.append(f"  {key}: {card[key]}")
    quant = card.get("quantization")
    parity = card.get("parity") or {}
    label = "parity of the float export" if quant else "parity"
    if parity:
        verdict = "passed" if parity.get("passed") else parity.get("note") or "failed"
        detail = ""
        if parity.get("max_abs") is not None:
            sweep = f"batch {parity.get('batch_sizes')} x length {parity.get('lengths')}"
            if parity.get("check"):
                sweep += f"; checks: {parity['check']}"
            detail = f" (max abs {parity['max_abs']:.2g}; {sweep})"
        lines.append(f"  {label}: {verdict}{detail}")
    if quant:
        settings = quant.get("settings", {})
        text = f"  quantization: {quant.get('mode')}"
        if "reduce_range" in settings:
            text += f", reduce_range {'on' if settings['reduce_range'] else 'off'}"
        if settings.get("per_channel"):
            text += ", per-channel"
        lines.append(text)
        m = quant.get("metrics") or {}
        if m.get("metric"):
            lines.append(f"    {m['metric']}: float {m.get('float_value'):.4f} -> quantized {m.get('quantized_value'):.4f} "
                         f"on {m.get('samples')} samples ({m.get('eval_file')})")
        drift = quant.get("drift") or {}
        if drift.get("sqnr_db") is not None:
            lines.append(f"    drift vs float: max abs {drift.get('max_abs', 0):.3g}, SQNR {drift['sqnr_db']:.1f} dB")
        src = quant.get("float_model") or {}
        if src.get("sha256"):
            lines.append(f"    from {src.get('file')} (sha256 {src['sha256'][:12]}...)")
    entries = [e for e in card.get("inputs") or [] if isinstance(e, dict)]
    if entries:
        from .inputs import InputSpec

        fixed = InputSpec.from_card(entries).fixed_length
        if fixed:
            lines.append(f"  sequence length: fixed at {fixed} (the model runs at that length only)")
    stream = card.get("streaming")
    if stream:
        for layer in stream.get("layers", []):
            states = ", ".join(f"{s['input']} -> {s['output']} {s['shape']}"
                               + (f" (per layer: {s['parts'][0]['input']}, ...)" if s.get("parts") else "")
                               + (" starting from a learned state" if s.get("initial") is not None else "")
                               for s in layer.get("states", []))
            lines.append(f"  streaming state of '{layer.get('name')}' ({layer.get('kind')}): {states}")
    if card.get("lengths_input"):
        lines.append(f"  lengths input: {card['lengths_input']} (padded steps do not change results)")
    if card.get("packed_by"):
        lines.append(f"  packing: forward packed its input with {card['packed_by']!r}; the lengths input does it here")
    loops = card.get("loops")
    if isinstance(loops, dict) and loops.get("layers"):
        lines.append(f"  loop over time: {', '.join(map(str, loops['layers']))} ({loops.get('why', '')})")
    cleanup = card.get("graph_cleanup") or {}
    if cleanup.get("by") and len(cleanup.get("nodes") or []) == 2:
        before, after = cleanup["nodes"]
        lines.append(f"  graph cleanup: {before} -> {after} nodes ({', '.join(cleanup['by'])})")
    if card.get("versions"):
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in sorted(card["versions"].items())))
    return lines
