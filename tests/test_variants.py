"""The variant table (hf_longctx.variants) is what every other list of variants derives from: each record must
name things that exist, and the package's tables must be the ones it derives."""

import importlib
import inspect
from importlib import resources
from pathlib import Path

import pytest
import transformers

import hf_longctx
from hf_longctx import variants
from hf_longctx.variants import VARIANTS

TESTS = Path(__file__).parent


@pytest.mark.parametrize("record", VARIANTS, ids=lambda v: v.name)
def test_every_record_names_what_exists(record):
    assert record.config_class.model_type == record.model_type
    folder = Path(hf_longctx.__file__).parent / "models" / record.folder
    assert (folder / f"configuration_{record.folder}.py").is_file() and (folder / f"modeling_{record.folder}.py").is_file()
    for auto_class, model_class in record.heads.items():
        assert model_class.config_class is record.config_class, model_class
        assert Path(inspect.getfile(model_class)).parent == folder, f"{model_class} lives outside {folder}"
        assert transformers.AutoConfig.for_model(record.model_type).__class__ is record.config_class
        assert auto_class._model_mapping[record.config_class] is model_class
    assert callable(getattr(importlib.import_module("hf_longctx.tasks"), record.preset))
    assert callable(importlib.import_module(f"hf_longctx.conversion.{record.converter}").convert)
    assert callable(importlib.import_module(f"hf_longctx.benchmarks.{record.benchmark}").main)
    modeling = importlib.import_module(f"hf_longctx.models.{record.folder}.modeling_{record.folder}")
    assert isinstance(getattr(modeling, record.block_class), type), record.block_class
    assert resources.files("hf_longctx.model_cards").joinpath(record.card_template).is_file()
    assert (TESTS / f"test_{record.folder}_model.py").is_file(), "each variant parametrizes the shared suite"


def test_the_package_tables_are_derived_from_the_records():
    from hf_longctx.benchmarks import VARIANT_MODULES
    from hf_longctx.convert import CONVERTERS
    from hf_longctx.tasks import VARIANTS as PRESET_BUILDERS

    assert hf_longctx.REGISTRY == {v.model_type: (v.config_class, v.heads) for v in VARIANTS}
    assert VARIANT_MODULES == {v.name: v.benchmark for v in VARIANTS}
    assert CONVERTERS == {v.source_model_type: v.converter for v in VARIANTS}
    assert list(PRESET_BUILDERS) == [v.name for v in VARIANTS]
    assert len({v.name for v in VARIANTS}) == len({v.model_type for v in VARIANTS}) == len(VARIANTS)
    assert variants.variant_name("longctx_transfo_xl") == "transfo-xl" and variants.variant_name("bert") == "bert"
