"""Extractive question answering over long contexts.

transformers 5 removed the ``question-answering`` pipeline (``transformers.pipelines.REMOVED_TASKS``); this is
the small part of it an extractive model needs: tokenize ``question + context`` as a pair (question first, so a
Longformer QA head makes the question global by default), pick the best span inside the context, and map it
back to characters.
"""

from __future__ import annotations

import torch


def answer_question(model, tokenizer, question: str, context: str, *, max_answer_tokens: int = 30) -> dict:
    """The best answer span: ``{"answer", "start", "end", "score"}`` with character offsets into ``context``.

    ``score`` is the span's probability under the model's independent start/end softmaxes.
    """
    if not tokenizer.is_fast:
        raise ValueError("answer_question needs a fast tokenizer (it maps tokens back to characters)")
    enc = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0]
    in_context = torch.tensor([s == 1 for s in enc.sequence_ids(0)])
    if not in_context.any():
        raise ValueError("the context is empty after tokenization")
    with torch.no_grad():
        out = model(**enc)
    start = out.start_logits[0].float().masked_fill(~in_context, float("-inf")).log_softmax(-1)
    end = out.end_logits[0].float().masked_fill(~in_context, float("-inf")).log_softmax(-1)
    # score[i, j] = start[i] + end[j] for i <= j < i + max_answer_tokens
    n = start.shape[0]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = (j >= i) & (j < i + max_answer_tokens)
    scores = (start[:, None] + end[None, :]).masked_fill(~allowed, float("-inf"))
    best = int(scores.flatten().argmax())
    s, e = divmod(best, n)
    char_start, char_end = int(offsets[s][0]), int(offsets[e][1])
    return {
        "answer": context[char_start:char_end], "start": char_start, "end": char_end,
        "score": float(scores[s, e].exp()),
    }
