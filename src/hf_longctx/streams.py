"""Stream training, as the Transformer-XL paper trains (section 3.2 and its released code): the corpus is cut into
``B`` contiguous streams, batch ``t`` holds segment ``t`` of every stream, and each layer's memory of batch ``t - 1``
is carried into batch ``t`` across optimizer steps, so a model trained on segments of ``L`` tokens learns to use
context far beyond ``L``.

:class:`StreamDataset` lays the corpus out; :class:`StreamTrainer` carries the memories. Requirements (checked where
they can be):

- batches in dataset order: the trainer uses a sequential sampler (no shuffling) and ``per_device_train_batch_size``
  (and ``per_device_eval_batch_size`` for evaluation streams) must equal the number of streams, so row ``b`` of
  every batch is stream ``b``;
- one set of streams per process: a single process (multi-process training would give each rank other rows and
  break continuity; it is refused);
- a model whose forward takes ``mems`` and returns ``mems`` (hf_longctx's Transformer-XL causal LM).

Memories are reset at the start of every epoch (the streams start again) and for evaluation, which runs its own
streams from empty memories and leaves the training memories untouched.

For document-level training without streams (shuffled documents, each read whole in segments inside
``forward``), the standard ``Trainer`` needs none of this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import Trainer, TrainerCallback, default_data_collator


class StreamDataset(torch.utils.data.Dataset):
    """A token sequence as ``n_streams`` contiguous streams served segment by segment.

    Stream ``b`` is the ``b``-th of ``n_streams`` equal slices of ``token_ids``. Item ``t * n_streams + b`` is segment
    ``t`` of stream ``b``: ``input_ids`` (its ``segment_length`` tokens; the last segment may be shorter, equally in
    every stream), ``labels`` (the same ids, which Trainer counts tokens with) and ``shift_labels`` (the next token
    of each position, which crosses the segment boundary, so that no token goes unpredicted; the causal-LM loss
    uses them instead of shifting ``labels``). Read in order with batch size ``n_streams``, batch ``t`` continues
    batch ``t - 1`` row by row.
    """

    def __init__(self, token_ids: Sequence[int] | torch.Tensor, n_streams: int, segment_length: int):
        ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
        for name, value in (("n_streams", n_streams), ("segment_length", segment_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        per_stream = (ids.numel() - 1) // n_streams  # positions with a next token, per stream
        if per_stream < 1:
            raise ValueError(f"{ids.numel()} tokens cannot make {n_streams} streams of at least 2 tokens")
        self.n_streams, self.segment_length = n_streams, segment_length
        # (B, per_stream + 1): stream b ends with the token its last position predicts (the next stream's first)
        self.streams = torch.stack([ids[b * per_stream: (b + 1) * per_stream + 1] for b in range(n_streams)])
        self.n_segments = math.ceil(per_stream / segment_length)

    def __len__(self) -> int:
        return self.n_segments * self.n_streams

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        t, b = divmod(index, self.n_streams)
        start = t * self.segment_length
        end = min(start + self.segment_length, self.streams.shape[1] - 1)
        ids = self.streams[b, start:end]
        return {"input_ids": ids, "labels": ids, "shift_labels": self.streams[b, start + 1:end + 1]}


class _ResetEachEpoch(TrainerCallback):
    def __init__(self, trainer: "StreamTrainer"):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.train_mems = None  # the streams start again from their first segment


class StreamTrainer(Trainer):
    """``Trainer`` that carries the model's memories from each training batch into the next (see the module
    docstring for what it requires). ``train_mems`` holds the memories for the next training batch."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("data_collator", default_data_collator)
        super().__init__(*args, **kwargs)
        if self.args.label_names is None:  # keeps the shift_labels column, and needs it for an eval loss
            self.label_names = ["labels", "shift_labels"]
        self.train_mems = None
        self._eval_mems = None
        self.add_callback(_ResetEachEpoch(self))

    def _check_streams(self, dataset, field: str = "per_device_train_batch_size") -> None:
        if self.args.world_size != 1:
            raise ValueError(f"StreamTrainer needs one process (one set of streams), got world size {self.args.world_size}")
        n = getattr(dataset, "n_streams", None)
        batch = getattr(self.args, field)
        if n is not None and n != batch:
            raise ValueError(
                f"{field} ({batch}) must equal the number of streams ({n}): row b of every batch is stream b"
            )

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        self._check_streams(dataset)
        return torch.utils.data.SequentialSampler(dataset)  # never shuffle: batch t continues batch t - 1

    def _get_eval_sampler(self, eval_dataset):
        # A batch of other size would mix two segments of one stream (or split one across batches) silently.
        self._check_streams(eval_dataset, "per_device_eval_batch_size")
        return torch.utils.data.SequentialSampler(eval_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        training = model.training
        mems = self.train_mems if training else self._eval_mems
        if mems is not None and mems[0].shape[0] != inputs["input_ids"].shape[0]:
            raise ValueError(
                f"a batch of {inputs['input_ids'].shape[0]} rows follows one of {mems[0].shape[0]}: stream batches "
                "must all hold every stream"
            )
        if mems is not None:
            inputs = {**inputs, "mems": mems}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if training:
            self.train_mems = outputs["mems"]  # detached by the model
        else:
            self._eval_mems = outputs["mems"]
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, *args, **kwargs):
        """Evaluation reads its own streams from empty memories; the training memories are kept for the next step."""
        self._eval_mems = None
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._eval_mems = None


__all__ = ["StreamDataset", "StreamTrainer"]
