"""Configuration of the hf_longctx Longformer (model type ``longctx_longformer``)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig
from transformers.activations import ACT2FN


@strict
class LongctxLongformerConfig(PretrainedConfig):
    r"""Configuration of a Longformer (Beltagy et al. 2020): RoBERTa with sliding-window + global attention.

    The RoBERTa fields mean what they mean in ``transformers.RobertaConfig``. Longformer fields:

    attention_window (`int` or `list[int]`, defaults to 512):
        Even window size per layer (or one for all). A bidirectional layer lets token ``i`` attend to
        ``|i - j| <= attention_window / 2``; a causal layer to ``i - attention_window <= j <= i``, the same number of
        keys. Layers may use different sizes and the input length needs no padding to a multiple of it.
    attention_dilation (`int` or `list[int]`, defaults to 1):
        Gap between attended neighbours per layer (Longformer section 3.1); 1 is a plain window.
    causal (`bool`, defaults to `False`):
        Decoder variant for ``LongctxLongformerForCausalLM``: causal sliding window, global tokens act as "sinks"
        that every later token attends to, and there are no separate global projections.
    num_sink_tokens (`int`, defaults to 0):
        Causal only: the first ``num_sink_tokens`` real tokens of every sequence are global sinks, kept in the
        generation cache for ever (the attention-sink idea of Xiao et al. 2023).
    """

    model_type = "longctx_longformer"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 4098
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    attention_window: list[int] | int = 512
    attention_dilation: list[int] | int = 1
    causal: bool = False
    num_sink_tokens: int = 0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    sep_token_id: int | None = 2
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_fields()

    def check_fields(self) -> None:
        """Raise ``ValueError`` naming the first field whose value cannot build a model.

        Runs when the config is created and again when a model is built from it (fields may be set in between).
        """
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        windows = self._per_layer("attention_window")
        for i, w in enumerate(windows):
            if isinstance(w, bool) or not isinstance(w, int) or w < 2 or w % 2:
                raise ValueError(f"attention_window must be an even integer >= 2 per layer, got {w!r} for layer {i}")
        for i, d in enumerate(self._per_layer("attention_dilation")):
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ValueError(f"attention_dilation must be an integer >= 1 per layer, got {d!r} for layer {i}")
        if isinstance(self.num_sink_tokens, bool) or not isinstance(self.num_sink_tokens, int) or self.num_sink_tokens < 0:
            raise ValueError(f"num_sink_tokens must be >= 0, got {self.num_sink_tokens}")
        if self.num_sink_tokens and not self.causal:
            raise ValueError(
                f"num_sink_tokens={self.num_sink_tokens} needs causal=True; bidirectional models take a "
                "global_attention_mask instead"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        # Position ids start after pad_token_id (max_input_tokens): a pad id outside the vocabulary was a bare
        # AssertionError from nn.Embedding, None a TypeError inside the position-id helper.
        pad = self.pad_token_id
        if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size:
            raise ValueError(f"pad_token_id must be an id in the vocabulary [0, {self.vocab_size}) (positions start "
                             f"after it), got {pad!r}")
        if isinstance(self.max_position_embeddings, bool) or not isinstance(self.max_position_embeddings, int) \
                or self.max_position_embeddings < pad + 2:
            raise ValueError(f"max_position_embeddings must be at least pad_token_id + 2 = {pad + 2} (positions "
                             f"start after the pad id), got {self.max_position_embeddings!r}")
        if self.hidden_act not in ACT2FN:  # a KeyError from transformers' table when the model was built
            raise ValueError(f"hidden_act must be one of transformers' activations ({', '.join(sorted(ACT2FN))}), "
                             f"got {self.hidden_act!r}")

    def _per_layer(self, name: str) -> list:
        value = getattr(self, name)
        if isinstance(value, (list, tuple)):
            if len(value) != self.num_hidden_layers:
                raise ValueError(
                    f"{name} has {len(value)} entries but num_hidden_layers is {self.num_hidden_layers}: "
                    "give one value per layer or a single integer"
                )
            return list(value)
        return [value] * self.num_hidden_layers

    @property
    def layer_windows(self) -> list[int]:
        """``attention_window`` as one even integer per layer."""
        return self._per_layer("attention_window")

    @property
    def layer_dilations(self) -> list[int]:
        """``attention_dilation`` as one integer per layer."""
        return self._per_layer("attention_dilation")

    @property
    def max_input_tokens(self) -> int:
        """The longest input, special tokens included: position ids start after ``pad_token_id`` (RoBERTa's
        convention, ``create_position_ids_from_input_ids`` in transformers), so ``pad_token_id + 1`` rows of the
        position table are never used. Every variant's config has this property; tools outside ``models/`` read it."""
        return self.max_position_embeddings - self.pad_token_id - 1


__all__ = ["LongctxLongformerConfig"]
