"""Macro-averaged F1: the unweighted mean over classes of each class's F1, so small classes count as much as big ones.

A local copy of the metric hf_longctx needs, loaded by path (``hf_longctx.metrics.load("macro_f1")``) because hub
metrics cannot be fetched here. ``evaluate`` copies this file alone into its module cache, so it imports nothing
from hf_longctx. Same value as ``sklearn.metrics.f1_score(references, predictions, average="macro")``, with
``zero_division=0``.
"""

import datasets
import evaluate

_DESCRIPTION = "Macro F1: mean over classes of 2 TP / (2 TP + FP + FN), in [0, 1]."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids, as many as predictions.
    labels (`list` of `int`, optional): the classes to average over. Default: every class that occurs in
        predictions or references (sklearn's default). Pass all class ids to count a class that never occurs
        as F1 0 (it has no true positive), or a subset to leave classes out.
Returns:
    macro_f1 (`float`): the mean of the per-class F1.
    per_label_f1 (`dict` of `int` -> `float`): F1 of each averaged class. A class with no prediction and no
        reference has F1 0, as with sklearn's zero_division=0.
Example:
    >>> f1 = hf_longctx.metrics.load("macro_f1")
    >>> f1.compute(predictions=[0, 0, 1, 1], references=[0, 1, 1, 1])["macro_f1"]  # (2/3 + 4/5) / 2
    0.7333...
"""


class MacroF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, labels=None):
        if len(predictions) == 0:
            raise ValueError("F1 of no predictions is undefined: got empty predictions and references")
        labels = sorted(set(predictions) | set(references)) if labels is None else list(labels)
        per_label = {}
        for label in labels:
            tp = sum(p == label and r == label for p, r in zip(predictions, references))
            fp = sum(p == label and r != label for p, r in zip(predictions, references))
            fn = sum(p != label and r == label for p, r in zip(predictions, references))
            per_label[label] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        return {"macro_f1": sum(per_label.values()) / len(per_label), "per_label_f1": per_label}
