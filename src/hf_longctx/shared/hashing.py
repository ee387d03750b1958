"""Integer hashing for counter-based random numbers: a mask bit or a uniform as a pure function of (seed, counters),
so that a backward or a recomputation regenerates it instead of storing it, and a compiled graph computes it in
tensor ops (the Longformer's dropout masks, the Reformer's compiled dropout streams)."""

from __future__ import annotations

import torch

M32 = 0xFFFFFFFF


def fmix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's finaliser on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & M32
    return x ^ (x >> 16)
