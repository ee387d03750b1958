# Generated from src/hf_longctx/shared/common.py by tools/sync_common.py: edit that file, not this copy.
"""Input checks shared by every variant: bad input gets an error that names the problem.

This file is the source; `python tools/sync_common.py` copies it into each variant folder as
``longctx_common.py`` (a variant folder must be self-contained for remote code), and
``tests/test_common_copies.py`` fails when a copy drifts.
"""

from __future__ import annotations

import torch


def check_token_inputs(input_ids, inputs_embeds, vocab_size: int, hidden_size: int | None = None) -> tuple[int, int]:
    """Check that exactly one of ``input_ids`` / ``inputs_embeds`` is given, ids are in the vocabulary and (given
    ``hidden_size``) embeddings are that wide.

    Returns ``(batch_size, seq_len)``.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    given, name = (input_ids, "input_ids") if input_ids is not None else (inputs_embeds, "inputs_embeds")
    if not isinstance(given, torch.Tensor):  # a list reached `.dim()` and failed with an AttributeError
        raise ValueError(f"{name} must be a torch.Tensor, got {type(given).__name__}")
    shape = tuple(given.shape[:2])
    # Nothing to attend to: without this, batch 0 or length 0 ended in a ZeroDivisionError, an IndexError or a
    # reshape error deep inside the attention op, or in an empty output that silently stood in for a result.
    if given.dim() >= 2 and 0 in shape:
        raise ValueError(f"the input is empty (batch size {shape[0]}, sequence length {shape[1]}): give at least "
                         "one row of at least one token")
    if input_ids is not None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point:
            raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
            raise ValueError(
                f"input_ids hold ids in [{int(input_ids.min())}, {int(input_ids.max())}] but the vocabulary has "
                f"{vocab_size} entries: is the tokenizer the one this model was trained with?"
            )
        return tuple(input_ids.shape)
    if inputs_embeds.dim() != 3:
        raise ValueError(f"inputs_embeds must have shape (batch, seq_len, hidden), got {tuple(inputs_embeds.shape)}")
    if hidden_size is not None and inputs_embeds.shape[-1] != hidden_size:  # else a shape error inside a matmul
        raise ValueError(f"inputs_embeds must be {hidden_size} wide (the model's hidden size), got "
                         f"{inputs_embeds.shape[-1]}")
    return tuple(inputs_embeds.shape[:2])


def check_mask(name: str, mask, shape: tuple[int, int]) -> torch.Tensor | None:
    """Check a ``(batch, seq_len)`` 0/1 mask and return it as bool (``None`` stays ``None``)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):  # a list failed with an AttributeError on `.shape`
        raise ValueError(f"{name} must be a torch.Tensor of shape {tuple(shape)}, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} like the input, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must contain only 0 and 1, got values {torch.unique(mask)[:8].tolist()}")
    return mask.bool()


def check_length(seq_len: int, max_len: int, what: str = "max_position_embeddings") -> None:
    """Fail early, with the numbers, when a sequence is longer than the model's position table."""
    if seq_len > max_len:
        raise ValueError(
            f"the input has {seq_len} positions but this model supports at most {max_len} ({what}); "
            "split the document into segments or convert the model to a longer length"
        )


def check_class_labels(labels, num_classes: int, name: str = "labels") -> None:
    """Integer labels must be classes in ``[0, num_classes)`` or -100 (ignored by the loss): a label past them
    was an ``IndexError: Target 7 is out of bounds`` from inside torch's cross-entropy. Float labels (regression,
    multi-label) are not classes and pass."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        return
    bad = labels[(labels != -100) & ((labels < 0) | (labels >= num_classes))]
    if bad.numel():
        raise ValueError(f"{name} hold {sorted(set(bad.tolist()))[:8]} but there are {num_classes} classes: each "
                         f"label must be in [0, {num_classes}), or -100 to be ignored")


def take_past_key_values(kwargs: dict, cache=None, *, accepted: bool = True, model: str = "this model"):
    """Route ``past_key_values=`` (transformers' older name for the generation state, still accepted by its own
    models) to ``cache``, removing it from ``kwargs``. A model that keeps no generation state (``accepted=False``)
    refuses it by name: a cache swallowed by ``**kwargs`` made a decoding step run as a fresh sequence."""
    past = kwargs.pop("past_key_values", None)
    if past is None:
        return cache
    if not accepted:
        raise ValueError(f"{model} keeps no generation state: past_key_values= cannot be used with it (only the "
                         "causal-LM heads take a cache)")
    if cache is not None and cache is not past:
        raise ValueError("pass the generation state once, as cache= or as past_key_values=, not both")
    return past
