"""Bad input, everywhere: one table of cases over every public entry point, each with the error it must end in.

Entry points: the three variants' configs, ``forward`` of every head, ``generate``, ``hf_longctx.convert`` and the
family converters, the data-folder loader, and every ``hf-longctx`` subcommand run in-process through
``hf_longctx.__main__.main``. Every case must end in an error that names the problem:

* Python calls: the expected exception class (``ValueError`` or one of ours, ``FileNotFoundError`` for a missing
  path), its message matching the case's pattern; never an assert, an ``IndexError`` from an embedding or a
  traceback from inside torch.
* CLI calls: a non-zero exit, one line on standard error that matches the pattern, and no "Traceback" (an
  exception escaping ``main`` fails the case too, since it would print one).

and must leave the user's files as they were: every file under the case's workspace is compared byte for byte
before and after, and no file or folder may appear (a half-written output is a defect).

The workspace holds copies of tiny pristine folders built once per module: a Longformer causal LM with its byte
tokenizer (``lm``), a sequence classifier (``cls``), an exported folder (``hub``), source checkpoints for the
converters (``tf_longformer``, ``tf_reformer``, ``tf_transfo_xl``) and a ``--data-dir`` folder (``docs``). A case names the
folders it needs and may damage them first (a truncated ``model.safetensors``, a ``config.json`` that is not JSON,
a missing tokenizer).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from model_suite import variant_specs
from test_longformer_model import make_config as longformer_config

from hf_longctx.__main__ import main
from hf_longctx.data.files import DataError, load_classification_folder
from hf_longctx.export import ExportError, export_model

CLI = "cli"  # the expected "exception" of a CLI case: a non-zero exit with a one-line message


@dataclass
class Case:
    id: str
    call: Callable[[Path], object]  # (workspace) -> runs the entry point; a CLI case returns main's exit code
    error: type | tuple | str  # the exception class(es), or CLI
    match: str  # a regex the message (or the CLI's stderr line) must match
    needs: tuple[str, ...] = ()  # pristine folders copied into the workspace first
    damage: Callable[[Path], None] | None = None  # turns the copies into the bad input
    category: str = field(default="")


CASES: list[Case] = []


def case(category, id, call, error, match, needs=(), damage=None):
    CASES.append(Case(f"{category}: {id}", call, error, match, tuple(needs), damage, category))


# ---------------------------------------------------------------- pristine folders -------------------------------------


def _tiny_lm(folder: Path) -> None:
    from hf_longctx import LongctxLongformerForCausalLM
    from hf_longctx.data.tokenizers import byte_tokenizer

    tok = byte_tokenizer()
    config = longformer_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                               eos_token_id=tok.eos_token_id, sep_token_id=tok.eos_token_id, causal=True,
                               max_position_embeddings=66)  # reads 65 tokens (pad id 0)
    torch.manual_seed(0)
    LongctxLongformerForCausalLM(config).save_pretrained(folder)
    tok.model_max_length = config.max_input_tokens
    tok.save_pretrained(folder)


def _tiny_classifier(folder: Path) -> None:
    from hf_longctx import LongctxLongformerForSequenceClassification
    from hf_longctx.data.tokenizers import byte_tokenizer

    tok = byte_tokenizer()
    config = longformer_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=None,
                               eos_token_id=tok.eos_token_id, sep_token_id=tok.eos_token_id, num_labels=2,
                               id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1}, max_position_embeddings=66)
    torch.manual_seed(0)
    LongctxLongformerForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def _tf_longformer(folder: Path) -> None:
    from transformers import LongformerConfig, LongformerForMaskedLM

    config = LongformerConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, attention_window=4, max_position_embeddings=66)
    torch.manual_seed(0)
    LongformerForMaskedLM(config).save_pretrained(folder)


def _tf_reformer(folder: Path) -> None:
    from transformers import ReformerConfig, ReformerModelWithLMHead

    config = ReformerConfig(vocab_size=99, hidden_size=32, num_attention_heads=2, attention_head_size=16,
                            attn_layers=["local", "lsh"], num_buckets=4, lsh_attn_chunk_length=4,
                            local_attn_chunk_length=4, axial_pos_shape=[8, 8], axial_pos_embds_dim=[16, 16],
                            max_position_embeddings=64, feed_forward_size=64, is_decoder=True,
                            hash_seed=0)  # None would add a warning line to the CLI case's stderr
    torch.manual_seed(0)
    ReformerModelWithLMHead(config).save_pretrained(folder)


def _tf_transfo_xl(folder: Path) -> None:
    # transformers dropped TransfoXL (5.x); its committed 4.49 fixture is what our converter reads.
    src = Path(__file__).parent / "fixtures" / "transfo_xl" / "case1_plain_softmax"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, folder / name)


def _docs(folder: Path) -> None:
    folder.mkdir()
    for split in ("train", "validation", "test"):
        rows = [{"text": f"document {i} of {split} " * 5, "label": "ab"[i % 2]} for i in range(6)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _exported(folder: Path) -> None:
    """`hf-longctx export` of a tiny causal LM: what `push` takes."""
    _tiny_lm(folder.parent / "_lm_for_export")
    export_model(folder.parent / "_lm_for_export", folder)


BUILDERS = {"lm": _tiny_lm, "cls": _tiny_classifier, "hub": _exported, "tf_longformer": _tf_longformer, "tf_reformer": _tf_reformer,
            "tf_transfo_xl": _tf_transfo_xl, "docs": _docs}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, build in BUILDERS.items():
            build(root / name)
    finally:
        torch.set_num_threads(threads)
    return root


# ---------------------------------------------------------------- damage -----------------------------------------------


def truncate(name: str, keep: float = 0.5):
    """A half-written file: its first ``keep`` of the bytes (an interrupted download or save)."""
    def damage(ws: Path):
        path = ws / name
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return damage


def replace(name: str, text: str):
    def damage(ws: Path):
        (ws / name).write_text(text)
    return damage


def remove(*names: str):
    def damage(ws: Path):
        for name in names:
            (ws / name).unlink()
    return damage


def edit_json(name: str, **fields):
    def damage(ws: Path):
        data = json.loads((ws / name).read_text())
        data.update(fields)
        (ws / name).write_text(json.dumps(data))
    return damage


def both(*damages):
    def damage(ws: Path):
        for d in damages:
            d(ws)
    return damage


# ---------------------------------------------------------------- configs ----------------------------------------------

SPECS = variant_specs()  # folder -> VariantSpec, one per record of hf_longctx.variants
for variant, spec in SPECS.items():
    for id_, fields, match in spec.bad_configs:
        case(f"config {variant}", id_, lambda ws, make=spec.make_config, fields=fields: make(**fields), ValueError,
             match)


# ---------------------------------------------------------------- forward of every head --------------------------------


def _forward(variant: str, head: str, **kwargs):
    """Build the tiny head (seeded) and call it with ``kwargs``; input_ids given as a shape are filled with 5s."""
    spec = SPECS[variant]
    h = spec.heads[head]
    config = spec.make_config(**h.config_overrides)
    torch.manual_seed(0)
    model = h.model_class(config).eval()
    multiple_choice = head == "mc"
    if isinstance(kwargs.get("input_ids"), tuple):  # a shape: (B, T), widened to (B, 2 choices, T) for that head
        B, T = kwargs["input_ids"]
        kwargs["input_ids"] = torch.full((B, 2, T) if multiple_choice else (B, T), 5, dtype=torch.long)
    with torch.no_grad():
        return model(**kwargs)


def _longest(variant: str) -> int:
    return SPECS[variant].make_config().max_input_tokens


def _ids_like(variant, head, B, T, value=5, dtype=torch.long):
    """Ids of one value with a separator (2) second, so the Longformer's question-answering and multiple-choice
    heads find their question and the case's own defect is the only one."""
    shape = (B, 2, T) if head == "mc" else (B, T)
    ids = torch.full(shape, value, dtype=dtype)
    if T > 1 and dtype == torch.long:
        ids[..., 1] = 2
    return ids


LM_HEADS, CLASS_HEADS = ("mlm", "causal"), ("seqcls", "tokcls", "mc")  # classes: 2 labels, 2 choices


def _labels(variant, head, B, T, value):
    """``labels`` of one value, per row (sequence classification, multiple choice) or per token."""
    return {"labels": torch.full((B,) if head in ("seqcls", "mc") else (B, T), value, dtype=torch.long)}


def _mask_like(variant, head, B, T, value=1, dtype=torch.long):
    return _ids_like(variant, head, B, T, value, dtype)


FORWARD_CASES = [
    # (id, kwargs maker (variant, head) -> kwargs, match)
    ("float ids", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6, dtype=torch.float32)), "integer token ids"),
    ("id past the vocabulary", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6, value=99)), "vocabulary has 99"),
    ("negative id", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6, value=-1)), "vocabulary has 99"),
    ("ids with an extra dimension", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6)[..., None]), "input_ids"),
    ("ids without a batch dimension", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6)[0]), "input_ids"),
    ("mask of the wrong shape", lambda v, h: dict(input_ids=_ids_like(v, h, 2, 6), attention_mask=_mask_like(v, h, 2, 5)),
     "attention_mask must have shape"),
    ("mask of 2s", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6), attention_mask=_mask_like(v, h, 1, 6, value=2)),
     "only 0 and 1"),
    ("mask as a list", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6), attention_mask=[[1] * 6]),
     "attention_mask must be a torch.Tensor"),
    ("ids as a list", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6).tolist()), "input_ids must be a torch.Tensor"),
    ("no input", lambda v, h: dict(attention_mask=_mask_like(v, h, 1, 6)), "exactly one of input_ids and inputs_embeds"),
    ("longer than the positions", lambda v, h: dict(input_ids=_ids_like(v, h, 1, _longest(v) + 1)), "at most"),
    ("embeddings of the wrong width", lambda v, h: dict(inputs_embeds=torch.randn(1, *((2,) if h == "mc" else ()), 6, 7)),
     "inputs_embeds must be 32 wide"),
    ("position ids past the table", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6),
                                                      position_ids=_ids_like(v, h, 1, 6, value=500)),
     "at most 128|must be in \\[0, 64\\)"),
    ("negative position ids", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 6),
                                                position_ids=_ids_like(v, h, 1, 6, value=-1)),
     "position_ids must be in \\[0, [0-9]+\\)"),
    # A label past the head's classes (a dataset counting from 1, say); language models' classes are the vocabulary.
    ("label past the classes", lambda v, h: dict(input_ids=_ids_like(v, h, 2, 6), **_labels(v, h, 2, 6, 2)),
     "labels hold \\[2\\] but there are 2 classes"),
    ("label past the vocabulary", lambda v, h: dict(input_ids=_ids_like(v, h, 2, 6), **_labels(v, h, 2, 6, 99)),
     "labels hold \\[99\\] but there are 99 classes"),
    ("negative label", lambda v, h: dict(input_ids=_ids_like(v, h, 2, 6), **_labels(v, h, 2, 6, -3)),
     "labels hold \\[-3\\]"),
    ("batch of 0", lambda v, h: dict(input_ids=_ids_like(v, h, 0, 6)), "the input is empty \\(batch size 0"),
    ("length 0", lambda v, h: dict(input_ids=_ids_like(v, h, 1, 0)), "the input is empty"),
]
# A variant without a position table (the Transformer-XL: relative positions, recurrence over segments) takes any
# length, and no position_ids.
NOT_APPLICABLE = {(v, id_) for v, spec in SPECS.items() if not spec.position_table
                  for id_ in ("longer than the positions", "position ids past the table", "negative position ids")}
# The Longformer's causal LM counts positions itself (from the mask and the cache, so that generate() stays exact):
# position_ids of any value are refused rather than silently ignored.
CAUSAL_POSITIONS = "position_ids are not accepted by the causal Longformer"
# The multiple-choice head takes (batch, num_choices, seq_len) and names that shape for any other input.
MC_SHAPE = "multiple choice inputs must have shape \\(batch, num_choices, seq_len\\), got"
MC_MATCH = {"ids with an extra dimension": MC_SHAPE + " \\(1, 2, 6, 1\\)", "ids without a batch dimension":
            MC_SHAPE + " \\(2, 6\\)", "ids as a list": MC_SHAPE + " list", "no input": MC_SHAPE + " NoneType"}
for variant, spec in SPECS.items():
    for head in spec.heads:
        for id_, make_kwargs, match in FORWARD_CASES:
            if (variant, id_) in NOT_APPLICABLE or (f"{variant} {head}", id_) in NOT_APPLICABLE:
                continue
            if (id_ == "label past the classes" and head not in CLASS_HEADS) or (
                    id_ == "label past the vocabulary" and head not in LM_HEADS) or (
                    id_ == "negative label" and head not in LM_HEADS + CLASS_HEADS):
                continue  # the labels of the other heads (none, or start/end positions) are not classes
            if head == "mc":
                match = MC_MATCH.get(id_, match)
            if (variant, head) == ("longformer", "causal") and "position ids" in id_:
                match = CAUSAL_POSITIONS
            case(f"forward {variant}", f"{head}, {id_}",
                 lambda ws, v=variant, h=head, mk=make_kwargs: _forward(v, h, **mk(v, h)), ValueError, match)


# ---------------------------------------------------------------- generate ---------------------------------------------


def _generate(variant: str, ids: torch.Tensor, **kwargs):
    spec = SPECS[variant]
    h = spec.heads["causal"]
    torch.manual_seed(0)
    model = h.model_class(spec.make_config(**h.config_overrides)).eval()
    return model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0, **kwargs)


for variant, spec in SPECS.items():
    case(f"generate {variant}", "empty prompt", lambda ws, v=variant: _generate(v, torch.zeros(1, 0, dtype=torch.long)),
         ValueError, "empty")
    if (variant, "longer than the positions") not in NOT_APPLICABLE:
        case(f"generate {variant}", "prompt past the positions",
             lambda ws, v=variant: _generate(v, torch.full((1, _longest(v) + 1), 5)), ValueError, "at most")
    case(f"generate {variant}", "id past the vocabulary",
         lambda ws, v=variant: _generate(v, torch.tensor([[5, 99]])), ValueError, "vocabulary has 99")


# ---------------------------------------------------------------- convert and the converters ---------------------------


def _convert(src, dst="out", **kwargs):
    from hf_longctx.convert import convert

    return lambda ws: convert(ws / src, ws / dst, **kwargs)


def _family(module: str, src):
    def call(ws):
        import importlib

        return importlib.import_module(f"hf_longctx.conversion.{module}").convert(ws / src, ws / "out")
    return call


for src, module in (("tf_longformer", "longformer"), ("tf_reformer", "reformer"), ("tf_transfo_xl", "transfo_xl")):
    for via, call in (("convert", _convert(src)), (f"conversion.{module}", _family(module, src))):
        cat = f"convert ({via})"
        case(cat, f"{src} half-written model.safetensors", call, ValueError,
             "cannot read the weights in .*model.safetensors", [src], truncate(f"{src}/model.safetensors"))
        case(cat, f"{src} config.json not JSON", call, ValueError, "config.json is not valid JSON", [src],
             replace(f"{src}/config.json", '{"model_type": "longformer", '))
        case(cat, f"{src} no weights", call, FileNotFoundError, "has no weights", [src], remove(f"{src}/model.safetensors"))
    case(f"convert (conversion.{module})", f"{src} into itself",
         lambda ws, m=module, s=src: __import__(f"hf_longctx.conversion.{m}", fromlist=["convert"]).convert(
             ws / s, ws / s, overwrite=True), ValueError, "holds the source", [src])
case("convert (convert)", "missing source", _convert("nowhere"), FileNotFoundError, "nowhere")
case("convert (convert)", "source without config.json", _convert("tf_longformer"), FileNotFoundError,
     "has no config.json", ["tf_longformer"], remove("tf_longformer/config.json"))
case("convert (convert)", "unsupported model type", _convert("tf_longformer"), ValueError,
     "model of type 'gpt2'; supported", ["tf_longformer"], edit_json("tf_longformer/config.json", model_type="gpt2"))
case("convert (convert)", "existing destination", _convert("tf_longformer", dst="lm"), FileExistsError,
     "already exists; pass --overwrite", ["tf_longformer", "lm"])
case("convert (convert)", "overwrite a folder we did not write", _convert("tf_longformer", dst="docs", overwrite=True),
     ValueError, "docs", ["tf_longformer", "docs"])
case("convert (convert)", "weights of another shape", _convert("tf_longformer"), ValueError,
     "does not fit .*wrong shape", ["tf_longformer"], edit_json("tf_longformer/config.json", intermediate_size=48))
case("convert (convert)", "lengthen to a shorter model", _convert("lm", max_length=8), ValueError, "would not lengthen it",
     ["lm"])


# ---------------------------------------------------------------- data loaders -----------------------------------------

_load = lambda ws: load_classification_folder(ws / "docs")  # noqa: E731
case("data folder", "missing folder", lambda ws: load_classification_folder(ws / "nowhere"), DataError, "is not a folder")
case("data folder", "missing split", _load, DataError, "has no test.jsonl", ["docs"], remove("docs/test.jsonl"))
case("data folder", "a line that is not JSON", _load, DataError, "train.jsonl:1: not a JSON object", ["docs"],
     replace("docs/train.jsonl", '{"text": "a", "label"\n'))
case("data folder", "a truncated last line", _load, DataError, "validation.jsonl:6: not a JSON object", ["docs"],
     truncate("docs/validation.jsonl", 0.97))
case("data folder", "no label", _load, DataError, 'needs the keys "text" and "label"', ["docs"],
     replace("docs/train.jsonl", '{"text": "a"}\n'))
case("data folder", "empty text", _load, DataError, '"text" must be a non-empty string', ["docs"],
     replace("docs/train.jsonl", '{"text": " ", "label": "a"}\n'))
case("data folder", "empty split", _load, DataError, "holds no examples", ["docs"], replace("docs/test.jsonl", "\n"))
case("data folder", "not UTF-8", _load, DataError, "is not UTF-8 text", ["docs"],
     lambda ws: (ws / "docs" / "train.jsonl").write_bytes(b'{"text": "\xff", "label": "a"}\n'))
case("data folder", "a single label", _load, DataError, "has a single label", ["docs"],
     replace("docs/train.jsonl", '{"text": "x", "label": "a"}\n'))
case("data folder", "unknown test label", _load, DataError, "labels \\['c'\\] that are not among", ["docs"],
     replace("docs/test.jsonl", '{"text": "x", "label": "c"}\n'))
case("data folder", "labels mix integers and strings", _load, DataError, "mix integers and strings", ["docs"],
     replace("docs/test.jsonl", '{"text": "x", "label": 1}\n'))


# ---------------------------------------------------------------- export (Python) --------------------------------------

_export = lambda ws: export_model(ws / "lm", ws / "hub")  # noqa: E731
case("export (export_model)", "half-written model.safetensors", _export, ExportError,
     "cannot load the model in .*lm: its .safetensors weights are damaged or half-written",
     ["lm"], truncate("lm/model.safetensors"))
case("export (export_model)", "config.json not JSON", _export, ExportError, "config", ["lm"],
     replace("lm/config.json", "{"))
case("export (export_model)", "no weights", _export, ExportError, "weights|model.safetensors", ["lm"],
     remove("lm/model.safetensors"))


# ---------------------------------------------------------------- every CLI subcommand ---------------------------------


def cli(*argv):
    return lambda ws: main([a.format(ws=ws) for a in argv])


TRAIN = ("train", "--preset", "tiny", "--max-steps", "1", "--batch-size", "2", "--max-length", "32")
LM, CLS, DOCS = "{ws}/lm", "{ws}/cls", ("--data-dir", "{ws}/docs")
# --init-from reaches the weights only with a task the model fits: the tiny causal LM and wiki-bytes share the bytes.
INIT_LM = (*TRAIN[:1], *TRAIN[5:], "--task", "wiki-bytes", "--init-from", LM, "--output-dir", "{ws}/run")
cli_cases = [
    # train
    ("train", "half-written --data-dir file", cli(*TRAIN, *DOCS, "--output-dir", "{ws}/run"), ["docs"],
     truncate("docs/test.jsonl", 0.55), "test.jsonl:\\d+: not a JSON object"),
    ("train", "missing --data-dir", cli(*TRAIN, "--data-dir", "{ws}/nowhere", "--output-dir", "{ws}/run"), [],
     None, "is not a folder"),
    ("train", "corrupt --data-dir", cli(*TRAIN, "--data-dir", "{ws}/docs", "--output-dir", "{ws}/run"), ["docs"],
     truncate("docs/train.jsonl", 0.55), "train.jsonl:\\d+: not a JSON object"),
    ("train", "--init-from with a half-written model.safetensors", cli(*INIT_LM), ["lm"],
     truncate("lm/model.safetensors"), "--init-from .*: cannot load the model: its .safetensors weights are damaged"),
    ("train", "--init-from with config.json not JSON", cli(*INIT_LM), ["lm"], replace("lm/config.json", "not json"),
     "cannot read its config"),
    ("train", "--init-from without weights", cli(*INIT_LM), ["lm"], remove("lm/model.safetensors"),
     "--init-from .*: cannot load the model"),
    ("train", "--init-from a missing folder",
     cli(*TRAIN[:1], *TRAIN[5:], *DOCS, "--init-from", "{ws}/nowhere", "--output-dir", "{ws}/run"), ["docs"],
     None, "is not a model folder"),
    ("train", "unknown variant", cli(*TRAIN, *DOCS, "--variant", "gpt", "--output-dir", "{ws}/run"), ["docs"],
     None, "variant"),
    ("train", "--resume without a run", cli(*TRAIN, *DOCS, "--resume", "--output-dir", "{ws}/run"),
     ["docs"], None, "resume|run"),
    ("train", "output folder that is not a run", cli(*TRAIN, *DOCS, "--output-dir", "{ws}/cls"),
     ["docs", "cls"], None, "already exists"),
    ("train", "--overwrite a folder train did not write",
     cli(*TRAIN, *DOCS, "--overwrite", "--output-dir", "{ws}/cls"), ["docs", "cls"], None,
     "is not an earlier hf-longctx run folder"),
    ("train", "unknown --set key", cli(*TRAIN, *DOCS, "--set", "no_such_field=1",
                                       "--output-dir", "{ws}/run"), [], None, "no_such_field"),
    # evaluate
    ("evaluate", "half-written model.safetensors", cli("evaluate", LM, "--task", "wiki-bytes", "--max-samples", "2"),
     ["lm"], truncate("lm/model.safetensors"), "cannot load the model in .*: its .safetensors weights are damaged"),
    ("evaluate", "config.json not JSON", cli("evaluate", LM, "--task", "wiki-bytes"), ["lm"],
     replace("lm/config.json", "{"), "cannot read the config"),
    ("evaluate", "missing folder", cli("evaluate", "{ws}/nowhere", "--task", "wiki-bytes"), [], None,
     "is not a model folder"),
    ("evaluate", "corrupt tokenizer", cli("evaluate", LM, "--task", "wiki-bytes", "--max-samples", "2"), ["lm"],
     replace("lm/tokenizer_config.json", "{"), "tokenizer"),
    ("evaluate", "corrupt --data-dir", cli("evaluate", CLS, "--data-dir", "{ws}/docs"), ["cls", "docs"],
     replace("docs/test.jsonl", "[1, 2]\n"), 'needs the keys "text" and "label"'),
    ("evaluate", "no split of that name", cli("evaluate", CLS, "--data-dir", "{ws}/docs", "--split", "dev"),
     ["cls", "docs"], None, "dev"),
    # generate
    ("generate", "half-written model.safetensors", cli("generate", LM, "--prompt", "ab", "--max-new-tokens", "4"),
     ["lm"], truncate("lm/model.safetensors"), "cannot load the model in .*: its .safetensors weights are damaged"),
    ("generate", "config.json not JSON", cli("generate", LM, "--prompt", "ab", "--max-new-tokens", "4"), ["lm"], replace("lm/config.json", "{"),
     "config"),
    ("generate", "tokenizer missing", cli("generate", LM, "--prompt", "ab", "--max-new-tokens", "4"), ["lm"],
     remove("lm/tokenizer_config.json"), "has no tokenizer"),
    ("generate", "corrupt tokenizer", cli("generate", LM, "--prompt", "ab", "--max-new-tokens", "4"), ["lm"],
     replace("lm/tokenizer_config.json", "{"), "tokenizer"),
    ("generate", "empty prompt", cli("generate", LM, "--prompt", ""), ["lm"], None, "the prompt is empty"),
    ("generate", "prompt past the positions", cli("generate", LM, "--prompt", "x" * 80), ["lm"], None,
     "the prompt has 80 tokens but the model reads at most 65"),
    ("generate", "not a causal LM", cli("generate", CLS, "--prompt", "ab"), ["cls"], None, "not a causal LM"),
    ("generate", "missing folder", cli("generate", "{ws}/nowhere", "--prompt", "ab"), [], None, "not a model folder"),
    # convert
    ("convert", "half-written model.safetensors", cli("convert", "{ws}/tf_reformer", "{ws}/out"), ["tf_reformer"],
     truncate("tf_reformer/model.safetensors"), "cannot read the weights"),
    ("convert", "config.json not JSON", cli("convert", "{ws}/tf_longformer", "{ws}/out"), ["tf_longformer"],
     replace("tf_longformer/config.json", "{"), "is not valid JSON"),
    ("convert", "missing source", cli("convert", "{ws}/nowhere", "{ws}/out"), [], None, "nowhere"),
    ("convert", "existing destination", cli("convert", "{ws}/tf_longformer", "{ws}/docs"), ["tf_longformer", "docs"],
     None, "already exists"),
    ("convert", "--from-short on a Longformer", cli("convert", "{ws}/tf_longformer", "{ws}/out", "--from-short"),
     ["tf_longformer"], None, "longformer|RoBERTa|BERT|roberta|bert"),
    ("convert", "half-written transfo-xl weights", cli("convert", "{ws}/tf_transfo_xl", "{ws}/out"),
     ["tf_transfo_xl"], truncate("tf_transfo_xl/model.safetensors", 0.1), "cannot read the weights"),
    # export
    ("export", "half-written model.safetensors", cli("export", LM, "{ws}/hub"), ["lm"],
     truncate("lm/model.safetensors"), "its .safetensors weights are damaged or half-written"),
    ("export", "config.json not JSON", cli("export", LM, "{ws}/hub"), ["lm"], replace("lm/config.json", "{"),
     "cannot read the config"),
    ("export", "no weights", cli("export", LM, "{ws}/hub"), ["lm"], remove("lm/model.safetensors"),
     "model.safetensors|weights"),
    ("export", "corrupt tokenizer", cli("export", LM, "{ws}/hub"), ["lm"], replace("lm/tokenizer_config.json", "{"),
     "tokenizer"),
    ("export", "corrupt run summary", cli("export", LM, "{ws}/hub"), ["lm"],
     replace("lm/hf_longctx_summary.json", '{"results": ['), "hf_longctx_summary.json"),
    ("export", "missing folder", cli("export", "{ws}/nowhere", "{ws}/hub"), [], None, "not a model folder"),
    ("export", "existing destination", cli("export", LM, "{ws}/docs"), ["lm", "docs"], None, "already exists"),
    # push (dry runs: nothing reaches the network)
    ("push", "missing folder", cli("push", "{ws}/nowhere", "user/model", "--dry-run"), [], None, "nowhere"),
    ("push", "a folder export did not write", cli("push", LM, "user/model", "--dry-run"), ["lm"], None,
     "is not an exported model folder"),
    ("push", "invalid repository id", cli("push", "{ws}/hub", "not a repo id!", "--dry-run"), ["hub"], None,
     "not a repo id!"),
    ("push", "exported folder without its weights", cli("push", "{ws}/hub", "user/model", "--dry-run"), ["hub"],
     remove("hub/model.safetensors"), "model.safetensors|weights"),
    # data, bench, demo
    ("data", "show without a name", cli("data", "show"), [], None, "show which data set"),
    ("data", "list with a name", cli("data", "list", "passkey"), [], None, "takes no name"),
    ("bench", "unknown variant", cli("bench", "gpt2"), [], None, "invalid choice: 'gpt2'"),
    ("demo", "output folder that is not a demo run", cli("demo", "--output-dir", "{ws}/docs", "--overwrite",
                                                          "--max-steps", "1"), ["docs"], None,
     "is not an earlier hf-longctx run folder"),
    ("(none)", "unknown subcommand", cli("fly"), [], None, "invalid choice: 'fly'"),
]
for sub, id_, call, needs, damage, match in cli_cases:
    case(f"CLI {sub}", id_, call, CLI, match, needs, damage)


# ---------------------------------------------------------------- the test ---------------------------------------------


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> sha256 of its bytes ("dir" for a folder)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_ends_in_a_named_error_and_changes_no_file(c, pristine, tmp_path, capsys, one_thread):
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in c.needs:
        shutil.copytree(pristine / name, ws / name)
    if c.damage is not None:
        c.damage(ws)
    before = _snapshot(ws)
    capsys.readouterr()
    if c.error == CLI:
        try:
            code = c.call(ws)
        except SystemExit as exit_:  # argparse's refusals: exit 2 with "error: ..." as the last line
            code = exit_.code
        err = capsys.readouterr().err
        assert code not in (0, None), f"exit {code}; stderr:\n{err}"
        assert "Traceback" not in err, err
        # Progress bars (datasets' Map, weight loading) share stderr; every other line is a message.
        lines = [line for line in err.strip().splitlines() if line.strip() and "%|" not in line]
        message = lines[-1] if lines else ""
        if code == 2 and message.startswith("hf-longctx") and "error:" in message:
            lines = [message]  # argparse prints its usage above the one line that says what is wrong
        assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
        assert __import__("re").search(c.match, message), f"{message!r} does not match {c.match!r}"
    else:
        with pytest.raises(c.error, match=c.match):
            c.call(ws)
    assert _snapshot(ws) == before, "the call changed, added or removed files"


def test_labels_memories_and_a_changed_config_get_errors_that_name_them():
    """Reformer labels of another shape or a float dtype were reshape / dtype errors from inside torch; float64
    memories for a float32 Transformer-XL a dtype error from a matmul; a layer list changed after the model was
    built a KeyError at forward."""
    from test_reformer_model import make_config as reformer_config
    from test_transfo_xl_model import make_config as transfo_xl_config

    from hf_longctx import LongctxReformerForCausalLM, LongctxReformerForMaskedLM, LongctxTransfoXLForCausalLM

    ids = torch.randint(3, 90, (2, 9))
    for model in (LongctxReformerForCausalLM(reformer_config(is_decoder=True)), LongctxReformerForMaskedLM(reformer_config())):
        with pytest.raises(ValueError, match=r"labels must have shape \(2, 9\) like the input, got \(2, 8\)"):
            model(input_ids=ids, labels=ids[:, :8])
        with pytest.raises(ValueError, match="labels must be integer token ids"):
            model(input_ids=ids, labels=ids.float())
    txl = LongctxTransfoXLForCausalLM(transfo_xl_config())
    mems = txl(input_ids=ids).mems
    with pytest.raises(ValueError, match=r"mems\[0\] is torch.float64 but the model computes in torch.float32"):
        txl(input_ids=ids, mems=tuple(m.double() for m in mems))
    with pytest.raises(ValueError, match="labels must be integer token ids"):
        txl(input_ids=ids, labels=ids.float())
    model = LongctxReformerForMaskedLM(reformer_config())
    model.config.attn_layers = ["local", "zzz"]
    with pytest.raises(ValueError, match=r"config.attn_layers is \['local', 'zzz'\] but this model was built with"):
        model(input_ids=ids)


def test_a_reformer_length_error_names_the_limit_that_binds():
    """With an axial product (64) above max_position_embeddings (32), the limit is the latter, and the error said
    "the axial position shape's product"."""
    from test_reformer_model import make_config as reformer_config

    from hf_longctx import LongctxReformerModel

    model = LongctxReformerModel(reformer_config(axial_pos_shape=[8, 8], max_position_embeddings=32)).eval()
    with pytest.raises(ValueError, match=r"at most 32 \(max_position_embeddings\)"):
        model(input_ids=torch.ones(1, 40, dtype=torch.long))
    model = LongctxReformerModel(reformer_config(axial_pos_shape=[4, 8], max_position_embeddings=64)).eval()
    with pytest.raises(ValueError, match=r"at most 32 \(the axial position shape's product, \[4, 8\]\)"):
        model(input_ids=torch.ones(1, 40, dtype=torch.long))
