"""Shared fixtures: the model-family registry and exported files, built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXPORTERS = ["torchscript", "dynamo"]


def pytest_collection_modifyitems(config, items):
    """Skip @pytest.mark.gpu tests where CUDA is not usable (CI has no GPU)."""
    from edgeseq.runtime.providers import cuda_unusable_reason

    reason = None
    for item in items:
        if "gpu" in item.keywords:
            if reason is None:
                reason = cuda_unusable_reason() or ""
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"CUDA unusable: {reason}"))


@pytest.fixture(scope="session")
def families():
    from models.families import FAMILIES

    return FAMILIES


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """exported(family, exporter) -> path of an ONNX file, exported once per session."""
    from edgeseq.export import export
    from models.families import FAMILIES

    cache: dict[tuple[str, str], Path] = {}
    folder = tmp_path_factory.mktemp("exported")

    def get(family: str, exporter: str = "torchscript") -> Path:
        key = (family, exporter)
        if key not in cache:
            path = folder / f"{family}-{exporter}.onnx"
            export(FAMILIES[family](), path, exporter=exporter)
            cache[key] = path
        return cache[key]

    return get
