"""Configuration of the hf_longctx Transformer-XL (model type ``longctx_transfo_xl``)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig


@strict
class LongctxTransfoXLConfig(PretrainedConfig):
    r"""Configuration of a Transformer-XL (Dai et al. 2019): segment recurrence with relative positions.

    d_model (`int`): width of the hidden states. Must be even (sinusoid halves).
    d_embed (`int`, optional): width of the (first cluster's) token embedding; defaults to ``d_model``. When it
        differs, or with ``div_val > 1``, embeddings are projected to ``d_model``.
    n_head, d_head (`int`): attention heads and their size (``n_head * d_head`` need not equal ``d_model``).
    d_inner (`int`): width of the feed-forward layer.
    n_layer (`int`): number of layers.
    segment_length (`int`): a longer input is processed in segments of this many tokens, in order, each attending
        to the memory of the previous ones (section 3.2). The paper's ``tgt_len``.
    mem_len (`int`): positions of each layer's input kept as memory for the next segment; 0 disables memory.
    same_length (`bool`): every query attends to exactly ``mem_len`` positions (itself included) instead of
        ``mem_len`` plus its position in the segment (the paper's evaluation setting). Needs ``mem_len >= 1``.
    clamp_len (`int`, optional): distances beyond it use the embedding of ``clamp_len``; ``None`` = no clamp.
    dropout, dropatt (`float`): dropout on hidden states and on attention probabilities.
    pre_lnorm (`bool`): LayerNorm before each sub-block (and no final LayerNorm, as the paper's code).
    untie_r (`bool`): each layer has its own position biases ``u``, ``v`` (``r_w_bias``, ``r_r_bias``); otherwise
        one pair is shared by all layers.
    cutoffs (`list[int]`), div_val (`int`): adaptive input and softmax (Baevski & Auli 2019; Grave et al. 2017):
        the vocabulary is split at ``cutoffs`` into clusters, cluster ``i`` has embeddings of width
        ``d_embed // div_val**i``. ``[]`` is a plain softmax.
    tie_projs (`list[bool]`, optional): per cluster, whether the softmax projection is the embedding projection;
        default ``[False] + [True] * n_clusters`` (transformers 4.x and the paper's wt103 setting).
    max_input_length (`int`): the longest input that tools outside the model (tokenization, model cards) use, read
        as ``max_input_tokens``. The model itself has no position table and takes inputs of any length, in segments.
    """

    model_type = "longctx_transfo_xl"
    keys_to_ignore_at_inference = ["mems", "mems_mask", "cache"]

    vocab_size: int = 32000
    d_model: int = 512
    d_embed: int | None = None
    n_head: int = 8
    d_head: int = 64
    d_inner: int = 2048
    n_layer: int = 12
    segment_length: int = 512
    mem_len: int = 512
    same_length: bool = False
    clamp_len: int | None = None
    dropout: float | int = 0.1
    dropatt: float | int = 0.0
    pre_lnorm: bool = False
    untie_r: bool = True
    cutoffs: list[int] = ()
    div_val: int = 1
    tie_projs: list[bool] | None = None
    layer_norm_epsilon: float = 1e-5
    init_std: float = 0.02
    proj_init_std: float = 0.01
    max_input_length: int = 4096
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        self.cutoffs = list(self.cutoffs)
        if self.d_embed is None:
            self.d_embed = self.d_model
        if self.tie_projs is None:
            self.tie_projs = [False] + [True] * len(self.cutoffs)
        super().__post_init__(**kwargs)
        self.check_fields()

    def check_fields(self) -> None:
        """Raise ``ValueError`` naming the first field whose value cannot build a model.

        Runs when the config is created and again when a model is built from it (fields may be set in between).
        """
        for name in ("vocab_size", "d_model", "d_embed", "n_head", "d_head", "d_inner", "n_layer", "segment_length",
                     "div_val", "max_input_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be an id in the vocabulary [0, {self.vocab_size}), got "
                             f"{self.pad_token_id}")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even (sinusoid position embeddings), got {self.d_model}")
        if isinstance(self.mem_len, bool) or not isinstance(self.mem_len, int) or self.mem_len < 0:
            raise ValueError(f"mem_len must be an integer >= 0, got {self.mem_len!r}")
        if self.clamp_len is not None and (isinstance(self.clamp_len, bool) or not isinstance(self.clamp_len, int)
                                           or self.clamp_len < 1):
            raise ValueError(f"clamp_len must be None (no clamp) or an integer >= 1, got {self.clamp_len!r}")
        if self.same_length and self.mem_len < 1:
            raise ValueError(f"same_length=True needs mem_len >= 1 (each query sees mem_len positions), got {self.mem_len}")
        for name in ("dropout", "dropatt"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p!r}")
        cutoffs = list(self.cutoffs)
        if any(isinstance(c, bool) or not isinstance(c, int) for c in cutoffs) or cutoffs != sorted(set(cutoffs)) \
                or (cutoffs and (cutoffs[0] < 1 or cutoffs[-1] >= self.vocab_size)):
            raise ValueError(
                f"cutoffs must be strictly increasing integers in [1, vocab_size={self.vocab_size}), got {cutoffs!r}"
            )
        if self.d_embed // self.div_val ** len(cutoffs) < 1:
            raise ValueError(
                f"div_val={self.div_val} leaves the last of {len(cutoffs) + 1} clusters no embedding width "
                f"(d_embed={self.d_embed})"
            )
        if len(self.tie_projs) != len(cutoffs) + 1:
            raise ValueError(
                f"tie_projs has {len(self.tie_projs)} entries but there are {len(cutoffs) + 1} clusters (cutoffs + 1)"
            )

    @property
    def max_input_tokens(self) -> int:
        """The longest input tools outside ``models/`` tokenize to (every variant's config has this property)."""
        return self.max_input_length

    @property
    def position_limit(self) -> None:
        """No position table: the model reads (and generates) any length; ``max_input_tokens`` only bounds what
        tools tokenize for training and evaluation. The other variants' limit is their ``max_input_tokens``."""
        return None

    @property
    def initializer_range(self) -> float:
        """``init_std`` under the name tools outside the model use (re-initialising a classifier head)."""
        return self.init_std

    @property
    def cluster_widths(self) -> list[int]:
        """Embedding width per cluster of the adaptive input/softmax."""
        return [self.d_embed // self.div_val**i for i in range(len(self.cutoffs) + 1)]


__all__ = ["LongctxTransfoXLConfig"]
