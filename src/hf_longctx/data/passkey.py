"""Passkey retrieval as extractive QA: find a five-digit key hidden at a random depth of a long real text.

The task of Mohtashami & Jaggi, "Landmark Attention" (2023), used since to test how far a long-context
model can look back: one sentence, ``The pass key is 48213. Remember it.``, sits inside thousands of tokens of
unrelated text, and the model must answer ``What is the pass key?``. Here it is cast as extractive QA, the format of
``*ForQuestionAnswering`` heads: the answer is the token span of the key, and the question's tokens get global
attention. The filler is real text, the test split of :mod:`hf_longctx.data.kernel_docs` line by line (from a random
line, continuing into the next documents), rather than the original's repeated sentences ("The grass is green. The
sky is blue. ..."), so a model cannot find the key by spotting the one sentence that breaks a pattern.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from datasets import Dataset, Features, List, Value

from .kernel_docs import read_records
from .long_docs import global_mask_span, special_tokens_template

NEEDLE = ("The pass key is", " {key}", ". Remember it.\n")  # the key is tokenized on its own: its span is exact
QUESTION = "What is the pass key?"
DEFAULT_LENGTHS = (1024, 2048, 4096, 8192, 16384)
FILLER_SPLIT = "test"


def filler_lines() -> list[str]:
    """The filler pool: every line (with its ``\\n``) of the kernel-docs test split, documents in file order, each
    followed by an empty line. Documents mentioning a pass key would give a second candidate answer; none of the
    shipped ones does, and any that did would be left out."""
    lines = []
    for record in read_records():
        text = record["text"]
        if record["split"] != FILLER_SPLIT or "pass key" in text.lower() or "passkey" in text.lower():
            continue
        lines.extend(text.rstrip("\n").split("\n"))
        lines.append("")
    return [line + "\n" for line in lines]


class _LineTokens:
    """Token ids of filler lines, tokenized on first use (a few hundred per example) and kept for the next ones."""

    def __init__(self, tokenizer, lines: list[str]):
        self.tokenizer, self.lines, self.cache = tokenizer, lines, {}

    def take(self, first: int, n_tokens: int) -> tuple[list[list[int]], str]:
        """Whole lines from ``first`` on (wrapping round) until they hold ``n_tokens`` tokens; and their text."""
        pieces, text, total, i = [], [], 0, first
        while total < n_tokens:
            batch = [(i + k) % len(self.lines) for k in range(64)]
            missing = [j for j in batch if j not in self.cache]
            if missing:
                encoded = self.tokenizer([self.lines[j] for j in missing], add_special_tokens=False)["input_ids"]
                self.cache.update(zip(missing, encoded))
            for j in batch:
                if total >= n_tokens:
                    break
                pieces.append(self.cache[j])
                text.append(self.lines[j])
                total += len(self.cache[j])
            i += len(batch)
        return pieces, "".join(text)


def make_passkey_dataset(
    tokenizer,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    n_per_length: int = 10,
    seed: int = 0,
    question_first: bool = False,
) -> Dataset:
    """``n_per_length`` passkey examples of exactly ``length`` tokens for each of ``lengths``, deterministic in
    ``seed``.

    Each example is ``filler[:d] + needle + filler[d:]`` followed by the question, wrapped in the tokenizer's own
    special tokens for a pair (``<s> context </s></s> question </s>`` for a RoBERTa BPE). The needle is one line,
    ``The pass key is <key>. Remember it.``, put at the line boundary nearest a uniformly drawn depth; the key has
    five digits and does not occur in the filler around it. With ``question_first=True`` the question comes first
    (``<s> question </s></s> context </s>``), the layout of transformers' Longformer QA and of
    ``LongctxLongformerForQuestionAnswering``'s default global mask.

    Columns:

    - ``input_ids``, ``attention_mask`` (all ones): ``length`` tokens.
    - ``global_attention_mask``: 1 on the question's tokens (with ``question_first``, on everything before the
      first separator, ``<s>`` included, as Longformer's default).
    - ``start_positions``, ``end_positions``: the first and last token of the key (inclusive, as transformers' QA
      heads and losses take them); ``tokenizer.decode(input_ids[start:end + 1]).strip() == answer``.
    - ``answer`` (the key, a string), ``length``, ``depth``: the fraction of filler tokens before the needle, so
      the needle starts ``round(depth * filler_tokens)`` tokens into the context, ``filler_tokens`` being
      ``length`` minus the special tokens, the question and the needle (also a column).

    Every example draws from its own ``random.Random`` seeded by ``(seed, length, index)``: asking for more
    lengths or examples leaves the others unchanged.

    Long on purpose: the data set's recipe, step by step, as its provenance note describes it.
    """
    lengths = list(lengths)
    if not lengths or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in lengths):
        raise ValueError(f"lengths must be a non-empty list of positive integers, got {lengths!r}")
    if isinstance(n_per_length, bool) or not isinstance(n_per_length, int) or n_per_length < 1:
        raise ValueError(f"n_per_length must be a positive integer, got {n_per_length!r}")
    prefix, middle, suffix = special_tokens_template(tokenizer, pair=True)

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    question = ids(QUESTION)
    needle_head, needle_tail = ids(NEEDLE[0]), ids(NEEDLE[2])
    lines = filler_lines()
    line_tokens = _LineTokens(tokenizer, lines)
    rows = {name: [] for name in ("input_ids", "attention_mask", "global_attention_mask", "start_positions",
                                  "end_positions", "answer", "length", "depth", "filler_tokens")}
    for length in lengths:
        for index in range(n_per_length):
            rng = random.Random(f"passkey/{seed}/{length}/{index}")  # str seeds hash the same in every process
            target_depth = rng.random()
            first_line = rng.randrange(len(lines))
            key = str(rng.randrange(10_000, 100_000))
            key_ids = ids(NEEDLE[1].format(key=key))
            needle = needle_head + key_ids + needle_tail
            budget = length - len(prefix) - len(middle) - len(suffix) - len(question) - len(needle)
            if budget < 0:
                raise ValueError(f"length {length} is too short: the question, the needle and the special tokens "
                                 f"alone take {length - budget} tokens")
            pieces, text = line_tokens.take(first_line, budget)
            while key in text:  # the answer must be unique in the context
                candidate = str(rng.randrange(10_000, 100_000))
                candidate_ids = ids(NEEDLE[1].format(key=candidate))
                if len(candidate_ids) == len(key_ids):  # another token count would change the budget
                    key, key_ids = candidate, candidate_ids
            needle = needle_head + key_ids + needle_tail
            filler = [t for piece in pieces for t in piece][:budget]
            # Line boundaries inside the budget (0 included): the needle is a line of its own.
            boundaries, end = [0], 0
            for piece in pieces:
                end += len(piece)
                if end > budget:
                    break
                boundaries.append(end)
            cut = min(boundaries, key=lambda b: (abs(b - target_depth * budget), b))
            context = filler[:cut] + needle + filler[cut:]
            if question_first:
                input_ids = prefix + question + middle + context + suffix
                context_start = len(prefix) + len(question) + len(middle)
                global_mask = global_mask_span(length, 0, len(prefix) + len(question))
            else:
                input_ids = prefix + context + middle + question + suffix
                context_start = len(prefix)
                question_start = len(prefix) + len(context) + len(middle)
                global_mask = global_mask_span(length, question_start, question_start + len(question))
            start = context_start + cut + len(needle_head)
            rows["input_ids"].append(input_ids)
            rows["attention_mask"].append([1] * length)
            rows["global_attention_mask"].append(global_mask)
            rows["start_positions"].append(start)
            rows["end_positions"].append(start + len(key_ids) - 1)
            rows["answer"].append(key)
            rows["length"].append(length)
            rows["depth"].append(cut / budget if budget else 0.0)
            rows["filler_tokens"].append(budget)
    features = Features({
        "input_ids": List(Value("int32")), "attention_mask": List(Value("int32")),
        "global_attention_mask": List(Value("int32")), "start_positions": Value("int32"),
        "end_positions": Value("int32"), "answer": Value("string"), "length": Value("int32"),
        "depth": Value("float64"), "filler_tokens": Value("int32"),
    })
    return Dataset.from_dict(rows, features=features)


__all__ = ["DEFAULT_LENGTHS", "NEEDLE", "QUESTION", "filler_lines", "make_passkey_dataset"]
