"""SQuAD-style exact match and token F1 between predicted and gold answer strings.

The official SQuAD v1.1 evaluation (Rajpurkar et al., 2016, ``evaluate-v1.1.py``): both strings are normalised
(lower case, punctuation and the articles a/an/the removed, whitespace collapsed); exact match is 1 when they are
then equal, F1 is the harmonic mean of precision and recall of their bag of words, and with several gold answers the
best one counts. Empty answers follow the v2.0 script (F1 1 if both are empty, else 0).

Unlike the hub's ``squad`` metric, inputs are plain strings (the answer a QA head's span decodes to), and scores are
in [0, 1], not percentages. A local copy loaded by path (``hf_longctx.metrics.load("squad_span")``); ``evaluate``
copies this file alone into its module cache, so it imports nothing from hf_longctx.
"""

import collections
import re
import string

import datasets
import evaluate

_DESCRIPTION = "SQuAD v1.1 exact match and F1 on answer strings, averaged over examples, in [0, 1]."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted answers.
    references (`list` of `str`, or `list` of `list` of `str`): the gold answer, or several, per prediction.
Returns:
    exact_match (`float`): mean over examples of the best exact match against a gold answer.
    f1 (`float`): mean over examples of the best token F1 against a gold answer.
Example:
    >>> squad = hf_longctx.metrics.load("squad_span")
    >>> squad.compute(predictions=["the cat sat"], references=[["a cat sat down", "dog"]])
    {'exact_match': 0.0, 'f1': 0.8}
"""


def normalize_answer(text):
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match_score(prediction, reference):
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1_score(prediction, reference):
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    same = sum((collections.Counter(pred_tokens) & collections.Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


class SquadSpan(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016.",
            inputs_description=_KWARGS_DESCRIPTION,
            # One gold string first: a str would otherwise be accepted as a sequence of one-character strings.
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features({
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }),
            ],
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("exact match and F1 of no predictions are undefined: got empty predictions")
        golds = [[r] if isinstance(r, str) else list(r) for r in references]
        if any(not g for g in golds):
            raise ValueError("every prediction needs at least one gold answer; got an empty list of references")
        em = sum(max(exact_match_score(p, g) for g in gs) for p, gs in zip(predictions, golds))
        f1 = sum(max(f1_score(p, g) for g in gs) for p, gs in zip(predictions, golds))
        return {"exact_match": em / len(predictions), "f1": f1 / len(predictions)}
