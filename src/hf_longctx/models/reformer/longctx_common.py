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
        if torch.compiler.is_compiling():  # a compiled graph cannot branch on the values: it asserts at run time
            torch._assert_async(((input_ids >= 0) & (input_ids < vocab_size)).all(),
                                f"input_ids hold ids outside the vocabulary of {vocab_size} entries")
        elif input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
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
    if mask.dtype != torch.bool and torch.compiler.is_compiling():
        torch._assert_async(((mask == 0) | (mask == 1)).all(), f"{name} must contain only 0 and 1")
    elif mask.dtype != torch.bool and mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must contain only 0 and 1, got values {torch.unique(mask)[:8].tolist()}")
    return mask.bool()


def check_length(seq_len, max_len: int, what: str = "max_position_embeddings") -> None:
    """Fail early, with the numbers, when a sequence is longer than the model's position table.

    ``seq_len`` may be a 0-d tensor (the longest row's last position + 1): a compiled or exported graph cannot
    read its value, so there the check is an assertion at run time rather than a graph break."""
    if isinstance(seq_len, torch.Tensor):
        if torch.compiler.is_compiling():
            torch._assert_async(seq_len <= max_len, f"the input has more positions than this model supports "
                                                    f"({max_len}, {what})")
            return
        seq_len = int(seq_len)
    if seq_len > max_len:
        raise ValueError(
            f"the input has {seq_len} positions but this model supports at most {max_len} ({what}); "
            "split the document into segments or convert the model to a longer length"
        )


def check_range(name: str, values: torch.Tensor, low: int, high: int, what: str = "") -> None:
    """Every entry of ``values`` must be in ``[low, high)`` (an index past a table was an IndexError inside
    ``nn.Embedding``); asserted at run time in a compiled graph."""
    bound = f"{name} must be in [{low}, {high})" + (f" ({what})" if what else "")
    if not values.numel():
        return
    if torch.compiler.is_compiling():
        torch._assert_async(((values >= low) & (values < high)).all(), bound)
        return
    smallest, largest = int(values.min()), int(values.max())
    if smallest < low or largest >= high:
        raise ValueError(f"{bound}, got values in [{smallest}, {largest}]")


def check_class_labels(labels, num_classes: int, name: str = "labels") -> None:
    """Integer labels must be classes in ``[0, num_classes)`` or -100 (ignored by the loss): a label past them
    was an ``IndexError: Target 7 is out of bounds`` from inside torch's cross-entropy. Float labels (regression,
    multi-label) are not classes and pass."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        return
    outside = (labels != -100) & ((labels < 0) | (labels >= num_classes))
    if torch.compiler.is_compiling():  # a compiled graph asserts at run time
        torch._assert_async(~outside.any(), f"{name} must be in [0, {num_classes}) or -100")
        return
    bad = labels[outside]
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


def has_padding_before_tokens(real: torch.Tensor | None) -> bool:
    """True when some row of the ``(B, T)`` bool mask has padding before one of its real tokens (left padding).

    A compiled graph cannot branch on it: there the answer is False and the graph asserts, at run time, that no
    row is left-padded (an error, never a silently different result; pad on the right for a compiled model)."""
    if real is None:
        return False
    before = (real[:, 1:] & ~real[:, :-1]).any()
    if torch.compiler.is_compiling():
        torch._assert_async(~before, "a compiled model takes right padding only (a row has padding before its "
                                     "tokens): pad on the right, or run the model uncompiled")
        return False
    return bool(before)


def generate_left_padded_rows_alone(generate, generation_config, args: tuple, kwargs: dict):
    """``generate(*args, **kwargs)``, with each row of a left-padded batch generated on its own real tokens and
    the rows put back together as transformers lays out a batch (prompt columns, then the new tokens; padding
    before a shorter prompt and after a row that stopped early).

    For a model whose cached decoding counts positions in columns, this is how every row gets exactly the tokens
    it gets alone; it costs one ``generate`` call per row. A batch without padding before real tokens is passed
    through unchanged.
    """
    ids = kwargs.get("input_ids", args[0] if args else None)
    mask = kwargs.get("attention_mask")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or not isinstance(mask, torch.Tensor) \
            or tuple(mask.shape) != tuple(ids.shape) or not has_padding_before_tokens(mask.bool()):
        return generate(*args, **kwargs)
    real = mask.bool()
    B, W = ids.shape
    starts = (~real).sum(-1)  # (B,) padding columns before each row's first real token
    if not bool((real == (torch.arange(W, device=real.device)[None] >= starts[:, None])).all()):
        raise ValueError("generate() takes left padding (padding before the prompt) or right padding, not padding "
                         "between the tokens of a prompt")
    for name in ("return_dict_in_generate", "streamer", "assistant_model"):
        if kwargs.get(name):
            raise ValueError(f"{name} is not supported with a left-padded batch of prompts of different lengths by "
                             "this model (its rows are generated one at a time); generate each prompt alone")
    rest = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
    if rest.get("max_new_tokens") is None:  # the batch's budget, counted from its width as transformers does
        max_length = rest.pop("max_length", None) or generation_config.max_length
        rest["max_new_tokens"] = max(0, max_length - W)
    pad = rest.get("pad_token_id", generation_config.pad_token_id)
    if pad is None:
        pad = rest.get("eos_token_id", generation_config.eos_token_id)
        pad = pad[0] if isinstance(pad, (list, tuple)) else pad
    rows = []
    for i in range(B):
        s = int(starts[i])
        row_kwargs = {k: (v[i:i + 1, s:] if v.dim() >= 2 and tuple(v.shape[:2]) == (B, W) else v[i:i + 1])
                      if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == B else v
                      for k, v in rest.items()}
        out = generate(input_ids=ids[i:i + 1, s:], attention_mask=mask[i:i + 1, s:], **row_kwargs)
        rows.append((s, out))
    new = max(out.shape[1] - (W - s) for s, out in rows)
    result = ids.new_full((sum(out.shape[0] for _, out in rows), W + new), 0 if pad is None else pad)
    r = 0
    for s, out in rows:  # num_return_sequences gives several rows per prompt, in order
        result[r:r + out.shape[0], s:s + out.shape[1]] = out
        r += out.shape[0]
    return result


def generate_within_length(generate, limit: int, what: str, args: tuple, kwargs: dict):
    """``generate(*args, **kwargs)`` stopped at a model's length instead of failing past its position table: a
    prompt longer than ``limit`` real tokens (``what`` names the limit) is refused before anything is decoded,
    and generation ends, with a warning, once the next token would need a position the model does not have.
    Padding takes no position."""
    import warnings

    from transformers import StoppingCriteria, StoppingCriteriaList

    ids, mask = kwargs.get("input_ids", args[0] if args else None), kwargs.get("attention_mask")
    pad_columns = 0
    if isinstance(ids, torch.Tensor) and ids.dim() == 2:
        longest = int(mask.sum(-1).max()) if isinstance(mask, torch.Tensor) and mask.numel() else ids.shape[-1]
        if longest == 0:
            raise ValueError("the prompt is empty: give at least one token to continue")
        if longest > limit:
            raise ValueError(f"the prompt has {longest} tokens but this model reads at most {limit} ({what})")
        pad_columns = ids.shape[-1] - longest
    asked = kwargs.get("max_new_tokens")
    cut = asked is None or not isinstance(ids, torch.Tensor) or ids.shape[-1] - pad_columns + asked > limit + 1

    class PositionLimit(StoppingCriteria):
        # The last token generated is never read back, so a sequence may end one token past `limit`.
        def __call__(self, input_ids, scores, **_):
            done = input_ids.shape[-1] - pad_columns > limit
            if done and cut:
                warnings.warn(f"generation stopped at the model's length: it reads at most {limit} tokens",
                              stacklevel=2)
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    criteria = StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
    criteria.append(PositionLimit())
    return generate(*args, stopping_criteria=criteria, **kwargs)


def check_token_labels(labels, shape: tuple[int, int], vocab_size: int, name: str = "labels") -> None:
    """Per-token labels: a ``(batch, seq_len)`` integer tensor like the input, of token ids or -100 (a wrong shape
    or a float dtype was a reshape or dtype error from inside torch's cross-entropy)."""
    if labels is None:
        return
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {tuple(shape)}, got {type(labels).__name__}")
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} like the input, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integer token ids (or -100), got dtype {labels.dtype}")
    check_class_labels(labels, vocab_size, name)
