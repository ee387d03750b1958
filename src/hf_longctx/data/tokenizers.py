"""Tokenizers that work offline: bytes (ByT5's, built from no file) and a byte-level BPE trained here.

Hub tokenizers cannot be fetched at run time, so the package ships what it needs: :func:`byte_tokenizer` has no
vocabulary file at all, :func:`train_bpe` trains a RoBERTa-style byte-level BPE with the ``tokenizers`` library in
seconds, and :func:`shipped_bpe` loads one of the 8k BPEs committed in ``bpe_<corpus>/``, each trained on the train
split of its corpus by ``tools/build_data.py bpe`` (see ``PROVENANCE_bpe_<corpus>.md``).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from transformers import AutoTokenizer, ByT5Tokenizer, PreTrainedTokenizerFast

# RoBERTa's special tokens in its order, so pad is 1 and </s> (eos and sep) is 2, the ids LongctxLongformerConfig
# expects by default (bos 0, pad 1, eos 2, like transformers' RobertaConfig).
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BPE_DIR = "bpe_kernel_docs"
SHIPPED_BPES = ("kernel_docs", "shakespeare_genre")  # the corpora with a committed bpe_<corpus>/ folder


def byte_tokenizer() -> ByT5Tokenizer:
    """transformers' ``ByT5Tokenizer(extra_ids=0)``: 259 ids, 0 ``<pad>``, 1 ``</s>``, 2 ``<unk>``, byte b -> b + 3.

    It needs no file, so it works offline. Every text encodes losslessly (UTF-8 bytes); ``tokenizer(text)``
    appends ``</s>``, and a pair is ``A </s> B </s>``.
    """
    return ByT5Tokenizer(extra_ids=0)


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and return it as a transformers tokenizer, saved in ``out_dir`` if given.

    The model is RoBERTa's: byte-level pre-tokenisation without a prefix space, no normaliser (decoding gives the
    text back exactly), :data:`SPECIAL_TOKENS` as ids 0-4, ``<s> A </s>`` for one sequence and
    ``<s> A </s></s> B </s>`` for a pair. ``<mask>`` strips the space before it, as RoBERTa's does. Merges are learnt
    from pairs seen at least twice, so the vocabulary may stay under ``vocab_size`` on tiny corpora.
    ``AutoTokenizer.from_pretrained(out_dir)`` reloads it without network.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be an integer of at least {256 + len(SPECIAL_TOKENS)} (bytes + specials), "
                         f"got {vocab_size!r}")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    # The trainer registers the specials: <mask> must carry lstrip there, the wrapper below cannot change it.
    specials = [AddedToken(token, lstrip=token == "<mask>", special=True) for token in SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte gets an id, so nothing is ever <unk>
    )
    bpe.train_from_iterator(texts, trainer)
    # trim_offsets=False: offsets then cover the leading space too, and decoding a span gives exactly its text.
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=False,
                                                      add_prefix_space=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", pad_token="<pad>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", mask_token="<mask>",
    )
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def shipped_bpe(corpus: str) -> PreTrainedTokenizerFast:
    """The committed 8k byte-level BPE trained on ``corpus``'s train split (one of :data:`SHIPPED_BPES`), through
    ``AutoTokenizer``. A tokenizer trained on the task's own text gives more words per token than a borrowed one:
    a 1,000-word Shakespeare window is ~1.7k tokens with its own BPE, ~2.2k with the kernel-docs one."""
    if corpus not in SHIPPED_BPES:
        raise ValueError(f"no shipped BPE for {corpus!r}; there is one for {', '.join(SHIPPED_BPES)}")
    return AutoTokenizer.from_pretrained(str(resources.files(__package__).joinpath(f"bpe_{corpus}")))


def kernel_docs_bpe() -> PreTrainedTokenizerFast:
    """The committed 8k byte-level BPE trained on the kernel-docs train split, through ``AutoTokenizer``."""
    return shipped_bpe("kernel_docs")


__all__ = ["BPE_DIR", "SHIPPED_BPES", "SPECIAL_TOKENS", "byte_tokenizer", "kernel_docs_bpe", "shipped_bpe", "train_bpe"]


def byte_prompt_tokenizer() -> PreTrainedTokenizerFast:
    """:func:`byte_tokenizer`'s ids (0 ``<pad>``, 1 ``</s>``, 2 ``<unk>``, byte b -> b + 3) as a fast tokenizer
    that adds no ``</s>`` to a text: what a causal LM saves, so that a pipeline's prompt does not end with the
    end-of-text token (ByT5's tokenizer always appends it; a model then continues after end-of-text).

    A byte-level BPE with no merges: byte-level pre-tokenisation maps each byte to one character, and the
    vocabulary maps each character to its byte's id. ``tests/test_data_sets.py`` checks the ids against ByT5's.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 characters standing for bytes, in no fixed order
    char_of = _byte_level_chars()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{char_of[b]: b + 3 for b in range(256)}}
    assert set(char_of.values()) == set(alphabet)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    # lstrip / rstrip as ByT5's: a special token in the text swallows the spaces around it
    tok.add_special_tokens([AddedToken(t, lstrip=True, rstrip=True, special=True) for t in ("<pad>", "</s>", "<unk>")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _byte_level_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which the byte-level pre-tokeniser applies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def causal_prompt_tokenizer(tokenizer):
    """The tokenizer a causal LM is saved with: ``tokenizer`` without the end token it appends to a text (a
    prompt must not end with end-of-text). ByT5's byte tokenizer becomes :func:`byte_prompt_tokenizer` (same
    ids); a fast tokenizer whose post-processor appends ``</s>`` keeps its start token only. Others are returned
    as they are."""
    from tokenizers import processors

    if isinstance(tokenizer, ByT5Tokenizer):
        prompt = byte_prompt_tokenizer()
        prompt.model_max_length = tokenizer.model_max_length
        return prompt
    backend = getattr(tokenizer, "backend_tokenizer", None)
    eos = tokenizer.eos_token
    if backend is None or eos is None or tokenizer("a")["input_ids"][-1:] != [tokenizer.eos_token_id]:
        return tokenizer
    bos = tokenizer.bos_token if tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id] else None
    specials = [(t, tokenizer.convert_tokens_to_ids(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)]
    single = f"{bos} $A" if bos else "$A"
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=f"{single} {eos} {eos} $B:1", special_tokens=specials)
    return tokenizer
