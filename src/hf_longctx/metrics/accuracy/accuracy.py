"""Accuracy: the fraction of predictions equal to their reference.

A local copy of the metric hf_longctx needs, loaded by path (``hf_longctx.metrics.load("accuracy")``) because hub
metrics cannot be fetched here. ``evaluate`` copies this file alone into its module cache, so it imports nothing
from hf_longctx.
"""

import datasets
import evaluate

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their reference, in [0, 1]."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids, as many as predictions.
Returns:
    accuracy (`float`): correct / total, in [0, 1].
Example:
    >>> accuracy = hf_longctx.metrics.load("accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'accuracy': 0.75}
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("accuracy of no predictions is undefined: got empty predictions and references")
        correct = sum(int(p == r) for p, r in zip(predictions, references))
        return {"accuracy": correct / len(predictions)}
