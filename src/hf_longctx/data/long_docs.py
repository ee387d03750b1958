"""Turning long token streams into model inputs: windows with overlap, packed blocks, padding, global masks.

Everything here works on plain lists of token ids (what ``tokenizer(text, add_special_tokens=False)["input_ids"]``
gives) and knows nothing about a model, so the same helpers serve classification, QA and language modelling:

- :func:`segment_with_stride`: overlapping windows over a document longer than the model's input, each with the
  offset it starts at; :func:`lm_labels` scores every token once across them (the sliding-window perplexity of
  transformers' "Perplexity of fixed-length models" guide).
- :func:`pack_blocks`: documents concatenated, separator between them, cut into equal blocks (``group_texts`` of
  transformers' ``run_clm.py``).
- :func:`pad_to_multiple`: one sequence padded to a multiple of N (a window size); batches use
  :class:`hf_longctx.collator.LongContextCollator`.
- :func:`global_mask_first_token` / :func:`global_mask_span` / :func:`global_mask_question`: Longformer's global
  attention for classification (the first token) and QA (the question's tokens).
- :func:`special_tokens_template`: where a tokenizer puts its special tokens around one or two sequences, so that
  windows and QA inputs built from ids get the same ``<s> ... </s>`` as ``tokenizer(text)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IGNORE_INDEX = -100  # ignore_index of torch's cross_entropy, which every transformers loss uses


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class Window:
    """One window of a long sequence: ``input_ids == ids[start:start + len(input_ids)]``.

    ``new_tokens`` counts the tokens at the end of the window that no earlier window covered (all of them in the
    first window): the ones to score when every token must be counted once.
    """

    start: int
    input_ids: list[int]
    new_tokens: int


def segment_with_stride(ids: Sequence[int], window: int, stride: int) -> list[Window]:
    """Windows of ``window`` tokens starting every ``stride`` tokens, so consecutive windows share
    ``window - stride`` tokens, until one reaches the end of ``ids``.

    Every token is in at least one window and no window is inside the one before it. The last window is moved back
    to end at the last token, so every window has ``window`` tokens unless ``ids`` is shorter than that. Special
    tokens are not added: use :func:`special_tokens_template` and leave room for them in ``window``. An empty
    ``ids`` gives no window.

    Example: 11 tokens, ``window=4, stride=3`` -> [0:4], [3:7], [6:10], then [7:11] with one new token.
    """
    _positive_int("window", window)
    _positive_int("stride", stride)
    if stride > window:
        raise ValueError(f"stride ({stride}) must not exceed window ({window}): tokens between windows would be lost")
    ids = list(ids)
    windows, covered, start = [], 0, 0
    while covered < len(ids):
        end = min(start + window, len(ids))
        if len(ids) > window and end - start < window:
            start = end - window  # the last window keeps its full length, ending at the last token
        windows.append(Window(start=start, input_ids=ids[start:end], new_tokens=end - covered))
        covered = end
        start += stride
    return windows


def lm_labels(window: Window, ignore_index: int = IGNORE_INDEX) -> list[int]:
    """Causal-LM labels for a window: its ids, with ``ignore_index`` on the tokens earlier windows already scored.

    Those tokens are context only, so summing the loss over all windows counts every token of the sequence once
    (a causal model shifts labels by one, so the first token of the first window is never scored).
    """
    context = len(window.input_ids) - window.new_tokens
    return [ignore_index] * context + window.input_ids[context:]


def pack_blocks(streams: Iterable[Sequence[int]], block_size: int, separator: Sequence[int] = ()) -> list[list[int]]:
    """Concatenate token streams, ``separator`` (e.g. ``[eos_token_id]``) after each, and cut into full blocks.

    The tail that does not fill a block is dropped, as ``group_texts`` in transformers' ``run_clm.py`` does. Blocks
    cross document boundaries: the separator is what tells a model a new document starts.
    """
    _positive_int("block_size", block_size)
    flat: list[int] = []
    for stream in streams:
        flat.extend(stream)
        flat.extend(separator)
    n_blocks = len(flat) // block_size
    return [flat[i * block_size:(i + 1) * block_size] for i in range(n_blocks)]


def pad_to_multiple(ids: Sequence[int], multiple: int, pad_value: int) -> list[int]:
    """``ids`` with ``pad_value`` appended up to the next multiple of ``multiple`` (unchanged if already one).

    Banded attention needs lengths that are multiples of its window; pad ``attention_mask`` (with 0) and
    ``global_attention_mask`` (0) the same way, or let the collator's ``pad_to_multiple_of`` do it per batch.
    """
    _positive_int("multiple", multiple)
    return list(ids) + [pad_value] * (-len(ids) % multiple)


def global_mask_first_token(length: int) -> list[int]:
    """Longformer's global attention for classification: 1 on the first token (``<s>``/CLS), 0 elsewhere."""
    _positive_int("length", length)
    return [1] + [0] * (length - 1)


def global_mask_span(length: int, start: int, stop: int) -> list[int]:
    """1 on positions ``start <= i < stop`` (e.g. a question's tokens), 0 elsewhere."""
    _positive_int("length", length)
    if not 0 <= start <= stop <= length:
        raise ValueError(f"need 0 <= start <= stop <= length, got start={start}, stop={stop}, length={length}")
    return [0] * start + [1] * (stop - start) + [0] * (length - stop)


def global_mask_question(input_ids: Sequence[int], sep_token_id: int) -> list[int]:
    """Longformer's global attention for QA with the question first: 1 on every token before the first separator.

    This is transformers' ``_compute_global_attention_mask(..., before_sep_token=True)`` for one sequence and
    what ``LongctxLongformerForQuestionAnswering`` computes when no mask is given.
    """
    ids = list(input_ids)
    if sep_token_id not in ids:
        raise ValueError(
            f"no separator (sep_token_id={sep_token_id}) in input_ids: cannot tell where the question ends"
        )
    return global_mask_span(len(ids), 0, ids.index(sep_token_id))


def special_tokens_template(tokenizer, pair: bool = False) -> tuple[list[int], ...]:
    """The special ids a tokenizer wraps around one sequence, ``(prefix, suffix)``, or a pair,
    ``(prefix, middle, suffix)``: ``tokenizer(a)`` is ``prefix + ids(a) + suffix`` and ``tokenizer(a, b)`` is
    ``prefix + ids(a) + middle + ids(b) + suffix``.

    RoBERTa-style BPE: ``[0], [2]`` and ``[0], [2, 2], [2]``; ByT5: ``[], [1]`` and ``[], [1], [1]``. Found by
    encoding two probe texts, since transformers 5's fast tokenizers no longer expose
    ``build_inputs_with_special_tokens``; raises ``ValueError`` if the wrapping is not made of special tokens.
    """
    a, b = "a", "b"
    ids_a = tokenizer(a, add_special_tokens=False)["input_ids"]
    ids_b = tokenizer(b, add_special_tokens=False)["input_ids"]
    full = tokenizer(a, b)["input_ids"] if pair else tokenizer(a)["input_ids"]
    specials = set(tokenizer.all_special_ids)
    for i in range(len(full) - len(ids_a) + 1):
        if full[i:i + len(ids_a)] != ids_a:
            continue
        prefix, rest = full[:i], full[i + len(ids_a):]
        if not pair:
            parts = (prefix, rest)
        else:
            j = next((j for j in range(len(rest) - len(ids_b) + 1) if rest[j:j + len(ids_b)] == ids_b), None)
            if j is None:
                continue
            parts = (prefix, rest[:j], rest[j + len(ids_b):])
        if all(t in specials for part in parts for t in part):
            return tuple(list(part) for part in parts)
    raise ValueError(f"{type(tokenizer).__name__} does not wrap sequences in special tokens only: got {full} for "
                     f"{'a pair' if pair else 'one sequence'}")


__all__ = [
    "IGNORE_INDEX", "Window", "global_mask_first_token", "global_mask_question", "global_mask_span", "lm_labels",
    "pack_blocks", "pad_to_multiple", "segment_with_stride", "special_tokens_template",
]
