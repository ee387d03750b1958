"""Nothing is unpickled but weights: every reader of a weights file is safetensors or
``torch.load(weights_only=True)``, and a legacy ``.bin`` that carries code is refused without running it.

(The shared model suite checks, per variant, that saved folders hold safetensors and only the variant's own code,
and that loading that code neither reaches the network nor writes files.)
"""

import ast
import json
from pathlib import Path

import pytest
import torch
from test_longformer_model import make_config

import hf_longctx
from hf_longctx import LongctxLongformerModel
from hf_longctx.convert import convert

PACKAGE = Path(hf_longctx.__file__).parent
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            yield node, owner, name


def test_no_source_file_can_unpickle_more_than_weights():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(PACKAGE)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            problems += [f"{where}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        for node, owner, name in _calls(tree):
            keywords = {k.arg: k.value for k in node.keywords}
            if owner == "torch" and name == "load":
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}:{node.lineno} torch.load without weights_only=True")
            if name == "load" and owner in ("np", "numpy") and "allow_pickle" in keywords:
                problems.append(f"{where}:{node.lineno} numpy load with allow_pickle")
    assert problems == []


class _Payload:
    """Unpickling this would create ``path``: the test's stand-in for code smuggled into a checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_legacy_bin_carrying_code_is_refused_without_running_it(tmp_path):
    torch.manual_seed(0)
    model = LongctxLongformerModel(make_config())
    src = tmp_path / "src"
    src.mkdir()
    # A transformers Longformer folder whose legacy weights file also pickles an object that runs code on load.
    from transformers import LongformerConfig

    LongformerConfig(vocab_size=model.config.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, attention_window=[4, 8], max_position_embeddings=128).save_pretrained(src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "architectures": ["LongformerModel"]}))
    marker = tmp_path / "payload_ran.txt"
    torch.save({**model.state_dict(), "payload": _Payload(marker)}, src / "pytorch_model.bin")

    with pytest.raises(ValueError, match="cannot read the weights in .*pytorch_model.bin"):
        convert(src, tmp_path / "dst")
    assert not marker.exists(), "the checkpoint's code ran"
    assert not (tmp_path / "dst").exists()
