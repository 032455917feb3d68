"""Assemble a Keras Sequential/functional model config into one PyTorch module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError, UnsupportedModelError
from .layers import MASK_ZERO_REFUSAL, MASKING_REFUSAL, MERGE_LAYERS, BuildContext, build_layer, refuse
from .modules import Embedding, Graph
from .reader import KerasFile, layer_name, model_layers
from .weights import WeightBag

DEFAULT_SEQ_LEN = 8
_INT_DTYPES = ("int", "uint")

BagFor = Callable[[str], WeightBag]


class KerasModel(nn.Module):
    """A Keras model rebuilt in PyTorch: same inputs and outputs (batch-first, channels-last).

    ``keras_input_shape`` is the saved input shape, batch axis included, ``None`` for
    dynamic axes (like Keras's ``model.input_shape``).
    """

    def __init__(
        self,
        graph: nn.Module,
        keras_input_shape: tuple[int | None, ...],
        *,
        token_ids: bool = False,
        vocab_size: int = 2,
        name: str = "keras_model",
    ) -> None:
        super().__init__()
        self.body = graph
        self.keras_input_shape = keras_input_shape
        self.token_ids = token_ids
        self.vocab_size = vocab_size
        self.keras_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """A batch of 2 at the saved shape (dynamic axes get length 8); fixed seed."""
        shape = (2,) + tuple(DEFAULT_SEQ_LEN if d is None else int(d) for d in self.keras_input_shape[1:])
        g = torch.Generator().manual_seed(0)
        if self.token_ids:
            return (torch.randint(0, max(self.vocab_size, 1), shape, generator=g, dtype=torch.int64),)
        return (torch.randn(shape, generator=g, dtype=torch.float32),)

    def extra_repr(self) -> str:
        return f"name={self.keras_name!r}, keras_input_shape={self.keras_input_shape}"


def build_model(kf: KerasFile) -> KerasModel:
    """Rebuild the model described by ``kf`` (config + weights) in PyTorch, in eval mode."""
    cfg = kf.config
    if not [lc for lc in model_layers(cfg) if lc.get("class_name") != "InputLayer"]:
        raise ModelLoadError(f"{kf.path}: the Keras model config lists no layers")
    empty = WeightBag([])

    def bag_for(name: str) -> WeightBag:
        return kf.weights.get(name, empty)

    graph = build_graph(cfg, bag_for, own_bags=True, keras_major=kf.major_version)
    shape, dtype = model_input(cfg)
    embeddings = [m for m in graph.modules() if isinstance(m, Embedding)]
    first = graph.layers[graph.plan[0][0]] if isinstance(graph, Graph) and graph.plan else None
    token_ids = dtype.startswith(_INT_DTYPES) or isinstance(first, Embedding)
    vocab = embeddings[0].embed.num_embeddings if embeddings else 2
    model = KerasModel(graph, shape, token_ids=token_ids, vocab_size=vocab, name=layer_name(cfg, "model"))
    return model.eval()


def build_graph(cfg: dict[str, Any], bag_for: BagFor, *, own_bags: bool, keras_major: int) -> Graph:
    """Graph module for a Sequential or functional model config.

    ``own_bags``: each layer has its own WeightBag (top level) rather than sharing its
    parent's (a model nested in TimeDistributed or used as a layer).
    """

    def nested(sub_cfg: dict[str, Any], ctx: BuildContext) -> nn.Module:
        return build_graph(sub_cfg, lambda _name: ctx.bag, own_bags=False, keras_major=keras_major)

    probe = _prober(cfg)

    def build(layer_cfg: dict[str, Any], partial: Callable[[], Graph]) -> nn.Module | None:
        name = layer_name(layer_cfg)
        bag = bag_for(name)
        ctx = BuildContext(bag, keras_major, nested, lambda: probe(partial()))
        module = build_layer(layer_cfg, ctx)
        if own_bags:
            bag.check_empty(name)
        return module

    if cfg.get("class_name") == "Sequential" or isinstance(cfg.get("config"), list):
        return _sequential(cfg, build)
    return _functional(cfg, build)


Build = Callable[[dict[str, Any], Callable[[], Graph]], "nn.Module | None"]


def _prober(cfg: dict[str, Any]) -> Callable[[Graph], tuple[int | None, ...] | None]:
    """``probe(graph)``: output shape of a partial graph (None where it follows a dynamic input axis)."""
    try:
        shape, dtype = model_input(cfg)
    except ModelLoadError:
        return lambda _graph: None
    tdtype = torch.int64 if dtype.startswith(_INT_DTYPES) else torch.float32

    def run(graph: Graph, fill: int) -> tuple[int, ...]:
        x = torch.zeros((1,) + tuple(fill if d is None else int(d) for d in shape[1:]), dtype=tdtype)
        with torch.no_grad():
            return tuple(graph.eval()(x).shape)

    def probe(graph: Graph) -> tuple[int | None, ...] | None:
        try:
            a = run(graph, 16)
            b = run(graph, 23) if any(d is None for d in shape[1:]) else a
        except Exception:  # a layer that cannot run at these lengths: shape unknown
            return None
        if len(a) != len(b):
            return None
        return (None,) + tuple(x if x == y else None for x, y in zip(a[1:], b[1:]))

    return probe


def _sequential(cfg: dict[str, Any], build: Build) -> Graph:
    modules: list[nn.Module] = []

    def chain() -> Graph:
        return Graph(modules, [(i, (i,), False) for i in range(len(modules))], len(modules))

    for layer_cfg in model_layers(cfg):
        if layer_cfg.get("class_name") == "InputLayer":
            continue
        module = build(layer_cfg, chain)
        if module is not None:
            modules.append(module)
    return chain()


Ref = tuple[str, int, int]


def _functional(cfg: dict[str, Any], build: Build) -> Graph:
    inner = cfg.get("config") or {}
    by_name = {layer_name(lc): lc for lc in model_layers(cfg)}
    inputs, outputs = _ref_list(inner.get("input_layers")), _ref_list(inner.get("output_layers"))
    model = layer_name(cfg, "model")
    if len(inputs) != 1:
        raise UnsupportedModelError(
            f"Keras model {model!r} has {len(inputs)} inputs; edgeseq imports single-input models only"
        )
    if len(outputs) != 1:
        raise UnsupportedModelError(
            f"Keras model {model!r} has {len(outputs)} outputs; edgeseq imports single-output models only"
        )
    for layer_cfg in by_name.values():  # said of the masking layer, before a later layer refuses the mask it gets
        if layer_cfg.get("class_name") == "Embedding" and (layer_cfg.get("config") or {}).get("mask_zero"):
            raise refuse(layer_cfg, MASK_ZERO_REFUSAL)
        if layer_cfg.get("class_name") == "Masking":
            raise refuse(layer_cfg, MASKING_REFUSAL)
    slots: dict[tuple[str, int], int] = {(inputs[0][0], inputs[0][1]): 0}
    modules: list[nn.Module] = []
    module_of: dict[str, int | None] = {}
    plan: list[tuple[int, tuple[int, ...], bool]] = []

    def resolve(ref: Ref) -> int:
        name, node_idx, tensor_idx = ref
        if name not in by_name:
            raise ModelLoadError(f"Keras model {model!r}: unknown layer {name!r} in its graph")
        layer_cfg = by_name[name]
        if tensor_idx != 0:
            raise refuse(layer_cfg, "using a layer's second output (return_state, ...) is not supported")
        if (name, node_idx) in slots:
            return slots[(name, node_idx)]
        if layer_cfg.get("class_name") == "InputLayer":
            raise UnsupportedModelError(f"Keras model {model!r}: several inputs are not supported")
        nodes = layer_cfg.get("inbound_nodes") or []
        if node_idx >= len(nodes):
            raise ModelLoadError(f"Keras model {model!r}: layer {name!r} has no call #{node_idx}")
        in_slots = tuple(resolve(r) for r in _node_inputs(nodes[node_idx], layer_cfg))
        if name not in module_of:
            first_in = in_slots[0] if in_slots else 0
            module = build(layer_cfg, lambda: Graph(modules, list(plan), first_in))
            module_of[name] = None if module is None else len(modules)
            if module is not None:
                modules.append(module)
        idx = module_of[name]
        is_merge = layer_cfg.get("class_name") in MERGE_LAYERS
        if idx is None or (not is_merge and len(in_slots) != 1):
            if len(in_slots) != 1:
                raise refuse(layer_cfg, f"called on {len(in_slots)} tensors; expected one")
            slot = in_slots[0]
        else:
            plan.append((idx, in_slots, is_merge))
            slot = len(plan)
        slots[(name, node_idx)] = slot
        return slot

    out = resolve(outputs[0])
    return Graph(modules, plan, out)


def _ref_list(v: Any) -> list[Ref]:
    if isinstance(v, dict):
        v = list(v.values())
    if not isinstance(v, list) or not v:
        return []
    if isinstance(v[0], str):
        v = [v]
    return [(str(r[0]), int(r[1]), int(r[2])) for r in v]


def _tensor_refs(obj: Any) -> list[Ref]:
    """Keras 3 ``__keras_tensor__`` references found anywhere in ``obj``."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            h = obj["config"]["keras_history"]
            return [(str(h[0]), int(h[1]), int(h[2]))]
        return [r for v in obj.values() for r in _tensor_refs(v)]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _tensor_refs(v)]
    return []


def _node_inputs(node: Any, cfg: dict[str, Any]) -> list[Ref]:
    """Input references of one call of a layer (Keras 3 dict nodes or Keras 2 list nodes)."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        if _tensor_refs(node.get("kwargs") or {}):
            raise refuse(cfg, "calls with extra tensor arguments (initial_state, mask, ...) are not supported")
        args = [a for a in node.get("args") or [] if _tensor_refs(a)]
        if len(args) != 1:
            raise refuse(cfg, f"called with {len(args)} tensor arguments; expected one")
        return _tensor_refs(args[0])
    refs: list[Ref] = []
    for item in node or []:  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        kwargs = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
        if any(k not in ("training", "mask") or (k == "mask" and v is not None) for k, v in kwargs.items()):
            raise refuse(cfg, f"calls with extra arguments ({', '.join(kwargs)}) are not supported")
        refs.append((str(item[0]), int(item[1]), int(item[2])))
    return refs


def _dtype_name(v: Any) -> str:
    if isinstance(v, dict):
        return str((v.get("config") or {}).get("name", "float32"))
    return str(v or "float32")


def model_input(cfg: dict[str, Any]) -> tuple[tuple[int | None, ...], str]:
    """Saved input shape (batch axis included) and dtype of a Sequential/functional config."""
    layers = model_layers(cfg)
    inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    first: dict[str, Any] | None = None
    if cfg.get("class_name") != "Sequential" and isinstance(inner, dict) and "input_layers" in inner:
        refs = _ref_list(inner.get("input_layers"))
        first = next((lc for lc in layers if refs and layer_name(lc) == refs[0][0]), None)
    elif layers:
        first = layers[0]
    shape: Any = None
    dtype = "float32"
    if first is not None:
        c = first.get("config") or {}
        dtype = _dtype_name(c.get("dtype"))
        if c.get("batch_shape") is not None:
            shape = c["batch_shape"]
        elif c.get("batch_input_shape") is not None:
            shape = c["batch_input_shape"]
        elif c.get("input_shape") is not None:
            shape = [None] + list(c["input_shape"])
        elif (first.get("build_config") or {}).get("input_shape") is not None:
            shape = first["build_config"]["input_shape"]
    if shape is None and isinstance(inner, dict) and inner.get("build_input_shape") is not None:
        shape = inner["build_input_shape"]
    if shape is None:
        raise ModelLoadError(
            f"Keras model {layer_name(cfg, 'model')!r} does not record its input shape; "
            "build it with keras.Input(shape=...) before saving"
        )
    if first is not None and first.get("class_name") == "Embedding":
        dtype = "int64"
    return tuple(None if d is None else int(d) for d in shape), dtype
