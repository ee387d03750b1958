"""The packaged ``evaluate`` metrics: they load from their folders without network and give hand-computed values."""

from __future__ import annotations

import ast
import math

import pytest

from hf_longctx import metrics
from hf_longctx.data.wiki_bytes import bits_per_byte


@pytest.fixture(scope="module")
def loaded():
    return {name: metrics.load(name) for name in metrics.NAMES}


@pytest.mark.parametrize("name", metrics.NAMES)
def test_metric_folder_follows_evaluates_local_module_rule(name):
    # evaluate.load(folder) runs folder/<folder name>.py and takes its first evaluate.Metric subclass.
    script = metrics.path(name) / f"{name}.py"
    tree = ast.parse(script.read_text())
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    assert len(classes) == 1
    assert ast.unparse(classes[0].bases[0]) == "evaluate.Metric"
    assert {f.name for f in classes[0].body if isinstance(f, ast.FunctionDef)} >= {"_info", "_compute"}
    # evaluate copies the script alone into its cache: it cannot import the package.
    imports = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add((node.module or "").split(".")[0] if not node.level else ".")
    assert not imports & {"hf_longctx", "."}


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.load("bleu")


def test_accuracy(loaded):
    assert loaded["accuracy"].compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2]) == {"accuracy": 0.75}
    assert loaded["accuracy"].compute(predictions=[3], references=[4]) == {"accuracy": 0.0}


def test_macro_f1_hand_computed(loaded):
    # F1 = 2 TP / (2 TP + FP + FN). Class 0: TP 1, FP 1, FN 0 -> 2/3. Class 1: TP 3, FP 1, FN 1 -> 3/4.
    # Class 2: TP 0, FP 0, FN 1 -> 0.
    predictions, references = [0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 2]
    result = loaded["macro_f1"].compute(predictions=predictions, references=references)
    assert result["per_label_f1"] == pytest.approx({0: 2 / 3, 1: 3 / 4, 2: 0.0})
    assert result["macro_f1"] == pytest.approx((2 / 3 + 3 / 4 + 0) / 3)
    # A class that never occurs counts only when asked for; leaving one out averages the others.
    assert loaded["macro_f1"].compute(predictions=predictions, references=references, labels=[0, 1, 2, 3])[
        "macro_f1"] == pytest.approx((2 / 3 + 3 / 4) / 4)
    assert loaded["macro_f1"].compute(predictions=predictions, references=references, labels=[0, 1])[
        "macro_f1"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    # Macro differs from accuracy on imbalanced classes: always predicting the majority class.
    majority = loaded["macro_f1"].compute(predictions=[0, 0, 0, 0], references=[0, 0, 0, 1])
    assert majority["macro_f1"] == pytest.approx((6 / 7 + 0) / 2)


def test_squad_span_hand_computed(loaded):
    squad = loaded["squad_span"]
    # Normalisation: case, punctuation and articles do not count.
    assert squad.compute(predictions=["The Cat!"], references=["cat"]) == {"exact_match": 1.0, "f1": 1.0}
    # "cat sat" against "cat sat down": precision 1, recall 2/3 -> F1 0.8; the better of two golds counts.
    assert squad.compute(predictions=["the cat sat"], references=[["a cat sat down", "dog"]]) == {
        "exact_match": 0.0, "f1": pytest.approx(0.8)}
    # Averaged over examples. "48213 is" against "48213": precision 1/2, recall 1, F1 2/3; not an exact match.
    result = squad.compute(predictions=["48213", "48213 is"], references=["48213", "48213"])
    assert result["exact_match"] == pytest.approx(0.5)
    assert result["f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert squad.compute(predictions=["12345"], references=["54321"]) == {"exact_match": 0.0, "f1": 0.0}
    # Both normalise to "": SQuAD v2's rule counts that as a match.
    assert squad.compute(predictions=[""], references=["the"]) == {"exact_match": 1.0, "f1": 1.0}


def test_perplexity_hand_computed(loaded):
    ppl = loaded["perplexity"]
    assert ppl.compute(losses=[1.0]) == {"perplexity": pytest.approx(math.e), "mean_loss": 1.0}
    # Weighted by tokens: (1 * 3 + 2 * 1) / 4 = 1.25.
    result = ppl.compute(losses=[1.0, 2.0], num_tokens=[3, 1])
    assert result["mean_loss"] == pytest.approx(1.25) and result["perplexity"] == pytest.approx(math.exp(1.25))
    # Accumulated over batches with add_batch, as an evaluation loop would.
    ppl.add_batch(losses=[math.log(4)])
    ppl.add_batch(losses=[math.log(16)])
    assert ppl.compute()["perplexity"] == pytest.approx(8.0)  # exp(mean(log 4, log 16)) = sqrt(64)
    with pytest.raises(ValueError, match="num_tokens"):
        ppl.compute(losses=[1.0, 2.0], num_tokens=[1])


def test_bits_per_byte_hand_computed(loaded):
    bpb = loaded["bits_per_byte"]
    assert bpb.compute(losses=[math.log(2)]) == {"bits_per_byte": pytest.approx(1.0)}
    assert bpb.compute(losses=[1.0, 3.0])["bits_per_byte"] == pytest.approx(2.0 / math.log(2))
    # A BPE at 4 bytes per token: 2 ln 2 nats per token = 2 bits per token = 0.5 bit per byte.
    assert bpb.compute(losses=[2 * math.log(2)], num_tokens=[100], num_bytes=[400]) == {
        "bits_per_byte": pytest.approx(0.5)}
    # Two batches: (1.0 * 10 + 2.0 * 30) nats over 200 bytes; the data helper agrees with the metric.
    expected = (1.0 * 10 + 2.0 * 30) / (200 * math.log(2))
    assert bpb.compute(losses=[1.0, 2.0], num_tokens=[10, 30], num_bytes=[50, 150])["bits_per_byte"] == pytest.approx(
        expected)
    assert bits_per_byte(70 / 40, num_tokens=40, num_bytes=200) == pytest.approx(expected)
    with pytest.raises(ValueError, match="both"):
        bpb.compute(losses=[1.0], num_tokens=[3])


@pytest.mark.parametrize("name", ["accuracy", "macro_f1"])  # squad_span: evaluate itself fails on no input
def test_empty_input_is_an_error(name, loaded):
    empty = {"predictions": [], "references": []}
    with pytest.raises(ValueError):
        loaded[name].compute(**empty)
