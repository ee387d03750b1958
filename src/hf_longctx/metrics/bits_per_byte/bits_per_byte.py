"""Bits per byte from language-model losses in nats, the unit of enwik8 results.

For a byte-level model a token is a byte: bits per byte = mean loss / ln 2. For any other tokenizer the total loss
(mean loss x tokens) is spread over the UTF-8 bytes of the text the tokens encode, which makes models with
different tokenizers comparable. The same formula as ``hf_longctx.data.wiki_bytes.bits_per_byte``; a local copy
loaded by path (``hf_longctx.metrics.load("bits_per_byte")``), which ``evaluate`` copies alone into its module cache,
so it imports nothing from hf_longctx.
"""

import math

import datasets
import evaluate

_DESCRIPTION = "Bits per byte: total cross-entropy in bits divided by the number of bytes of text."

_KWARGS_DESCRIPTION = """
Args:
    losses (`list` of `float`): mean cross-entropy in nats per token, one per batch or sequence.
    num_tokens (`list` of `int`, optional): how many tokens each loss is the mean of.
    num_bytes (`list` of `int`, optional): how many bytes of text those tokens encode. Give both or neither;
        neither means a byte-level model with equal-sized batches: bits per byte = mean(losses) / ln 2.
Returns:
    bits_per_byte (`float`): sum(loss x tokens) / (ln 2 x sum(bytes)).
Example:
    >>> bpb = hf_longctx.metrics.load("bits_per_byte")
    >>> bpb.compute(losses=[math.log(2)])
    {'bits_per_byte': 1.0}
    >>> bpb.compute(losses=[2 * math.log(2)], num_tokens=[100], num_bytes=[400])  # 200 bits over 400 bytes
    {'bits_per_byte': 0.5}
"""


class BitsPerByte(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Mahoney, Large Text Compression Benchmark (enwik8), https://mattmahoney.net/dc/text.html",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"losses": datasets.Value("float64")}),
        )

    def _compute(self, losses, num_tokens=None, num_bytes=None):
        if len(losses) == 0:
            raise ValueError("bits per byte of no loss is undefined: got empty losses")
        if (num_tokens is None) != (num_bytes is None):
            raise ValueError("give both num_tokens and num_bytes, or neither (a byte-level model)")
        if num_tokens is None:
            return {"bits_per_byte": sum(losses) / len(losses) / math.log(2)}
        if not len(losses) == len(num_tokens) == len(num_bytes) or sum(num_bytes) <= 0:
            raise ValueError(f"num_tokens and num_bytes need one count per loss and some bytes: got "
                             f"{len(losses)} losses, {len(num_tokens)} token counts, {len(num_bytes)} byte counts")
        total_nats = sum(l * t for l, t in zip(losses, num_tokens))
        return {"bits_per_byte": total_nats / (sum(num_bytes) * math.log(2))}
