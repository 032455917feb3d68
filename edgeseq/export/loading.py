"""Load a PyTorch model from a reference (``file.py:factory`` or ``package.module:factory``) and weights.

Loading ``file.py:factory`` *runs that file's code* (by design, like ``python file.py``);
only load files you trust.  Weights, in contrast, are never unpickled as arbitrary
objects (``torch.load(weights_only=True)`` or safetensors) unless the caller says it trusts the
file with ``allow_pickle=True`` (``--allow-pickle``): whole models saved with ``torch.save(model)``
and checkpoints holding Python objects (an ``argparse.Namespace`` of settings, say) need it.

>>> model = load_model("models/motion_lstm.py:build")        # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, require

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
    elif ":" not in Path(ref).name and Path(ref).is_file():
        model = load_torchscript(ref, allow_pickle)
    else:
        factory = resolve_factory(ref)
        try:
            model = factory()
        except TypeError as exc:
            raise ModelLoadError(f"{ref}: calling the factory failed ({exc}); it must take no required arguments") from None
        if not isinstance(model, torch.nn.Module):
            raise ModelLoadError(f"{ref}: the factory returned {type(model).__name__}, expected a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights, log, allow_pickle)
    return model.eval()


def model_and_source(model_or_ref: Any, weights: str | Path | None = None,
                     log: Callable[[str], None] | None = None, allow_pickle: bool = False) -> tuple[Any, str]:
    """(model in eval mode with ``weights`` loaded, a label for the card) from an nn.Module or a reference."""
    if isinstance(model_or_ref, (str, Path)):
        label = str(model_or_ref) + (f" --weights {Path(weights).name}" if weights is not None else "")
        return as_float32(load_model(str(model_or_ref), weights, log, allow_pickle), log), label
    model = model_or_ref.eval()
    if weights is not None:
        load_weights(model, weights, log, allow_pickle)
    return as_float32(model, log), type(model).__name__


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
        if any(n.endswith("data.pkl") for n in names):
            classes = pickled_classes(path)
            if not classes:
                raise ModelLoadError(f"{path}: a checkpoint of weights, not a model; give the model as "
                                     f"path/to/file.py:factory --weights {path.name}")
            if not allow_pickle:
                raise ModelLoadError(
                    f"{path}: a whole model pickled with torch.save(model) ({classes[0]}); unpickling runs code "
                    f"from the file, so edgeseq does it only with --allow-pickle (if you trust the file), or give "
                    f"{_factory_hint(classes[0])} --weights with torch.save(model.state_dict())")
            return _unpickled_model(path)
        raise ModelLoadError(f"{path}: not a model file; give path/to/file.py:factory, package.module:factory, a "
                             "TorchScript file (torch.jit.save) or a Keras .keras/.h5 file")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError with long texts
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(f"{path}: not a loadable TorchScript file ({first})") from None


# Globals a plain checkpoint (tensors in dicts, lists and numbers) references when pickled.
_PLAIN_GLOBALS = ("torch.", "collections.", "builtins.", "__builtin__.", "_codecs.", "numpy.")


def pickled_classes(path: str | Path) -> list[str]:
    """The classes (``module.Name``) that a ``torch.save`` file's pickle names, other than those of a
    plain checkpoint; read from its opcodes, so nothing is imported or run.

    >>> pickled_classes("whole_model.pt")   # doctest: +SKIP
    ['zoo.AttnPool']
    """
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
        else:  # a legacy (pre-1.6) or plain pickle file
            data = Path(path).read_bytes()
    except (zipfile.BadZipFile, OSError, StopIteration, KeyError):
        return []
    found: list[str] = []
    pushed: list[str | None] = []  # strings pushed (directly or from the memo), for STACK_GLOBAL
    memo: dict[int, str | None] = {}
    last: str | None = None
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
                last = None
            elif name == "STACK_GLOBAL":
                if len(pushed) >= 2 and pushed[-2] and pushed[-1]:
                    found.append(f"{pushed[-2]}.{pushed[-1]}")
                last = None
            elif name == "MEMOIZE":
                memo[len(memo)] = last
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = last
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                last = memo.get(int(arg))
                pushed.append(last)
            elif isinstance(arg, str) and ("UNICODE" in name or "STRING" in name):
                last = str(arg)
                pushed.append(last)
            else:
                last = None
    except Exception:  # noqa: BLE001 - a damaged pickle: report what was read
        pass
    return [g for g in dict.fromkeys(found) if g.startswith("torch.nn.") or not g.startswith(_PLAIN_GLOBALS)]


def _factory_hint(qualname: str) -> str:
    module, _, name = qualname.rpartition(".")
    if module in ("__main__", "") or module.startswith("torch."):
        return "path/to/file.py:factory"
    return f"{module.replace('.', '/')}.py:{name}"


def _torch_load_trusted(path: Path, main_module: Any = None) -> Any:
    """``torch.load(weights_only=False)`` with the file's folder and the working directory importable, and
    the usual failures (class defined in the saving script, module not importable) said in one line.

    Classes pickled from a training script run as ``__main__`` are looked up in ``main_module`` (the
    module of the model that ``--weights`` is loaded into), where the user's factory defined them.
    """
    import pickle
    import types

    import torch

    for folder in (str(Path.cwd()), str(path.resolve().parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    shim = None
    if main_module is not None:
        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if module == "__main__" and hasattr(main_module, name):
                    return getattr(main_module, name)
                return super().find_class(module, name)

        shim = types.SimpleNamespace(**{k: getattr(pickle, k) for k in ("load", "loads", "Unpickler", "__name__")})
        shim.Unpickler = Unpickler
    try:
        if shim is not None:
            return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=shim)
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(f"{path}: unpickling needs module {exc.name!r}, which cannot be imported; run from the "
                             f"folder that holds it or add that folder to PYTHONPATH") from None
    except AttributeError as exc:
        if "__main__" in str(exc):
            name = next((c.split(".")[-1] for c in pickled_classes(path) if c.startswith("__main__.")), "Net")
            raise ModelLoadError(
                f"{path}: the model's class {name} was defined in the script that saved it (__main__), so it cannot "
                f"be found by name; give that script's class as the model: path/to/train.py:{name} --weights "
                f"{path.name} --allow-pickle") from None
        raise ModelLoadError(f"{path}: unpickling failed: {exc}; give the model as path/to/file.py:factory "
                             "--weights with torch.save(model.state_dict())") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file or an object that cannot be rebuilt
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(f"{path}: unpickling failed ({type(exc).__name__}: {first})") from None


def _unpickled_model(path: Path) -> Any:
    import torch

    obj = _torch_load_trusted(path)
    if isinstance(obj, dict):  # {"model": model, "epoch": ...}
        obj = next((obj[k] for k in (*STATE_KEYS, *obj) if isinstance(obj.get(k), torch.nn.Module)), obj)
    if not isinstance(obj, torch.nn.Module):
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not an nn.Module; give the model as "
                             f"path/to/file.py:factory --weights {path.name}")
    return obj


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
        return importlib.import_module(name)
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
    except SyntaxError as exc:
        raise ModelLoadError(f"{target}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except ImportError as exc:
        raise ModelLoadError(f"{target}: import failed: {exc}") from None
    except Exception as exc:
        raise ModelLoadError(f"{target}: running the file failed: {type(exc).__name__}: {exc}") from exc


def load_weights(model: Any, weights: str | Path, log: Callable[[str], None] | None = None,
                 allow_pickle: bool = False) -> None:
    """Load a state dict into ``model`` safely (never unpickles arbitrary objects unless ``allow_pickle``).

    Training checkpoints that nest the state dict, and keys with a DataParallel/compile prefix, are
    unwrapped (:func:`find_state_dict`); ``log`` hears how.  With ``allow_pickle`` the file may also hold
    Python objects, or a whole model whose weights are then used.
    """
    torch = require("torch", "export")
    path = Path(weights)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        st = require("safetensors.torch", "export")
        try:
            state = st.load_file(str(path))  # type: ignore[attr-defined]
        except Exception as exc:
            raise ModelLoadError(f"{path}: not a valid safetensors file ({exc})") from None
    elif allow_pickle:
        state = _torch_load_trusted(path, sys.modules.get(type(model).__module__))
        if isinstance(state, dict):  # {"model": whole_model, "epoch": ...}
            state = next((state[k].state_dict() for k in STATE_KEYS if isinstance(state.get(k), torch.nn.Module)), state)
        if isinstance(state, torch.nn.Module):
            state = state.state_dict()
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            text = str(exc)
            if "weights_only" in text or "Unpickl" in text or "GLOBAL" in text:
                classes = pickled_classes(path)
                what = f" ({', '.join(classes[:3])})" if classes else ""
                raise ModelLoadError(
                    f"{path}: refused to load: the file holds pickled Python objects other than tensors{what}, "
                    "which could run code; pass --allow-pickle if you trust it, or save a plain state_dict "
                    "(torch.save(model.state_dict(), path)) or safetensors"
                ) from None
            raise ModelLoadError(f"{path}: not a valid PyTorch checkpoint ({text.splitlines()[0][:200]})") from None
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: expected a state_dict (a dict of tensors), found {type(state).__name__}")
    expected = set(model.state_dict())
    state, how = find_state_dict(state, expected, torch.Tensor)
    where = f" ({how})" if how else ""
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(f"{path}: weights do not fit the model{where}: " + _key_mismatch(missing, unexpected))
    own = model.state_dict()
    wrong = [f"{k} is {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
             for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        more = f" (and {len(wrong) - 2} more)" if len(wrong) > 2 else ""
        raise ModelLoadError(f"{path}: weights do not fit the model{where}: {'; '.join(wrong[:2])}{more}; build the "
                             "model with the sizes it was trained with")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")
        detail = "; ".join(s.strip() for s in first[1:3]) or first[0]
        raise ModelLoadError(f"{path}: weights do not fit the model: {detail[:400]}") from None
    if how and log:
        log(f"weights: {how}")


# Where training scripts put the model's weights inside a checkpoint dict, and the key prefixes that
# wrappers add: nn.DataParallel / DistributedDataParallel ("module."), torch.compile ("_orig_mod."),
# Lightning modules holding the network as ``self.model`` ("model.").
STATE_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network", "weights")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def find_state_dict(state: dict, expected: set[str], tensor_type: type) -> tuple[dict, str]:
    """The model's weights inside a loaded checkpoint ``state``, and how they were found ('' if as is).

    Accepts a plain state dict, a training checkpoint that nests it (``{"epoch": 3,
    "model_state_dict": {...}, "optimizer_state_dict": {...}}``), and keys carrying a wrapper's prefix
    (``module.lstm.weight_ih_l0``).  Only an exact key match is accepted, so nothing is guessed.

    >>> find_state_dict({"epoch": 1, "model_state_dict": {"module.w": t}}, {"w"}, Tensor)  # doctest: +SKIP
    ({'w': t}, "using checkpoint['model_state_dict'], keys without 'module.'")
    """
    candidates: list[tuple[str, dict]] = [("", state)]
    candidates += [(f"checkpoint[{k!r}]", state[k]) for k in STATE_KEYS if isinstance(state.get(k), dict)]
    best: tuple[int, dict, str] = (-1, state, "")
    for where, inner in candidates:
        tensors = {k: v for k, v in inner.items() if isinstance(k, str) and isinstance(v, tensor_type)}
        if not tensors or len(tensors) != len(inner):
            continue
        for prefix in ("", *WRAPPER_PREFIXES):
            if not all(k.startswith(prefix) for k in tensors):
                continue
            keys = {k[len(prefix):]: v for k, v in tensors.items()}
            how = ", ".join(filter(None, [f"using {where}" if where else "", f"keys without {prefix!r}" if prefix else ""]))
            if set(keys) == expected:
                return keys, how
            best = max(best, (len(expected & set(keys)), keys, how), key=lambda b: b[0])
    # no exact match: the closest candidate, so that the caller's mismatch message names the right keys
    return best[1], best[2]


def _key_mismatch(missing: list[str], unexpected: list[str]) -> str:
    """'3 missing (lstm.weight_ih_l0, ...); 2 unexpected (epoch, ...)' plus a hint for nested checkpoints."""
    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")

    parts = []
    if missing:
        parts.append(f"the model's {few(missing)} not in the file")
    if unexpected:
        parts.append(f"the file's {few(unexpected)} not in the model")
    hint = "; check that the factory builds the same architecture (layer names, sizes) as the one trained"
    return "; ".join(parts) + hint


def accepts_lengths(model: Any) -> bool:
    """True when ``model.forward`` takes a ``lengths`` argument (for padded-batch references)."""
    try:
        return "lengths" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
