"""The one table of model families: every list of variants in the package, the CLI and the tests derives from it.

A record says everything outside a variant's own folder needs to know about it (litgpt keeps its model configs
as data the same way): its names, config class and heads, the preset builder ``hf-longctx train`` sizes a new
model with, the converter and benchmark modules, the block class FSDP wraps, its card template, and whether it
attends causally whatever its head. A fourth variant is a folder under ``models/``, one record here and a test
file that parametrizes the shared suites (CONTRIBUTING.md, "Adding a variant").

The CLI (``hf_longctx_cli``) keeps a copy of the names, so that its parser imports nothing heavy;
``tests/test_cli.py`` fails when that copy drifts from this table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .models.longformer import configuration_longformer as _longformer_config
from .models.longformer import modeling_longformer as _longformer
from .models.reformer import configuration_reformer as _reformer_config
from .models.reformer import modeling_reformer as _reformer
from .models.transfo_xl import configuration_transfo_xl as _transfo_xl_config
from .models.transfo_xl import modeling_transfo_xl as _transfo_xl


@dataclass(frozen=True)
class Variant:
    name: str  # `hf-longctx train --variant`, `hf-longctx bench`
    model_type: str  # config.json's model_type: what `AutoConfig` reads back
    folder: str  # its folder under hf_longctx/models (the remote code a saved model carries); tests/test_<folder>_*.py
    config_class: type
    heads: dict  # transformers Auto class -> our model class
    preset: str  # the function in hf_longctx.tasks that sizes a new model: (preset, tokenizer, length, task, labels, dropout)
    source_model_type: str  # the model_type of the checkpoints `hf-longctx convert` reads
    converter: str  # its module under hf_longctx.conversion
    benchmark: str  # its module under hf_longctx.benchmarks (`hf-longctx bench NAME`)
    block_class: str  # the layer FSDP wraps as one unit (`transformer_layer_cls_to_wrap`)
    always_causal: bool = False  # attends causally whatever its head (a classifier then reads the last token)

    @property
    def card_template(self) -> str:
        """Its model card template, a file of ``hf_longctx/model_cards``."""
        return f"{self.model_type}.md"

    def build_config(self, *args, **kwargs):
        """The config ``hf-longctx train`` builds for a new model (``hf_longctx.tasks.<preset>``)."""
        return getattr(importlib.import_module("hf_longctx.tasks"), self.preset)(*args, **kwargs)


VARIANTS: tuple[Variant, ...] = (
    Variant(
        name="longformer",
        model_type="longctx_longformer",
        folder="longformer",
        config_class=_longformer_config.LongctxLongformerConfig,
        heads={
            AutoModel: _longformer.LongctxLongformerModel,
            AutoModelForMaskedLM: _longformer.LongctxLongformerForMaskedLM,
            AutoModelForCausalLM: _longformer.LongctxLongformerForCausalLM,
            AutoModelForSequenceClassification: _longformer.LongctxLongformerForSequenceClassification,
            AutoModelForTokenClassification: _longformer.LongctxLongformerForTokenClassification,
            AutoModelForQuestionAnswering: _longformer.LongctxLongformerForQuestionAnswering,
            AutoModelForMultipleChoice: _longformer.LongctxLongformerForMultipleChoice,
        },
        preset="longformer_config",
        source_model_type="longformer",
        converter="longformer",
        benchmark="longformer",
        block_class="LongformerLayer",
    ),
    Variant(
        name="reformer",
        model_type="longctx_reformer",
        folder="reformer",
        config_class=_reformer_config.LongctxReformerConfig,
        heads={
            AutoModel: _reformer.LongctxReformerModel,
            AutoModelForCausalLM: _reformer.LongctxReformerForCausalLM,
            AutoModelForMaskedLM: _reformer.LongctxReformerForMaskedLM,
            AutoModelForSequenceClassification: _reformer.LongctxReformerForSequenceClassification,
            AutoModelForQuestionAnswering: _reformer.LongctxReformerForQuestionAnswering,
        },
        preset="reformer_config",
        source_model_type="reformer",
        converter="reformer",
        benchmark="reformer",
        block_class="ReformerLayer",
    ),
    Variant(
        name="transfo-xl",
        model_type="longctx_transfo_xl",
        folder="transfo_xl",
        config_class=_transfo_xl_config.LongctxTransfoXLConfig,
        heads={
            AutoModel: _transfo_xl.LongctxTransfoXLModel,
            AutoModelForCausalLM: _transfo_xl.LongctxTransfoXLForCausalLM,
            AutoModelForSequenceClassification: _transfo_xl.LongctxTransfoXLForSequenceClassification,
        },
        preset="transfo_xl_config",
        source_model_type="transfo-xl",
        converter="transfo_xl",
        benchmark="transfo_xl",
        block_class="TransfoXLLayer",
        always_causal=True,
    ),
)

BY_NAME = {v.name: v for v in VARIANTS}
BY_MODEL_TYPE = {v.model_type: v for v in VARIANTS}


def by_model_type(model_type: str) -> Variant | None:
    """The record of an hf_longctx ``model_type``, or None for any other model."""
    return BY_MODEL_TYPE.get(model_type)


def variant_name(model_type: str) -> str:
    """The ``--variant`` name of an hf_longctx ``model_type`` (any other model_type as it is), for messages."""
    record = BY_MODEL_TYPE.get(model_type)
    return record.name if record else model_type


__all__ = ["BY_MODEL_TYPE", "BY_NAME", "VARIANTS", "Variant", "by_model_type", "variant_name"]
