"""Errors edgeseq raises on purpose.

Every error is an :class:`EdgeseqError`; the CLI turns these into one line on
stderr and exit status 1.  Anything else escaping is a bug and keeps its
traceback.  Messages say what was asked, what was found, and how to fix it.
"""

from __future__ import annotations


class EdgeseqError(Exception):
    """Root of every error edgeseq raises on purpose."""


class InputError(EdgeseqError, ValueError):
    """Input data has the wrong shape, dtype, values or file format."""


class OutOfMemoryError(EdgeseqError, MemoryError):
    """ONNX Runtime could not allocate memory for a run: the request, not its data, is too big."""


class ModelFileError(EdgeseqError):
    """An ONNX file is missing, unreadable, invalid or unsafe."""


class ModelLoadError(EdgeseqError):
    """A PyTorch model reference or checkpoint could not be loaded."""


class ExportError(EdgeseqError):
    """The model could not be exported to a correct ONNX file."""


class LayoutError(ExportError):
    """The model reads its input in the other layout; ``time_first`` is the layout that fits it."""

    def __init__(self, message: str, time_first: bool) -> None:
        super().__init__(message)
        self.time_first = time_first


class UnsupportedModelError(ExportError):
    """The model uses a layer or pattern that cannot be exported correctly."""


class ParityError(EdgeseqError):
    """ONNX Runtime's outputs do not match PyTorch's within tolerance."""


class ProviderError(EdgeseqError):
    """The requested execution provider / device cannot be used."""


class QuantizationError(EdgeseqError):
    """Quantization failed or did not keep the task accuracy."""


class MissingDependencyError(EdgeseqError, ImportError):
    """An optional dependency (torch, onnx, ...) is not installed."""


class EdgeseqWarning(UserWarning):
    """Root of the warnings edgeseq emits (``warnings.simplefilter("error", EdgeseqWarning)``)."""


class ProviderFallbackWarning(EdgeseqWarning):
    """Nodes that matter (the recurrent ones) run on another execution provider than requested."""


def require(module: str, extra: str) -> object:
    """Import an optional module or raise a :class:`MissingDependencyError` saying how to install it.

    >>> np = require("numpy", "export")
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'edgeseq[{extra}]'"
        ) from exc
