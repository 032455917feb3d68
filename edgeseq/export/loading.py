"""Load a PyTorch model from a reference (``file.py:factory`` or ``package.module:factory``) and weights.

Loading ``file.py:factory`` *runs that file's code* (by design, like ``python file.py``);
only load files you trust.  Weights, in contrast, are never unpickled as arbitrary
objects (``torch.load(weights_only=True)`` or safetensors) unless the caller says it trusts the
file with ``allow_pickle=True`` (``--allow-pickle``): whole models saved with ``torch.save(model)``
and checkpoints holding Python objects (an ``argparse.Namespace`` of settings, say) need it.

>>> model = load_model("models/motion_lstm.py:build")        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, require
from .checkpoints import (
    factory_hint,
    is_legacy_torch_save,
    load_pickled_model,
    load_weights,
    pickled_classes,
    pickled_instance_of,
)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_keras_ref(ref: str) -> bool:
    return str(ref).lower().endswith(KERAS_SUFFIXES)


def load_model(ref: str, weights: str | Path | None = None, log: Callable[[str], None] | None = None,
               allow_pickle: bool = False) -> Any:
    """Return the ``nn.Module`` that ``ref`` names, with ``weights`` loaded, in eval mode.

    ``allow_pickle`` lets ``ref`` be a whole pickled model and ``weights`` a checkpoint holding Python
    objects; unpickling runs code from the file, so pass it only for files you trust.
    """
    torch = require("torch", "export")
    if is_keras_ref(ref):
        if not Path(ref).exists():
            raise ModelLoadError(f"{ref}: no such file")
        from ..keras import load_keras

        model = load_keras(ref)
    elif ":" not in Path(ref).name and Path(ref).is_file():  # a saved model file, not file.py:factory
        model = load_exported_program(ref) if is_exported_program(ref) else load_torchscript(ref, allow_pickle)
        if isinstance(model, torch.nn.Module):
            model = unwrapped(model, log)  # a whole pickled nn.DataParallel(model)
    else:
        name, args, kwargs = split_call(ref)
        factory = resolve_factory(name)
        try:
            model = factory(*args, **kwargs)
        except TypeError as exc:
            whole = pickled_instance_of(weights, factory) if allow_pickle and weights is not None else None
            if whole is not None:  # a class that needs arguments, saved whole: the pickle already built it
                if log:
                    log(f"model: the {factory.__name__} pickled whole in {Path(weights).name}, as saved")
                return unwrapped(whole, log).eval()
            saved_whole = ""
            if weights is not None and not allow_pickle and isinstance(factory, type) and any(
                    c.rsplit(".", 1)[-1] == factory.__name__ for c in pickled_classes(weights)):
                saved_whole = (f", or, if you trust {Path(weights).name}, add --allow-pickle to use the "
                               f"{factory.__name__} saved whole in it")
            raise ModelLoadError(f"{ref}: calling the factory failed ({exc}); give its arguments in the reference, "
                                 f"as literals: '{name}{_signature_hint(factory)}'{saved_whole}") from None
        except SystemExit as exc:
            raise ModelLoadError(f"{ref}: the factory called sys.exit({exc.code!r}); build the model without "
                                 "exiting") from None
        except Exception as exc:  # noqa: BLE001 - the user's own code failed: one line, not our traceback
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ModelLoadError(f"{ref}: the factory raised {type(exc).__name__}: {first}") from None
        if not isinstance(model, torch.nn.Module):
            raise ModelLoadError(f"{ref}: the factory returned {type(model).__name__}, expected a torch.nn.Module")
        model = unwrapped(model, log)
    if weights is not None:
        load_weights(model, weights, log, allow_pickle)
    if getattr(model, "_edgeseq_exported_program", False):
        return model  # a torch.export module has no train/eval mode (eval() raises); it was captured as saved
    return model.eval()


def model_and_source(model_or_ref: Any, weights: str | Path | None = None,
                     log: Callable[[str], None] | None = None, allow_pickle: bool = False) -> tuple[Any, str]:
    """(model in eval mode with ``weights`` loaded, a label for the card) from an nn.Module or a reference."""
    if isinstance(model_or_ref, (str, Path)):
        label = str(model_or_ref) + (f" --weights {Path(weights).name}" if weights is not None else "")
        model = as_float32(load_model(str(model_or_ref), weights, log, allow_pickle), log)
        return restore_state_each_call(model, log), label
    model = unwrapped(model_or_ref, log).eval()
    if weights is not None:
        load_weights(model, weights, log, allow_pickle)
    return restore_state_each_call(as_float32(model, log), log), type(model).__name__


def unwrapped(model: Any, log: Callable[[str], None] | None = None) -> Any:
    """The module inside ``nn.DataParallel``/``DistributedDataParallel`` or ``torch.compile``'s wrapper,
    which neither torch.onnx exporter takes (the wrappers add nothing to what the model computes)."""
    import torch

    while True:
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            wrapper, model = type(model).__name__, model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None),
                                                                        torch.nn.Module):
            wrapper, model = "torch.compile", model._orig_mod
        else:
            return model
        if log:
            log(f"model: exporting the module inside {wrapper} (the wrapper itself cannot be exported)")


def _tensor_state(value: Any) -> bool:
    import torch

    if isinstance(value, (tuple, list)):
        return bool(value) and all(isinstance(v, torch.Tensor) for v in value)
    return isinstance(value, torch.Tensor)


def restore_state_each_call(model: Any, log: Callable[[str], None] | None = None) -> Any:
    """``model``, which puts back before every call the plain tensor attributes it had at load.

    Older tutorials keep the recurrent state on the module (``self.hidden_cell``, assigned in forward
    and reset to zeros by the training loop before each sequence), so each call would continue from the
    last one: PyTorch's answers then depend on call order, and an exported file can only start from one
    fixed state anyway.  Every call starts from the state at load, as the training loop's reset does;
    ``log`` hears about it once, when forward first reassigns such an attribute.
    """
    import torch

    if isinstance(model, torch.jit.ScriptModule) or getattr(model, "_edgeseq_restores_state", False):
        return model
    saved = [(module, name, value) for module in model.modules() for name, value in vars(module).items()
             if not name.startswith("_") and _tensor_state(value)]
    if not saved:
        return model
    told: list[str] = []

    def restore(_module: Any, _args: Any) -> None:
        for module, name, value in saved:
            current = getattr(module, name, None)
            if current is not value and not told and log:
                told.append(name)
                log(f"note: forward stores {name!r} on the module between calls (a recurrent state kept as an "
                    "attribute); every call starts from its value at load, as a reset before each sequence does "
                    "(for state carried between calls, export with --streaming)")
            setattr(module, name, value)

    model._edgeseq_restore_hook = restore  # edgeseq.export.scripted takes it off while scripting
    model._edgeseq_restore_handle = model.register_forward_pre_hook(restore)
    model._edgeseq_restores_state = True
    return model


def load_torchscript(path: str | Path, allow_pickle: bool = False) -> Any:
    """A model saved with ``torch.jit.save`` (scripted or traced), or with ``allow_pickle`` a whole
    model saved with ``torch.save(model)``, on the CPU.

    Loading runs the archive's TorchScript code, like a ``.py`` reference runs Python: only load
    files you trust.  A file of weights (``torch.save(model.state_dict())``) is not a model: it is
    refused with the reference form that takes it; so is a pickled model without ``allow_pickle``.
    """
    import torch

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        names = []
    if not any("/code/" in n for n in names):
        if any(n.endswith("data.pkl") for n in names) or is_legacy_torch_save(path):
            classes = pickled_classes(path)
            if not classes:
                raise ModelLoadError(f"{path}: a checkpoint of weights, not a model; give the model as "
                                     f"path/to/file.py:factory --weights {path.name}")
            if not allow_pickle:
                raise ModelLoadError(
                    f"{path}: a whole model pickled with torch.save(model) ({classes[0]}); unpickling runs code "
                    f"from the file, so edgeseq does it only with --allow-pickle (if you trust the file), or give "
                    f"{factory_hint(classes[0])} --weights with torch.save(model.state_dict())")
            return load_pickled_model(path)
        raise ModelLoadError(f"{path}: not a model file; give path/to/file.py:factory, package.module:factory, a "
                             "TorchScript file (torch.jit.save) or a Keras .keras/.h5 file")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError with long texts
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(f"{path}: not a loadable TorchScript file ({first})") from None
    fixed = constant_state_batch(module)
    if fixed is not None:  # refused before anything runs it at another batch size
        from ..errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"refused: the model runs at batch {fixed} only: its TorchScript graph builds a recurrent layer's initial "
            f"state with a fixed batch of {fixed} (torch.zeros(layers, {fixed}, hidden)), and a traced file does not "
            "check the batch, so another one would read out of bounds; build the state from the input "
            "(x.size(0)) or pass none, and save the model again")
    return module


_RECURRENT = ("aten::lstm", "aten::gru", "aten::rnn_tanh", "aten::rnn_relu")


def constant_state_batch(module: Any) -> int | None:
    """The batch size baked into a TorchScript graph's initial recurrent state (``aten::zeros`` of constant
    sizes feeding an ``aten::lstm``/``gru``), else None. Running such a traced graph at another batch crashes
    the process in PyTorch itself (no size check is left in it), so this is read from the graph instead."""
    try:
        graph = module.inlined_graph
        for node in graph.nodes():
            if node.kind() not in _RECURRENT:
                continue
            hx = list(node.inputs())[1]
            states = list(hx.node().inputs()) if hx.node().kind() == "prim::ListConstruct" else [hx]
            for state in states:
                made = state.node()
                if made.kind() != "aten::zeros":
                    continue
                sizes = list(made.inputs())[0].node()
                if sizes.kind() == "prim::ListConstruct" and all(i.node().kind() == "prim::Constant"
                                                                  for i in sizes.inputs()):
                    dims = [i.toIValue() for i in sizes.inputs()]
                    if len(dims) == 3 and isinstance(dims[1], int):
                        return int(dims[1])
    except Exception:  # noqa: BLE001 - an unfamiliar graph: no opinion
        return None
    return None


def is_exported_program(path: str | Path) -> bool:
    """A ``torch.export.save`` archive (``.pt2``)."""
    if Path(path).suffix.lower() == ".pt2":
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/archive_format") or n.endswith("models/model.json") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_exported_program(path: str | Path) -> Any:
    """The module of a ``torch.export`` program whose batch and length are dynamic, with its example inputs.

    ``torch.export`` unrolls LSTM/GRU/RNN layers over the example's steps and guards the input shape, so a
    program of a recurrent model has a static shape: it is refused with the way that works (the Python
    model and its weights), since an export at one batch size and length is rarely what a device needs.
    """
    import torch

    path = Path(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - torch raises many types with long texts
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(f"{path}: not a loadable torch.export file ({first})") from None
    user = set(program.graph_signature.user_inputs)
    inputs = [n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder" and n.name in user]
    shape = tuple(getattr(inputs[0], "shape", ())) if inputs else ()
    static = [str(d) for d in shape[:2] if isinstance(d, int)]
    if len(shape) >= 2 and static:
        raise ModelLoadError(
            f"{path}: a torch.export program with a fixed input shape {tuple(int(d) if isinstance(d, int) else str(d) for d in shape)} "
            "(torch.export unrolls LSTM/GRU/RNN layers over the example's steps, so their programs cannot take "
            "another batch or length); give the Python model instead: edgeseq export path/to/file.py:factory "
            "--weights weights.pt")
    module = program.module()
    module._edgeseq_exported_program = True
    examples = tuple(program.example_inputs[0]) if program.example_inputs else ()
    if examples:
        module.example_inputs = lambda: examples
    return module


def as_float32(model: Any, log: Callable[[str], None] | None = None) -> Any:
    """``model`` with float64/float16/bfloat16 parameters and buffers converted to float32 (in place).

    edgeseq's files take and give float32 (its input checks, tolerances and quantizer assume it; half
    precision is ``edgeseq quantize --mode fp16``'s job), so a model trained in another precision is
    exported, and checked, in float32; ``log`` hears about it.
    """
    import torch

    found = sorted({str(t.dtype).replace("torch.", "") for t in [*model.parameters(), *model.buffers()]
                    if t.is_floating_point() and t.dtype != torch.float32})
    if found:
        model.float()
        if log:
            log(f"model: {'/'.join(found)} weights converted to float32 (for half precision on the device, "
                "run edgeseq quantize --mode fp16 on the exported file)")
    return model


def split_call(ref: str) -> tuple[str, list[Any], dict[str, Any]]:
    """``"net.py:Net(6, hidden=64)"`` -> ``("net.py:Net", [6], {"hidden": 64})``; arguments must be literals.

    Lets a model class whose constructor needs its sizes be named directly, without a factory file.

    >>> split_call("models/net.py:Net(6, hidden=64)")
    ('models/net.py:Net', [6], {'hidden': 64})
    """
    import ast

    ref = str(ref)
    if not ref.endswith(")") or "(" not in ref.rpartition(":")[2]:
        return ref, [], {}
    cut = ref.index("(", ref.rindex(":") if ":" in ref else 0)
    name, call = ref[:cut], ref[cut:]
    try:
        node = ast.parse(f"f{call}", mode="eval").body
        assert isinstance(node, ast.Call)
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        if len(kwargs) != len(node.keywords):
            raise ValueError("**kwargs")
    except (SyntaxError, ValueError, AssertionError):
        raise ModelLoadError(f"model reference {ref!r}: the arguments in {call} must be literals (numbers, strings, "
                             "lists, dicts, True/False/None), e.g. 'net.py:Net(6, hidden=64)'") from None
    return name, args, kwargs


def _signature_hint(factory: Any) -> str:
    """``(input_size=..., hidden=...)`` from the factory's required parameters, for error messages."""
    import inspect

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return "(...)"
    required = [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return "(" + ", ".join(f"{n}=..." for n in required) + ")" if required else "()"


def resolve_factory(ref: str) -> Any:
    """Import the module named in ``ref`` and return its factory callable."""
    target, sep, attr = str(ref).rpartition(":")
    if not sep or not target or not attr:
        raise ModelLoadError(
            f"model reference {ref!r} must look like 'path/to/file.py:factory' or 'package.module:factory'"
        )
    module = _import_file(target) if target.endswith(".py") or "/" in target or "\\" in target else _import_module(target)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise ModelLoadError(f"{target} has no attribute {attr!r}; callables there: {', '.join(names[:12]) or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelLoadError(f"{ref}: {attr!r} is not callable; name a function or class returning an nn.Module")
    return obj


def _import_module(name: str) -> Any:
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        with _own_argv(name):
            return importlib.import_module(name)
    except SystemExit as exc:
        raise ModelLoadError(_exited(name, exc)) from None
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ModelLoadError(f"cannot import module {name!r}: {exc}; use 'path/to/file.py:factory' for a file") from None
        raise ModelLoadError(f"importing {name!r} failed: {exc}; install the missing package") from None
    except Exception as exc:
        raise ModelLoadError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from exc


def _import_file(target: str) -> Any:
    path = Path(target).resolve()
    if not path.exists():
        raise ModelLoadError(f"{target}: no such file")
    # A file inside a package is imported under its dotted name so its own package imports work.
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    name = ".".join(parts)
    try:
        with _own_argv(target):
            if len(parts) > 1:
                return importlib.import_module(name)
            spec = importlib.util.spec_from_file_location(f"edgeseq_user_{path.stem}", path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            return module
    except ModelLoadError:
        raise
    except SystemExit as exc:
        raise ModelLoadError(_exited(target, exc)) from None
    except SyntaxError as exc:
        raise ModelLoadError(f"{target}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except ImportError as exc:
        raise ModelLoadError(f"{target}: import failed: {exc}") from None
    except Exception as exc:
        raise ModelLoadError(f"{target}: running the file failed: {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _own_argv(target: str) -> Iterator[None]:
    """While a model file is imported, ``sys.argv`` is just its name: a file that parses the command line at
    import (argparse at top level) reads no arguments instead of edgeseq's own."""
    saved = sys.argv
    sys.argv = [target]
    try:
        yield
    finally:
        sys.argv = saved


def _exited(target: str, exc: SystemExit) -> str:
    return (f"{target}: the file exited while being imported (sys.exit({exc.code!r}), or argparse missing required "
            "arguments); move that code under if __name__ == \"__main__\":")


def accepts_lengths(model: Any) -> bool:
    """True when ``model.forward`` takes a ``lengths`` argument (for padded-batch references)."""
    try:
        return "lengths" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
