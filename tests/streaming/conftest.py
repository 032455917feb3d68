"""Streaming and lengths exports, built once per session, and the models they came from."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def extras(tmp_path_factory):
    """extras(name, factory, streaming=..., lengths=...) -> (path, model): exported once per session."""
    from edgeseq.export.stateful import export_with_extras

    folder = tmp_path_factory.mktemp("extras")
    cache: dict[tuple, tuple[Path, object]] = {}

    def get(name: str, factory, streaming: bool = False, lengths: bool = False, exporter: str = "torchscript"):
        key = (name, streaming, lengths, exporter)
        if key not in cache:
            model = factory()
            path = folder / f"{name}-{'s' if streaming else ''}{'l' if lengths else ''}-{exporter}.onnx"
            export_with_extras(model, path, streaming=streaming, lengths=lengths, exporter=exporter)
            cache[key] = (path, model)
        return cache[key]

    return get

