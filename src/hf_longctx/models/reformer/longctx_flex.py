# Generated from src/hf_longctx/shared/flex.py by tools/sync_common.py: edit that file, not this copy.
"""What the FlexAttention paths (``attn_implementation="flex_attention"``) share: the compiled op and the refusals
of what PyTorch 2.13 cannot run.

PyTorch's ``torch.nn.attention.flex_attention`` runs attention over the tiles a block mask lists, with ``mask_mod``
and ``score_mod`` applied inside them, in one compiled kernel. Uncompiled it is a reference that builds every
score, so the ops here call it compiled. On the CPU (torch 2.13) it has no backward, no float64, no log-sum-exp
output and fails inside larger compiled graphs, so the variants use it there for inference only and in a compiled
function of its own.
"""

from __future__ import annotations

import functools

import torch

# Compilations of the op per process before Dynamo would fall back to the uncompiled reference (quadratic
# memory): static shapes on the CPU compile once per length, so allow many (Dynamo's default is 8).
_RECOMPILES = 64


@functools.cache
def _compiled(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    # Static shapes on the CPU: after a second length, Inductor's dynamic-shape CPU kernel can fail to compile
    # (torch 2.13: "'cur_qSplitSize4' was not declared"), so there each new length compiles anew (seconds).
    return torch.compile(flex_attention, dynamic=False if device_type == "cpu" else None)


def flex_attention_call(q, k, v, **kwargs):
    """``flex_attention(q, k, v, **kwargs)``: traced as is inside a compiled model, else the compiled op."""
    if torch.compiler.is_compiling():
        from torch.nn.attention.flex_attention import flex_attention

        return flex_attention(q, k, v, **kwargs)
    with torch._dynamo.config.patch(recompile_limit=_RECOMPILES):
        return _compiled(q.device.type)(q, k, v, **kwargs)


def check_flex_usable(q: torch.Tensor, dropout_p: float, dropout_field: str) -> None:
    """Refuse, by name, what FlexAttention cannot run: attention dropout (it changes scores before the softmax,
    never the probabilities), and on the CPU a backward or float64."""
    if dropout_p > 0.0:
        raise ValueError(
            f'attn_implementation="flex_attention" has no attention dropout (FlexAttention changes scores before the '
            f"softmax), and this model is training with attention dropout {dropout_p}: set the config's "
            f'{dropout_field} to 0, or use attn_implementation="sdpa" (the default).'
        )
    if q.device.type == "cpu" and q.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            'attn_implementation="flex_attention" cannot train on the CPU: PyTorch has no FlexAttention backward '
            'there. Use it for inference (model.eval() or torch.no_grad()), train on a GPU, or use '
            'attn_implementation="sdpa" (the default).'
        )
    if q.device.type == "cpu" and q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f'attn_implementation="flex_attention" on the CPU runs float32, float16 and bfloat16, not {q.dtype}; use '
            'attn_implementation="sdpa" (the default) for it.'
        )
