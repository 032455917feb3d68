"""Build what the suite measures, once per model: float, INT8 and FP16 files, streaming files,
and one real input sample.  Everything goes to ``bench/build/<model>/`` (git-ignored).

Exports use edgeseq's own API (``edgeseq export`` / ``--streaming``) and quantization uses
``edgeseq quantize`` (dynamic INT8 gated on the eval set; FP16).  A step that edgeseq refuses is
recorded with its reason and skipped, never worked around.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseq.errors import EdgeseqError

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "bench" / "build"


@dataclass
class ModelArtifacts:
    """Files and facts for one zoo model; ``skipped`` maps an artifact to the reason it is missing."""

    name: str
    factory: str  # "models.x:build"
    checkpoint: Path
    natural_length: int
    sample: np.ndarray  # (1, natural_length, ...) real eval input, batch first
    batch_sample: np.ndarray  # (64, natural_length, ...) real eval inputs
    files: dict[str, Path] = field(default_factory=dict)  # "float", "int8", "fp16", "stream-float", "stream-int8"
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def natural_sample(eval_path: Path, count: int) -> tuple[int, np.ndarray]:
    """The eval set's typical length (median for variable-length sets) and ``count`` real samples of
    at least that length, cut to it (no padding inside)."""
    with np.load(eval_path, allow_pickle=False) as data:
        x = data["x"]
        lengths = data["lengths"] if "lengths" in data.files else None
    if lengths is None:
        return int(x.shape[1]), np.ascontiguousarray(np.resize(x, (count, *x.shape[1:])))
    natural = int(np.median(lengths))
    rows = np.flatnonzero(lengths >= natural)
    rows = np.resize(rows, count)
    return natural, np.ascontiguousarray(x[rows, :natural])


def _timed(art: ModelArtifacts, key: str, fn: Callable[[], None], log: Callable[[str], None]) -> None:
    start = time.perf_counter()
    try:
        fn()
    except EdgeseqError as exc:
        art.skipped[key] = str(exc).splitlines()[0][:300]
        art.files.pop(key, None)
        log(f"  {art.name} {key}: skipped ({art.skipped[key][:120]})")
        return
    art.seconds[key] = round(time.perf_counter() - start, 2)


def _quantize(src: Path, dst: Path, mode: str, eval_path: Path | None) -> None:
    try:
        from edgeseq.quantize import quantize
    except ImportError:  # before `edgeseq quantize` existed: ONNX Runtime's own dynamic INT8
        if mode != "dynamic":
            raise EdgeseqError(f"{mode}: needs edgeseq.quantize") from None
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        return
    quantize(src, dst, mode=mode, eval_data=eval_path)


def build(recipe: object, log: Callable[[str], None], fresh: bool = False) -> ModelArtifacts:
    """Export and quantize one zoo recipe (``models.zoo.Recipe``) into ``bench/build/<name>/``."""
    from edgeseq.export.stateful import export_with_extras

    name = recipe.name
    folder = BUILD / name
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    natural, batch = natural_sample(recipe.eval_path, 64)
    art = ModelArtifacts(name, recipe.factory, recipe.checkpoint, natural, batch[:1].copy(), batch)
    np.save(folder / "sample.npy", art.sample)
    quiet = lambda _m: None  # noqa: E731
    steps: list[tuple[str, Path, Callable[[Path], None]]] = [
        ("float", folder / "float.onnx", lambda out: _export_checked(recipe, out)),
        ("int8", folder / "int8.onnx", lambda out: _quantize(art.files["float"], out, "dynamic", recipe.eval_path)),
        ("fp16", folder / "fp16.onnx", lambda out: _quantize(art.files["float"], out, "fp16", recipe.eval_path)),
        ("stream-float", folder / "stream-float.onnx",
         lambda out: export_with_extras(recipe.factory, out, streaming=True, log=quiet)),
        ("stream-int8", folder / "stream-int8.onnx",
         lambda out: _quantize(art.files["stream-float"], out, "dynamic", None)),
    ]
    refused_path = folder / "refused.json"  # refusals are results too: remembered, not retried each run
    refused = json.loads(refused_path.read_text()) if refused_path.exists() and not fresh else {}
    for key, out, make in steps:
        needs = {"int8": "float", "fp16": "float", "stream-int8": "stream-float"}.get(key)
        if needs and needs not in art.files:
            art.skipped[key] = f"no {needs} file ({art.skipped.get(needs, 'not built')[:80]})"
            continue
        if out.exists() and not fresh:
            art.files[key] = out
            continue
        if key in refused:
            art.skipped[key] = refused[key]
            continue
        art.files[key] = out
        _timed(art, key, lambda: make(out), log)
    refused_path.write_text(json.dumps({k: v for k, v in art.skipped.items() if not v.startswith("no ")}, indent=1))
    return art


def _export_checked(recipe: object, out: Path) -> None:
    """edgeseq export with its parity gate (random parity inputs are drawn from the declared example's
    value range, so models that need e.g. positive prices pass it like any other)."""
    from edgeseq.export import export

    export(recipe.factory, out, exporter="torchscript")  # what "auto" picks first for every zoo model
