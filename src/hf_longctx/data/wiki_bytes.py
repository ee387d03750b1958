"""Byte-level language modelling on real Wikipedia XML, split like enwik8.

``enwiki_sample.xml.gz`` next to this module is built by ``tools/build_data.py wiki-bytes`` from the test data of the
PyPI wheel ``gensim==4.4.0``: 6,089,746 bytes of a 2016 English Wikipedia dump in the raw XML format of enwik8
(CC BY-SA 3.0; ``PROVENANCE_wiki_bytes.md`` gives the attribution, version and sha256). As with enwik8 the file is cut
into three contiguous byte ranges, 90% / 5% / 5%, and models are scored in bits per byte.
"""

from __future__ import annotations

import gzip
import itertools
import math
import zlib
from importlib import resources

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, Features, List, Value

from .files import DataError

DATA_FILE = "enwiki_sample.xml.gz"
PROVENANCE_FILE = "PROVENANCE_wiki_bytes.md"
SPLITS = ("train", "validation", "test")
SPLIT_PERCENT = (90, 5, 5)  # enwik8's 90M / 5M / 5M
# ByT5Tokenizer's ids: 0 <pad>, 1 </s>, 2 <unk>, then byte b is id b + 3 (transformers' tokenization_byt5.py,
# `offset`), so blocks can be decoded with hf_longctx.data.tokenizers.byte_tokenizer().
BYTE_ID_OFFSET = 3


def read_bytes() -> bytes:
    """The whole corpus, decompressed: the XML exactly as in the source dump."""
    path = resources.files(__package__).joinpath(DATA_FILE)
    try:
        with path.open("rb") as raw:
            return gzip.decompress(raw.read())
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"the packaged data file {path} is missing or damaged ({type(err).__name__}: {err}); "
                        "reinstall hf_longctx or rebuild it with tools/build_data.py wiki-bytes") from err


def split_bytes(data: bytes | None = None) -> dict[str, bytes]:
    """``{"train", "validation", "test"}`` -> contiguous byte ranges of ``data`` (default: the packaged corpus).

    The boundaries are ``n * 90 // 100`` and ``n * 95 // 100``; like enwik8's, they may fall inside a page or a
    multi-byte UTF-8 character: these are bytes, not text.
    """
    data = read_bytes() if data is None else data
    n = len(data)
    bounds = [0, *(n * end // 100 for end in itertools.accumulate(SPLIT_PERCENT))]  # last: n * 100 // 100 == n
    return {split: data[bounds[i]:bounds[i + 1]] for i, split in enumerate(SPLITS)}


def load_wiki_bytes(block_size: int = 512, id_offset: int = BYTE_ID_OFFSET) -> DatasetDict:
    """The corpus as consecutive, non-overlapping blocks of ``block_size`` bytes, one split per byte range.

    Column ``input_ids``: the bytes of a block plus ``id_offset`` (3 by default, the ids of
    :func:`hf_longctx.data.tokenizers.byte_tokenizer`, whose vocabulary has 259 ids; 0 gives raw byte values).
    No special tokens are added: a causal LM predicts every byte after the first from the ones before it, and its
    mean loss in nats converts with :func:`bits_per_byte`. Each split's last ``len % block_size`` bytes, which do not
    fill a block, are dropped (under ``block_size`` bytes per split); :func:`split_bytes` gives every byte, for an
    evaluation that needs them all (``hf_longctx.data.long_docs.segment_with_stride`` with ``lm_labels``).
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    if isinstance(id_offset, bool) or not isinstance(id_offset, int) or id_offset < 0:
        raise ValueError(f"id_offset must be a non-negative integer, got {id_offset!r}")
    features = Features({"input_ids": List(Value("int32"), length=block_size)})
    splits = {}
    for split, data in split_bytes().items():
        n_blocks = len(data) // block_size
        ids = np.frombuffer(data, dtype=np.uint8, count=n_blocks * block_size).astype(np.int32) + id_offset
        # One fixed-size Arrow list over the flat array: 6x faster than from_dict on a 2-D array.
        blocks = pa.FixedSizeListArray.from_arrays(pa.array(ids), block_size)
        splits[split] = Dataset.from_dict({"input_ids": blocks}, features=features)
    return DatasetDict(splits)


def bits_per_byte(mean_loss: float, num_tokens: int | None = None, num_bytes: int | None = None) -> float:
    """Bits per byte from a mean cross-entropy in nats per token.

    For a byte-level model a token is a byte and bits per byte is ``mean_loss / ln 2``. For any other tokenizer,
    give the number of tokens the loss was averaged over and the number of UTF-8 bytes of the text they encode:
    the total loss ``mean_loss * num_tokens`` nats is spread over ``num_bytes`` bytes (the usual way to compare
    models with different tokenizers).
    """
    if (num_tokens is None) != (num_bytes is None):
        raise ValueError(f"give both num_tokens and num_bytes or neither, got {num_tokens!r} and {num_bytes!r}")
    if num_tokens is None:
        return mean_loss / math.log(2)
    if num_bytes <= 0 or num_tokens < 0:
        raise ValueError(f"num_bytes must be positive and num_tokens non-negative, got {num_bytes} and {num_tokens}")
    return mean_loss * num_tokens / (num_bytes * math.log(2))


__all__ = [
    "BYTE_ID_OFFSET", "DATA_FILE", "PROVENANCE_FILE", "SPLITS", "SPLIT_PERCENT",
    "bits_per_byte", "load_wiki_bytes", "read_bytes", "split_bytes",
]
