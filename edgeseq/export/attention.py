"""``nn.MultiheadAttention`` with its lengths kept dynamic, for the duration of an export.

PyTorch's ``F.multi_head_attention_forward`` reshapes its projections with ``q.view(tgt_len, bsz *
num_heads, head_dim)``, and both torch.onnx exporters write ``tgt_len`` as the example's length: the file
runs at that length only (ONNX Runtime: "The input tensor cannot be reshaped to the requested shape").
This is a long-standing PyTorch issue (pytorch#120075, pytorch#122321, pytorch#117209) that hits every
LSTM + attention model and ``nn.TransformerEncoderLayer``.

* :func:`exportable_attention` (tracing) swaps in the same computation written with reshapes that name
  only the head sizes (:func:`edgeseq.export.attention_ops.attention`), and turns PyTorch's fused fast path
  off so the swap is what gets traced.
* :func:`scriptable_attention` (scripting a model that loops over time in Python) compiles
  ``nn.MultiheadAttention.forward`` as :func:`edgeseq.export.attention_ops.module_forward`: PyTorch's own
  forward compiles into branches the ONNX exporter cannot translate ("is_autocast_enabled").

The parity gate then compares the file with the model running PyTorch's own attention.  Configurations the
swap does not cover (``add_bias_kv``, ``add_zero_attn``, ``static_k``/``static_v``, dropout while training,
unbatched inputs) keep PyTorch's code.

>>> with exportable_attention():                                  # doctest: +SKIP
...     torch.onnx.export(model, args, "m.onnx", dynamo=False, dynamic_axes=...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def _traceable(original: Any) -> Any:
    """``F.multi_head_attention_forward`` (same signature and results) through the head-only-reshape ops."""
    from .attention_ops import attention

    def forward(query: Any, key: Any, value: Any, embed_dim_to_check: int, num_heads: int, in_proj_weight: Any,
                in_proj_bias: Any, bias_k: Any, bias_v: Any, add_zero_attn: bool, dropout_p: float,
                out_proj_weight: Any, out_proj_bias: Any, training: bool = True, key_padding_mask: Any = None,
                need_weights: bool = True, attn_mask: Any = None, use_separate_proj_weight: bool = False,
                q_proj_weight: Any = None, k_proj_weight: Any = None, v_proj_weight: Any = None,
                static_k: Any = None, static_v: Any = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Any, Any]:
        if (bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None
                or (training and dropout_p > 0) or query.dim() != 3 or (is_causal and attn_mask is None)):
            return original(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k,
                            bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=training,
                            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
                            use_separate_proj_weight=use_separate_proj_weight, q_proj_weight=q_proj_weight,
                            k_proj_weight=k_proj_weight, v_proj_weight=v_proj_weight, static_k=static_k,
                            static_v=static_v, average_attn_weights=average_attn_weights, is_causal=is_causal)
        if use_separate_proj_weight:
            w_q, w_k, w_v = q_proj_weight, k_proj_weight, v_proj_weight
        else:
            w_q, w_k, w_v = in_proj_weight.chunk(3)
        b_q, b_k, b_v = in_proj_bias.chunk(3) if in_proj_bias is not None else (None, None, None)
        return attention(query, key, value, num_heads, w_q, w_k, w_v, b_q, b_k, b_v, out_proj_weight, out_proj_bias,
                         key_padding_mask, need_weights, attn_mask, average_attn_weights)

    return forward


@contextlib.contextmanager
def _fastpath_off() -> Iterator[None]:
    import torch

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@contextlib.contextmanager
def exportable_attention() -> Iterator[None]:
    """Within: ``nn.MultiheadAttention`` (and the transformer layers built on it) trace with dynamic lengths."""
    import torch.nn.functional as F

    original = F.multi_head_attention_forward
    F.multi_head_attention_forward = _traceable(original)
    try:
        with _fastpath_off():
            yield
    finally:
        F.multi_head_attention_forward = original


@contextlib.contextmanager
def scriptable_attention(model: Any) -> Iterator[None]:
    """Within: ``torch.jit.script`` compiles ``model``'s ``nn.MultiheadAttention`` layers as
    :func:`~edgeseq.export.attention_ops.module_forward`, when every one of them is a configuration it covers."""
    from torch import nn

    layers = [m for m in model.modules() if type(m) is nn.MultiheadAttention]
    if not layers or any(m.bias_k is not None or m.add_zero_attn for m in layers):
        yield
        return
    from .attention_ops import module_forward

    original = nn.MultiheadAttention.forward
    _forget_compiled(nn.MultiheadAttention)  # TorchScript would reuse a forward it compiled before
    nn.MultiheadAttention.forward = module_forward
    try:
        with _fastpath_off():
            yield
    finally:
        nn.MultiheadAttention.forward = original
        _forget_compiled(nn.MultiheadAttention)  # and later scripting in this process gets PyTorch's own again


def _forget_compiled(module_type: Any) -> None:
    """Drop TorchScript's cached compilation of ``module_type`` (it keys compiled modules by their class)."""
    try:
        from torch.jit._recursive import concrete_type_store

        concrete_type_store.type_store.pop(module_type, None)
    except (ImportError, AttributeError):  # another torch: its cache may then serve a stale forward
        pass
