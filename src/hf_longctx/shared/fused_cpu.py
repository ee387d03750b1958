"""PyTorch's fused CPU attention kernel, as the Longformer and Reformer ops call it.

``aten/src/ATen/native/cpu/FlashAttentionKernel.cpp``: private entry points, stable since torch 2.3. Unlike the public
``F.scaled_dot_product_attention`` they return the row log-sum-exp, which lets an op merge two kernel calls exactly
(the split-softmax trick of flash-decoding) and run the kernel's own backward. They have no dropout: an op with
attention dropout takes its unfused path.

Generated into each variant folder that uses it as ``longctx_fused_cpu.py`` by ``tools/sync_common.py``.
"""

from __future__ import annotations

import torch

FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
FLASH_CPU_BWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def flash_cpu_available(q: torch.Tensor) -> bool:
    """The kernel exists in this torch build and ``q`` is on the CPU (dtype and dropout are the op's to check)."""
    return FLASH_CPU is not None and FLASH_CPU_BWD is not None and q.device.type == "cpu"
