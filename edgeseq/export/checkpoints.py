"""Checkpoints: state dicts as training scripts save them, and pickles only when the user trusts them.

``load_weights`` reads ``torch.load(weights_only=True)`` or safetensors; training checkpoints that nest
the state dict and wrapper key prefixes are unwrapped (:func:`find_state_dict`).  With
``allow_pickle`` (``--allow-pickle``) whole pickled models and checkpoints holding Python objects load
too; without it they are refused, naming the classes the pickle holds (read from its opcodes,
:func:`pickled_classes`, so nothing is imported or run).

>>> load_weights(model, "checkpoint.pt")      # doctest: +SKIP
"""

from __future__ import annotations

import io
import itertools
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, require

# Globals a plain checkpoint (tensors in dicts, lists and numbers) references when pickled.
_PLAIN_GLOBALS = ("torch.", "collections.", "builtins.", "__builtin__.", "_codecs.", "numpy.")


def pickled_classes(path: str | Path) -> list[str]:
    """The classes (``module.Name``) that a ``torch.save`` file's pickle names, other than those of a
    plain checkpoint; read from its opcodes, so nothing is imported or run.

    >>> pickled_classes("whole_model.pt")   # doctest: +SKIP
    ['zoo.AttnPool']
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
        else:  # a legacy (pre-1.6) file: several pickles in a row (magic, version, sys info, the object), or one
            data = Path(path).read_bytes()
    except (zipfile.BadZipFile, OSError, StopIteration, KeyError):
        return []
    found: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(4 if is_legacy_torch_save(path) else 1):
        found += _globals_of_one_pickle(stream)
    return [g for g in dict.fromkeys(found) if g.startswith("torch.nn.") or not g.startswith(_PLAIN_GLOBALS)]


# the first pickle of a legacy (``_use_new_zipfile_serialization=False``) torch.save file: protocol 2, its magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def is_legacy_torch_save(path: str | Path) -> bool:
    """Whether ``path`` was written by ``torch.save(..., _use_new_zipfile_serialization=False)`` (PyTorch < 1.6's format)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
    except OSError:
        return False


def _globals_of_one_pickle(stream: io.BytesIO) -> list[str]:
    """The globals that the pickle starting at ``stream``'s position names; leaves the stream after it."""
    import pickletools

    found: list[str] = []
    pushed: list[str | None] = []  # strings pushed (directly or from the memo), for STACK_GLOBAL
    memo: dict[int, str | None] = {}
    last: str | None = None
    try:
        for op, arg, _pos in pickletools.genops(stream):
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
    return found


def factory_hint(qualname: str) -> str:
    """The REF that names a pickled class in an error message (``pkg.nets.Net`` -> ``pkg/nets.py:Net``)."""
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


def load_pickled_model(path: Path) -> Any:
    """The ``nn.Module`` in a trusted ``torch.save(model)`` file (or under a checkpoint key like ``"model"``)."""
    import torch

    obj = _torch_load_trusted(path)
    if isinstance(obj, dict):  # {"model": model, "epoch": ...}
        obj = next((obj[k] for k in (*STATE_KEYS, *obj) if isinstance(obj.get(k), torch.nn.Module)), obj)
    if not isinstance(obj, torch.nn.Module):
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not an nn.Module; give the model as "
                             f"path/to/file.py:factory --weights {path.name}")
    return obj


def pickled_instance_of(path: str | Path, cls: Any) -> Any:
    """The ``cls`` instance a trusted ``torch.save(model)`` file holds (also under a checkpoint key), else None.

    For a class whose constructor needs arguments: unpickling restores the saved object without calling
    it.  A class saved from a training script (``__main__.Net``) is looked up in ``cls``'s module.
    """
    if not isinstance(cls, type) or not Path(path).is_file():
        return None
    try:
        obj = _torch_load_trusted(Path(path), sys.modules.get(cls.__module__))
    except ModelLoadError:
        return None
    if isinstance(obj, dict):
        obj = next((obj[k] for k in (*STATE_KEYS, *obj) if isinstance(obj.get(k), cls)), obj)
    return obj if isinstance(obj, cls) else None


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
        if path.stat().st_size == 0:
            raise ModelLoadError(f"{path}: the file is empty; save the weights with torch.save(model.state_dict(), path)")
        if _is_torchscript_archive(path):  # (torch.load would warn about it, then refuse it as pickled objects)
            raise ModelLoadError(f"{path}: is a TorchScript model, not weights; export it directly: "
                                 f"edgeseq export {path} -o model.onnx")
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            text = str(exc).strip() or type(exc).__name__
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
# wrappers stack (torch.compile of a DataParallel model saves "_orig_mod.module."): chains of up to three
_PREFIX_CHAINS = ("", *dict.fromkeys("".join(c) for n in (1, 2, 3) for c in itertools.product(WRAPPER_PREFIXES, repeat=n)))


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
        for prefix in _PREFIX_CHAINS:
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


def _is_torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a zip written by ``torch.jit.save`` (it holds ``constants.pkl`` and code/)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)
