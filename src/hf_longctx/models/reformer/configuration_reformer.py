"""Configuration of the hf_longctx Reformer (model type ``longctx_reformer``)."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

LAYER_TYPES = ("lsh", "local")


@strict
class LongctxReformerConfig(PretrainedConfig):
    r"""Configuration of a Reformer (Kitaev et al. 2020): LSH and local chunked attention, reversible layers.

    Field names and meanings follow ``transformers.ReformerConfig`` so its checkpoints convert by copying weights.

    attn_layers (`list[str]`): ``"lsh"`` or ``"local"`` per layer; ``num_hidden_layers`` is its length.
    num_attention_heads, attention_head_size: heads and their width (``hidden_size`` need not equal their product).
    num_hashes (`int`, defaults to 1): LSH rounds per layer.
    num_buckets (`int`, `[int, int]` or `None`): even bucket count, a factorized pair, or ``None`` to choose one per
        call from the input length (transformers' rule; never written back into the config).
    lsh_attn_chunk_length, lsh_num_chunks_before, lsh_num_chunks_after: LSH chunks and their neighbours.
    local_attn_chunk_length, local_num_chunks_before, local_num_chunks_after: the same for local layers.
    is_decoder (`bool`): causal attention (``LongctxReformerForCausalLM`` needs it; the MLM head refuses it).
    axial_pos_embds (`bool`, defaults to `True`): axial position embeddings of shape ``axial_pos_shape`` with widths
        ``axial_pos_embds_dim`` (summing to ``hidden_size``); any input length up to the shape's product, in
        training too. ``False``: a learned table of ``max_position_embeddings`` rows.
    reversible (`bool`, defaults to `True`): reversible residual layers (activations recomputed in backward).
    chunk_size_feed_forward (`int`): feed-forward over this many positions at a time (0: all at once).
    hash_seed (`int`, defaults to 0): seeds the LSH rotations. In eval every LSH layer draws the rotations that
        ``torch.manual_seed(hash_seed); torch.randn(...)`` gives (transformers' eval behaviour with the same seed);
        in training rotations and dropout come from a private generator seeded with it (``hf-longctx train``
        seeds it from ``(hash_seed, --seed)`` and checkpoints it). The global RNG is untouched.
    """

    model_type = "longctx_reformer"
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 320
    hidden_size: int = 256
    num_attention_heads: int = 2
    attention_head_size: int = 64
    attn_layers: list[str] | tuple[str, ...] = ("local", "lsh", "local", "lsh", "local", "lsh")
    num_hashes: int = 1
    num_buckets: int | list[int] | tuple[int, ...] | None = None
    lsh_attn_chunk_length: int = 64
    lsh_num_chunks_before: int = 1
    lsh_num_chunks_after: int = 0
    local_attn_chunk_length: int = 64
    local_num_chunks_before: int = 1
    local_num_chunks_after: int = 0
    is_decoder: bool = False
    axial_pos_embds: bool = True
    axial_pos_shape: list[int] | tuple[int, ...] = (64, 64)
    axial_pos_embds_dim: list[int] | tuple[int, ...] = (64, 192)
    axial_norm_std: float | int = 1.0
    max_position_embeddings: int = 4096
    reversible: bool = True
    feed_forward_size: int = 512
    hidden_act: str = "relu"
    hidden_dropout_prob: float | int = 0.05
    local_attention_probs_dropout_prob: float | int = 0.05
    lsh_attention_probs_dropout_prob: float | int = 0.0
    classifier_dropout: float | int | None = None
    hash_seed: int = 0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    use_cache: bool = True
    tie_word_embeddings: bool = False
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = 2

    def __post_init__(self, **kwargs):
        kwargs.pop("num_hidden_layers", None)  # derived from attn_layers
        self.attn_layers = list(self.attn_layers)
        self.axial_pos_shape = list(self.axial_pos_shape)
        self.axial_pos_embds_dim = list(self.axial_pos_embds_dim)
        if isinstance(self.num_buckets, tuple):
            self.num_buckets = list(self.num_buckets)
        super().__post_init__(**kwargs)
        self.check_fields()

    @property
    def num_hidden_layers(self) -> int:
        return len(self.attn_layers)

    def check_fields(self) -> None:
        """Raise ``ValueError`` naming the first field whose value cannot build a model (also run by the model)."""
        if not self.attn_layers:
            raise ValueError("attn_layers is empty: give one of 'lsh' / 'local' per layer")
        for i, kind in enumerate(self.attn_layers):
            if kind not in LAYER_TYPES:
                raise ValueError(f"attn_layers[{i}] must be 'lsh' or 'local', got {kind!r}")
        # The chunking fields of an attention type no layer uses may be None (transformers writes them so).
        used = set(self.attn_layers)
        positive = ("vocab_size", "hidden_size", "num_attention_heads", "attention_head_size", "num_hashes",
                    "max_position_embeddings", "feed_forward_size")
        positive += tuple(f"{kind}_attn_chunk_length" for kind in ("lsh", "local") if kind in used)
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        counts = tuple(f"{kind}_num_chunks_{side}" for kind in ("lsh", "local") if kind in used
                       for side in ("before", "after"))
        for name in counts + ("chunk_size_feed_forward", "hash_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be an id in the vocabulary [0, {self.vocab_size}), got "
                             f"{self.pad_token_id}")
        nb = self.num_buckets
        if nb is not None:
            factors = [nb] if not isinstance(nb, list) else nb
            if not 1 <= len(factors) <= 2 or any(
                isinstance(f, bool) or not isinstance(f, int) or f < 2 or f % 2 for f in factors
            ):
                raise ValueError(f"num_buckets must be an even integer >= 2, a list of two, or None, got {nb!r}")
        if self.is_decoder and ("lsh" in self.attn_layers and self.lsh_num_chunks_after
                                or "local" in self.attn_layers and self.local_num_chunks_after):
            raise ValueError(
                "is_decoder=True attends to no later chunk: lsh_num_chunks_after and local_num_chunks_after must "
                f"be 0, got {self.lsh_num_chunks_after} and {self.local_num_chunks_after}"
            )
        if self.axial_pos_embds:
            if len(self.axial_pos_shape) != 2 or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.axial_pos_shape
            ):
                raise ValueError(f"axial_pos_shape must be two positive integers, got {self.axial_pos_shape!r}")
            if len(self.axial_pos_embds_dim) != 2 or sum(self.axial_pos_embds_dim) != self.hidden_size:
                raise ValueError(
                    f"axial_pos_embds_dim {self.axial_pos_embds_dim!r} must be two widths summing to hidden_size "
                    f"({self.hidden_size})"
                )
        for name in ("hidden_dropout_prob", "local_attention_probs_dropout_prob", "lsh_attention_probs_dropout_prob"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p!r}")
        if self.hidden_act not in ACT2FN:  # a KeyError from transformers' table when the model was built
            raise ValueError(f"hidden_act must be one of transformers' activations ({', '.join(sorted(ACT2FN))}), "
                             f"got {self.hidden_act!r}")

    @property
    def chunk_lcm(self) -> int:
        """Least common multiple of the chunk lengths of the layer types in use."""
        lengths = {"lsh": self.lsh_attn_chunk_length, "local": self.local_attn_chunk_length}
        return math.lcm(*(lengths[k] for k in set(self.attn_layers)))

    @property
    def input_limit_name(self) -> str:
        """What sets :attr:`max_input_tokens`, for error messages."""
        if self.axial_pos_embds and math.prod(self.axial_pos_shape) <= self.max_position_embeddings:
            return f"the axial position shape's product, {self.axial_pos_shape}"
        return "max_position_embeddings"

    @property
    def max_input_tokens(self) -> int:
        """The longest input: the axial shape's product (and ``max_position_embeddings``), or the position table.
        Every variant's config has this property; tools outside ``models/`` read it."""
        if self.axial_pos_embds:
            return min(math.prod(self.axial_pos_shape), self.max_position_embeddings)
        return self.max_position_embeddings


__all__ = ["LongctxReformerConfig"]
