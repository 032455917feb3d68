"""``nn.MultiheadAttention`` with its lengths kept dynamic, for the duration of an export.

PyTorch's ``F.multi_head_attention_forward`` reshapes its projections with ``q.view(tgt_len, bsz *
num_heads, head_dim)``, and both torch.onnx exporters write ``tgt_len`` as the example's length: the file
runs at that length only (ONNX Runtime: "The input tensor cannot be reshaped to the requested shape").
This is a long-standing PyTorch issue (pytorch#120075, pytorch#122321, pytorch#117209) that hits every
LSTM + attention model and ``nn.TransformerEncoderLayer``.  :func:`exportable_attention` swaps in the same
computation written with reshapes that name only the head sizes (``unflatten(-1, (heads, head_dim))``),
and turns PyTorch's fused fast path off so the swap is what gets traced.  The parity gate then compares
the file with the model running PyTorch's own attention.

Configurations it does not cover (``add_bias_kv``, ``add_zero_attn``, ``static_k``/``static_v``,
dropout while training, unbatched inputs) run PyTorch's function unchanged.

>>> with exportable_attention():                                  # doctest: +SKIP
...     torch.onnx.export(model, args, "m.onnx", dynamo=False, dynamic_axes=...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def _attention(original: Any) -> Any:
    """``F.multi_head_attention_forward`` (same signature and results) in length-agnostic ops."""
    import torch
    import torch.nn.functional as F

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
        embed = int(out_proj_weight.shape[0])
        head_dim = embed // num_heads
        if use_separate_proj_weight:
            w_q, w_k, w_v = q_proj_weight, k_proj_weight, v_proj_weight
        else:
            w_q, w_k, w_v = in_proj_weight.chunk(3)
        b_q, b_k, b_v = in_proj_bias.chunk(3) if in_proj_bias is not None else (None, None, None)

        def heads(x: Any, w: Any, b: Any) -> Any:  # (length, batch, embed) -> (batch, heads, length, head_dim)
            return F.linear(x, w, b).unflatten(-1, (num_heads, head_dim)).permute(1, 2, 0, 3)

        q = heads(query, w_q, b_q) * (float(head_dim) ** -0.5)
        k, v = heads(key, w_k, b_k), heads(value, w_v, b_v)
        scores = torch.matmul(q, k.transpose(-2, -1))  # (batch, heads, target, source)
        if attn_mask is not None:
            mask = attn_mask if attn_mask.dim() == 2 else attn_mask.unflatten(0, (-1, num_heads))
            scores = (scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool
                      else scores + mask.to(scores.dtype))
        if key_padding_mask is not None:  # (batch, source): True (or -inf) marks padding
            pad = key_padding_mask[:, None, None, :]
            scores = (scores.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool
                      else scores + pad.to(scores.dtype))
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v).permute(2, 0, 1, 3).flatten(2)  # (target, batch, embed)
        out = F.linear(out, out_proj_weight, out_proj_bias)
        if not need_weights:
            return out, None
        return out, weights.mean(dim=1) if average_attn_weights else weights

    return forward


@contextlib.contextmanager
def exportable_attention() -> Iterator[None]:
    """Within: ``nn.MultiheadAttention`` (and the transformer layers built on it) trace with dynamic lengths."""
    import torch
    import torch.nn.functional as F

    original = F.multi_head_attention_forward
    fastpath = torch.backends.mha.get_fastpath_enabled()
    F.multi_head_attention_forward = _attention(original)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        F.multi_head_attention_forward = original
        torch.backends.mha.set_fastpath_enabled(fastpath)
