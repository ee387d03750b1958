"""Perplexity from language-model losses: exp of the mean cross-entropy in nats per token.

Not the hub's ``perplexity`` measurement, which downloads and runs a model: this one takes the losses a training or
evaluation loop already has (``Trainer``'s ``eval_loss``, or one mean loss per batch), so it works offline. A local
copy loaded by path (``hf_longctx.metrics.load("perplexity")``); ``evaluate`` copies this file alone into its module
cache, so it imports nothing from hf_longctx.
"""

import math

import datasets
import evaluate

_DESCRIPTION = "Perplexity exp(mean loss) from mean cross-entropies in nats per token."

_KWARGS_DESCRIPTION = """
Args:
    losses (`list` of `float`): mean cross-entropy in nats per token, one per batch or sequence.
    num_tokens (`list` of `int`, optional): how many tokens each loss is the mean of, to weight them; losses over
        batches of different sizes need it. Default: equal weights.
Returns:
    perplexity (`float`): exp(mean loss).
    mean_loss (`float`): the (weighted) mean loss in nats per token.
Example:
    >>> perplexity = hf_longctx.metrics.load("perplexity")
    >>> perplexity.compute(losses=[1.0, 2.0], num_tokens=[3, 1])  # mean loss 1.25
    {'perplexity': 3.4903..., 'mean_loss': 1.25}
"""


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"losses": datasets.Value("float64")}),
        )

    def _compute(self, losses, num_tokens=None):
        if len(losses) == 0:
            raise ValueError("perplexity of no loss is undefined: got empty losses")
        weights = [1] * len(losses) if num_tokens is None else list(num_tokens)
        if len(weights) != len(losses) or any(w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(f"num_tokens needs one non-negative count per loss, not all zero: got {num_tokens!r} "
                             f"for {len(losses)} losses")
        mean_loss = sum(l * w for l, w in zip(losses, weights)) / sum(weights)
        return {"perplexity": math.exp(mean_loss), "mean_loss": mean_loss}
