"""Fixtures for the CUDA tests (every test here is @pytest.mark.gpu and skips where CUDA is unusable)."""

from __future__ import annotations

from pathlib import Path

import pytest


def to_fp16(src: Path, dst: Path) -> Path:
    """FP16 copy of ``src`` with ``precision: float16`` in its card (edgeseq's converter when present)."""
    import onnx

    from edgeseq.card import update_card

    try:
        from edgeseq.quantize.modes import fp16
    except ImportError:  # the quantize package is not there: same conversion, straight from onnxruntime
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    else:
        fp16(src, dst)
    proto = onnx.load(str(dst))
    update_card(proto, precision="float16")
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="session")
def fp16_of(tmp_path_factory):
    """fp16_of(path) -> an FP16 copy of an exported file, made once per session."""
    folder = tmp_path_factory.mktemp("fp16")
    cache: dict[Path, Path] = {}

    def get(path: Path) -> Path:
        if path not in cache:
            cache[path] = to_fp16(path, folder / f"{Path(path).stem}-fp16.onnx")
        return cache[path]

    return get
