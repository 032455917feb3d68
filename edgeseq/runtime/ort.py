"""Opening a file with ONNX Runtime: file checks, session options tuned for small recurrent graphs,
and load errors said in one line.

>>> sess = create_inference_session(open_model_file("m.onnx"), resolve_device("cpu"))   # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..card import read_card
from ..errors import EdgeseqError, InputError, ModelFileError, OutOfMemoryError, ProviderError
from .checks import thread_count
from .providers import DeviceChoice
from .safety import check_model_file
from .workarounds import disabled_optimizers


def open_model_file(path: str | Path) -> Path:
    """Check that ``path`` exists and looks like an ONNX file; return it as a Path."""
    if not isinstance(path, (str, Path)):
        raise ModelFileError(f"the model must be a path to an .onnx file, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file; export one with 'edgeseq export'")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected an .onnx file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: file is empty; re-export it with 'edgeseq export'")
    read_card(path)  # walks the protobuf; raises ModelFileError on a corrupt or non-ONNX file
    check_model_file(path)  # external data inside the folder, decodable names: before ONNX Runtime opens it
    return path


def model_bytes(path: str | Path) -> int:
    """Size of an ONNX file with the external data files it names (torch's dynamo exporter writes weights to
    ``model.onnx.data``), each counted once."""
    path = Path(path)
    extra = {p.resolve() for p in check_model_file(path) if p.is_file()}
    return path.stat().st_size + sum(p.stat().st_size for p in extra)


def default_threads(workload: str = "batch") -> int:
    """Intra-op threads when none are given, per workload; measured in bench/README.md ("threads").

    ``"stream"`` (one step at a time, StreamingSession): 1 -- a step's kernels are too small to split
    (fashion_lstm's step took 38 us on 2 threads, 23 us on 1).  ``"batch"`` (whole sequences,
    :class:`Session`): also 1 -- on 2 cores, 2 threads without spinning ran batch 1 0-25% slower and a
    GRU batch of 64 20-30x slower (ORT wakes its worker for many tiny parallel sections), while LSTM
    batches gained 1.9x only when the second core happened to be idle.  Pass ``threads=N`` for large
    LSTM batches on idle multi-core CPUs.
    """
    return 1


def session_options(threads: int | None = None, spinning: bool = False, memory_arena: bool = True) -> Any:
    """ONNX Runtime session options tuned for small recurrent graphs.

    ``memory_arena=False`` (what :class:`StreamingSession` uses) turns ONNX Runtime's CPU memory arena
    off: a one-step run's tensors are tiny and plain allocation was 2-7% faster per step; for whole
    sequences it is kept (without it batch 64 ran up to 22% slower).  ``bench.experiments arena``.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = thread_count(threads) or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = memory_arena
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn a core between calls; on small edge CPUs it costs more than it saves.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    # ORT's errors reach edgeseq as exceptions and are reported in one line; its own log lines would repeat them.
    opts.log_severity_level = 4
    # Lets Session.placement say which provider runs each node (recorded at load time; no measurable cost).
    opts.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    return opts


def create_inference_session(path: Path, choice: DeviceChoice, threads: int | None = None,
                             memory_arena: bool = True) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads, memory_arena=memory_arena),
                                    providers=choice.providers, disabled_optimizers=disabled_optimizers(path))
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if choice.is_cuda and _loads_on_cpu(path, threads):
            raise ProviderError(f"{path}: ONNX Runtime cannot run this file on {choice.device}: {msg[:300]}; "
                                "try device='cpu'") from None
        raise ModelFileError(f"{path}: ONNX Runtime cannot load this file: {msg[:300]}") from None


def _loads_on_cpu(path: Path, threads: int | None) -> bool:
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"],
                             disabled_optimizers=disabled_optimizers(path))
    except Exception:  # noqa: BLE001 - the file itself is the problem
        return False
    return True


_NO_MEMORY = re.compile(r"Failed to allocate memory|bad_alloc|out of memory|ALLOC_FAILED", re.IGNORECASE)


def run_failure(exc: BaseException, what: str) -> EdgeseqError:
    """ONNX Runtime's error from a run as one line: :class:`OutOfMemoryError` when it could not allocate (the
    caller can retry smaller), else :class:`InputError` (a shape or value the graph refused)."""
    text = str(exc).strip()
    if _NO_MEMORY.search(text):
        size = re.search(r"size (\d+)", text)
        wanted = f" ({int(size.group(1)) / 2**20:.0f} MiB more)" if size else ""
        return OutOfMemoryError(f"{what}: out of memory{wanted}; run fewer samples at a time (batch_size=, "
                                "--batch-size) or split long sequences")
    msg = (text.splitlines() or [type(exc).__name__])[0][:300]
    return InputError(f"{what}: {msg}")
