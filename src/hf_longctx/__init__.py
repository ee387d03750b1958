"""hf_longctx: long-context Transformers (Longformer, Reformer, Transformer-XL) as Hugging Face models.

Importing the package registers every variant with ``AutoConfig`` and the matching ``AutoModel*`` classes.
"""

from transformers import AutoConfig

from .models.longformer.configuration_longformer import LongctxLongformerConfig
from .models.longformer.modeling_longformer import (
    LongctxLongformerForCausalLM,
    LongctxLongformerForMaskedLM,
    LongctxLongformerForMultipleChoice,
    LongctxLongformerForQuestionAnswering,
    LongctxLongformerForSequenceClassification,
    LongctxLongformerForTokenClassification,
    LongctxLongformerModel,
    LongformerSinkWindowCache,
)
from .models.reformer.configuration_reformer import LongctxReformerConfig
from .models.reformer.modeling_reformer import (
    LongctxReformerForCausalLM,
    LongctxReformerForMaskedLM,
    LongctxReformerForQuestionAnswering,
    LongctxReformerForSequenceClassification,
    LongctxReformerModel,
    ReformerGenerationCache,
)
from .models.transfo_xl.configuration_transfo_xl import LongctxTransfoXLConfig
from .models.transfo_xl.modeling_transfo_xl import (
    LongctxTransfoXLForCausalLM,
    LongctxTransfoXLForSequenceClassification,
    LongctxTransfoXLModel,
    TransfoXLMemoryCache,
)

from .variants import VARIANTS

__version__ = "0.1.0"

# model_type -> (config class, {auto class: model class}), derived from the variant table (hf_longctx.variants).
REGISTRY = {v.model_type: (v.config_class, v.heads) for v in VARIANTS}


def _register() -> None:
    # No exist_ok: replacing one of transformers' own classes would change it for the whole process.
    for model_type, (config_class, heads) in REGISTRY.items():
        AutoConfig.register(model_type, config_class)
        # register_for_auto_class makes save_pretrained copy the variant's code next to the weights (remote code).
        config_class.register_for_auto_class()
        for auto_class, model_class in heads.items():
            auto_class.register(config_class, model_class)
            model_class.register_for_auto_class(auto_class.__name__)


_register()

__all__ = [
    "LongctxLongformerConfig",
    "LongctxLongformerModel",
    "LongctxLongformerForMaskedLM",
    "LongctxLongformerForCausalLM",
    "LongctxLongformerForSequenceClassification",
    "LongctxLongformerForTokenClassification",
    "LongctxLongformerForQuestionAnswering",
    "LongctxLongformerForMultipleChoice",
    "LongformerSinkWindowCache",
    "LongctxReformerConfig",
    "LongctxReformerModel",
    "LongctxReformerForCausalLM",
    "LongctxReformerForMaskedLM",
    "LongctxReformerForSequenceClassification",
    "LongctxReformerForQuestionAnswering",
    "ReformerGenerationCache",
    "LongctxTransfoXLConfig",
    "LongctxTransfoXLModel",
    "LongctxTransfoXLForCausalLM",
    "LongctxTransfoXLForSequenceClassification",
    "TransfoXLMemoryCache",
    "REGISTRY",
    "VARIANTS",
]
