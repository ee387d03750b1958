"""What every path of the attention op shares: the score a forbidden key gets, and the dtype scores are
softmaxed in.
"""

from __future__ import annotations

import torch


# Scores of forbidden keys. Finite on purpose: a row whose keys are all
# forbidden (a padding query) then softmaxes to a harmless uniform row that the
# caller zeroes, instead of NaN that would leak into gradients.
_MASKED_SCORE = -1e30


def _softmax_dtype(scores: torch.Tensor) -> torch.Tensor:
    # Softmax in at least float32 (transformers' Longformer does the same);
    # float64 stays float64 so that the tests can compare exactly.
    return scores if scores.dtype == torch.float64 else scores.float()


def _masked_score(dtype: torch.dtype) -> torch.Tensor:
    # -1e30 where the dtype holds it (float16 does not: its most negative finite value instead).
    return torch.tensor(max(_MASKED_SCORE, torch.finfo(dtype).min), dtype=dtype)
