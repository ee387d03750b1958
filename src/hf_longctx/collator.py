"""Batching for long-context models: pad every per-token field, each with its own padding value.

transformers' ``DataCollatorWithPadding`` pads through the tokenizer, which knows ``input_ids``,
``attention_mask`` and ``token_type_ids`` but not ``global_attention_mask`` (Longformer's tokenizer does not pad
it either, see REFERENCES.md): a batch of ragged global masks fails to stack. :class:`LongContextCollator` pads all
of them together, to the longest example and optionally up to a multiple of N.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

# Padding value of every per-token field this collator knows; ``input_ids`` uses the collator's pad_token_id.
# -100 is the ignore_index of torch's cross_entropy, which every transformers token-level loss uses.
PAD_VALUES = {
    "attention_mask": 0,
    "global_attention_mask": 0,
    "token_type_ids": 0,
    "special_tokens_mask": 1,
    "labels": -100,
}


@dataclass
class LongContextCollator:
    """Turn a list of tokenized examples into a batch of tensors, padding per-token fields to one length.

    Each example is a mapping with ``input_ids`` (a list or 1-D tensor of ints) and any of ``attention_mask``,
    ``global_attention_mask``, ``token_type_ids``, ``special_tokens_mask`` (same length as ``input_ids``) and
    ``labels`` / ``label``:

    - ``input_ids`` are padded with ``pad_token_id``, the masks and ``token_type_ids`` with 0, token-level labels
      with -100 (ignored by the loss). A missing ``attention_mask`` is built: 1 on every given token.
    - A scalar label per example (classification, regression) is stacked, int -> ``long``, float -> ``float32``.
      ``label`` is renamed ``labels``, as ``DataCollatorWithPadding`` does, since Trainer and the models want that.
    - Every tensor is ``long`` except float labels; Trainer moves the batch to the device.

    Args:
        pad_token_id: the tokenizer's ``pad_token_id``.
        pad_to_multiple_of: round the padded length up to a multiple of this (e.g. the attention window of a model
            that needs it, or 8 for tensor cores). ``None`` pads to the longest example only.
        padding_side: ``"right"`` puts padding after the tokens, ``"left"`` before them. Every hf_longctx model
            reads a row's real tokens as it reads the row alone (positions, Reformer chunks and Transformer-XL
            segments count real tokens; classifiers read the first or last real token), so outputs at real tokens
            do not depend on the side (tests/model_suite.py). Transformer-XL rows with left padding cannot
            continue memories (refused by name).
        pad_values: padding value per extra per-token field, e.g. ``{"position_ids": 1}``; overrides
            :data:`PAD_VALUES`.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_side: str = "right"
    pad_values: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int):
            raise ValueError(f"pad_token_id must be an integer, got {self.pad_token_id!r}")
        if self.pad_to_multiple_of is not None and (
            isinstance(self.pad_to_multiple_of, bool) or not isinstance(self.pad_to_multiple_of, int)
            or self.pad_to_multiple_of < 1
        ):
            raise ValueError(f"pad_to_multiple_of must be a positive integer or None, got {self.pad_to_multiple_of!r}")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        pad_values = {**PAD_VALUES, **self.pad_values, "input_ids": self.pad_token_id}
        rows = [self._normalise(i, ex, pad_values) for i, ex in enumerate(examples)]
        keys = rows[0].keys()
        for i, row in enumerate(rows[1:], start=1):
            if row.keys() != keys:
                raise ValueError(
                    f"example {i} has fields {sorted(row)} but example 0 has {sorted(keys)}: every example of a batch "
                    "needs the same fields"
                )

        length = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            length = math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for key in keys:
            values = [row[key] for row in rows]
            if len({v.dim() for v in values}) > 1:
                raise ValueError(f"{key} is a sequence in some examples and a scalar in others")
            if values[0].dim() == 1:
                batch[key] = self._pad(values, length, pad_values[key])
            else:  # one scalar per example
                batch[key] = torch.stack(values)
        return batch

    def _normalise(self, index: int, example: Mapping, pad_values: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """The example as tensors, ``label`` renamed, the attention mask filled in, lengths checked."""
        if "input_ids" not in example:
            raise ValueError(f"example {index} has no input_ids (fields: {sorted(example)})")
        if "label" in example and "labels" in example:
            raise ValueError(f"example {index} has both 'label' and 'labels'")
        row = {}
        for key, value in example.items():
            name = "labels" if key == "label" else key
            try:
                tensor = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"field {key!r} of example {index} is not numeric: {err}") from None
            if tensor.dtype.is_complex or tensor.dim() > 1:
                raise ValueError(
                    f"field {key!r} of example {index} must be a number or a 1-D sequence of numbers, got a "
                    f"{tensor.dtype} tensor of shape {tuple(tensor.shape)}"
                )
            if tensor.dim() == 1 and name not in pad_values:
                raise ValueError(
                    f"field {key!r} of example {index} is a sequence but the collator does not know its padding "
                    f"value: pass pad_values={{{key!r}: ...}}"
                )
            if tensor.dtype.is_floating_point and name != "labels":
                raise ValueError(f"field {key!r} of example {index} holds floats; only labels may")
            row[name] = tensor.float() if tensor.dtype.is_floating_point else tensor.long()
        n = row["input_ids"].numel()
        if row["input_ids"].dim() != 1:
            raise ValueError(f"input_ids of example {index} must be a sequence, got a scalar")
        row.setdefault("attention_mask", torch.ones(n, dtype=torch.long))
        for key, tensor in row.items():
            if tensor.dim() == 1 and len(tensor) != n:
                raise ValueError(f"{key} of example {index} has {len(tensor)} entries but input_ids has {n}")
        return row

    def _pad(self, values: list[torch.Tensor], length: int, pad_value: int) -> torch.Tensor:
        out = torch.full((len(values), length), pad_value, dtype=values[0].dtype)
        for i, v in enumerate(values):
            if self.padding_side == "right":
                out[i, : len(v)] = v
            else:
                out[i, length - len(v):] = v
        return out


def mask_tokens(input_ids: torch.Tensor, *, mask_token_id: int, maskable: torch.Tensor, vocab_size: int,
                replaceable: torch.Tensor | None = None, mlm_probability: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking as RoBERTa applies it (Liu et al. 2019, section 4.1; transformers'
    ``DataCollatorForLanguageModeling.torch_mask_tokens``): each ``maskable`` token is chosen with probability
    ``mlm_probability``; a chosen token becomes ``mask_token_id`` 80% of the time, a random id 10% and stays itself
    10%. Returns ``(inputs, labels)``: ``labels`` holds the original id at chosen positions and -100 elsewhere.

    ``maskable``: a bool tensor shaped like ``input_ids``, False on padding and special tokens. ``replaceable``: the
    ids a random replacement draws from (default: all of ``range(vocab_size)``; pass the non-special ones so that no
    ``<pad>`` or ``<s>`` is put inside the text).
    """
    chosen = (torch.rand(input_ids.shape, generator=generator) < mlm_probability) & maskable
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    draw = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[chosen & (draw < 0.8)] = mask_token_id
    randomise = chosen & (draw >= 0.8) & (draw < 0.9)  # the last 10% keep their token
    pool = torch.arange(vocab_size) if replaceable is None else replaceable
    picks = torch.randint(len(pool), input_ids.shape, generator=generator)
    inputs[randomise] = pool[picks][randomise]
    return inputs, labels


@dataclass
class MaskedLMCollator:
    """:class:`LongContextCollator`, then :func:`mask_tokens` on every batch that has no ``labels`` yet (training:
    RoBERTa's dynamic masking, new masks every epoch); a batch that brings its ``labels`` (evaluation, masked once
    with a fixed seed so every run is scored on the same masks) is only padded. ``global_attention_mask`` is padded
    as :class:`LongContextCollator` does; padding and special tokens are never masked.

    Each piece's masks are drawn from a generator seeded by ``seed``, ``epoch`` and the piece's ids, not from torch's
    global generator: Trainer collates the first batch after ``--resume`` before it restores its random state
    (transformers' ``trainer.py``, ``rng_to_sync``), so global draws would give that batch other masks than the
    uninterrupted run did. Set ``epoch`` at the start of each epoch (``hf_longctx.train`` does, with a callback).
    """

    pad_token_id: int
    mask_token_id: int
    special_ids: tuple[int, ...]
    vocab_size: int
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None
    seed: int = 0
    epoch: int = 0

    def __post_init__(self):
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability!r}")
        self._pad = LongContextCollator(self.pad_token_id, self.pad_to_multiple_of)
        special = torch.tensor(sorted({*self.special_ids, self.pad_token_id, self.mask_token_id}))
        self._special = special
        ids = torch.arange(self.vocab_size)
        self._replaceable = ids[~torch.isin(ids, special)]

    def _generator(self, ids: torch.Tensor) -> torch.Generator:
        import hashlib

        digest = hashlib.sha256(f"{self.seed}/{self.epoch}/".encode() + ids.numpy().tobytes()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)

    def __call__(self, examples):
        batch = self._pad(examples)
        if "labels" in batch:
            return batch
        batch["labels"] = torch.full_like(batch["input_ids"], -100)
        for i, n in enumerate(batch["attention_mask"].sum(-1).tolist()):  # right padding: the piece is [:n]
            piece = batch["input_ids"][i, :n]
            # Masked alone, so that its masks do not depend on how long the rest of the batch is.
            batch["input_ids"][i, :n], batch["labels"][i, :n] = mask_tokens(
                piece, mask_token_id=self.mask_token_id, maskable=~torch.isin(piece, self._special),
                vocab_size=self.vocab_size, replaceable=self._replaceable, mlm_probability=self.mlm_probability,
                generator=self._generator(piece))
        return batch


__all__ = ["LongContextCollator", "MaskedLMCollator", "PAD_VALUES", "mask_tokens"]
