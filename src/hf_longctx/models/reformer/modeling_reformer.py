"""hf_longctx Reformer (Kitaev et al. 2020): LSH and local chunked attention, reversible residual layers, chunked
feed-forward, axial position embeddings, and a generation cache.

Read top to bottom: the modules (built from explicit arguments) and the reversible layer, then the Hugging Face glue
(the only code that reads the config) with one class per task head. Beside it: ``lsh_attention.py`` and
``local_attention.py`` (the attention ops; ``naive.py`` their dense twins), ``reversible.py`` (the reversible stack's
autograd Function) and ``generation_cache.py`` (the cache ``generate()`` fills).

Weight names equal transformers' ``ReformerModel`` ones (``reformer.encoder.layers.0.attention.self_attention
.query_key``, ...), so converting a transformers checkpoint copies its weights (``hf_longctx.conversion.reformer``).
Differences from transformers' implementation: any input length in training (axial positions cut to the length,
padding to chunk multiples inside the attention ops), padding that never reaches a real token's neighbourhood,
rotations and dropout from a private generator (the global RNG is never reseeded), gradients of the reversible
stack returned through autograd (``torch.autograd.grad`` works), automatic bucket counts that are never written
into the config, and a generation cache of keys and buckets.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
)

from .configuration_reformer import LongctxReformerConfig
from .generation_cache import ReformerGenerationCache
from .longctx_common import (
    check_class_labels,
    check_length,
    check_mask,
    check_range,
    check_token_inputs,
    check_token_labels,
    generate_left_padded_rows_alone,
    generate_within_length,
    has_padding_before_tokens,
    take_past_key_values,
)
from .local_attention import local_chunked_attention
from .flex import lsh_attention_flex
from .longctx_glue import LongctxModelMixin, trim_generate_mask
from .lsh_attention import (
    CounterStream,
    auto_num_buckets,
    lsh_attention,
    lsh_buckets,
    seeded_dropout,
)
from .private_rng import PrivateRandomness, _generator
from .reversible import _ReversibleStack


# --------------------------------------------------------------------------------------------------------------------
# Modules, built from explicit arguments
# --------------------------------------------------------------------------------------------------------------------


class AxialTables(nn.ParameterList):
    """The two axial position tables. A class of their own because transformers 5 calls ``_init_weights`` on the
    module that holds parameters directly, here this list, and never on :class:`AxialPositionEmbeddings` (which
    holds none, so remote code's init skips it as already done): the tables' init must match this class."""


class AxialPositionEmbeddings(nn.Module):
    """Axial positions (Reformer section 5 / trax): position ``p`` is ``[w0[p // s1], w1[p % s1]]``.

    Works for every length up to ``s0 * s1`` in training and eval. Training dropout drops whole columns, i.e. every
    position with the same ``p % s1`` (transformers' ``dropout2d`` over the broadcast table in
    ``AxialPositionEmbeddings.forward``), drawn from the given generator.
    """

    def __init__(self, shape, dims, dropout):
        super().__init__()
        self.shape = tuple(shape)
        self.dropout = dropout
        self.weights = AxialTables(
            [nn.Parameter(torch.ones(shape[0], 1, dims[0])), nn.Parameter(torch.ones(1, shape[1], dims[1]))]
        )

    def forward(self, position_ids: torch.Tensor, generator=None) -> torch.Tensor:  # (B, T) -> (B, T, C)
        rows, cols = position_ids // self.shape[1], position_ids % self.shape[1]
        emb = torch.cat([self.weights[0][rows, 0], self.weights[1][0, cols]], dim=-1)
        if self.training and self.dropout > 0:
            B = position_ids.shape[0]
            if isinstance(generator, CounterStream):  # in a compiled graph
                keep = generator.rand((B, self.shape[1]), emb.device) >= self.dropout
            else:
                keep = torch.rand((B, self.shape[1]), generator=generator, device=emb.device) >= self.dropout
            emb = emb * (keep.gather(1, cols).to(emb.dtype) / (1.0 - self.dropout))[..., None]
        return emb


class PositionEmbeddings(nn.Module):
    """A learned table of ``max_positions`` rows (``axial_pos_embds=False``)."""

    def __init__(self, max_positions, hidden_size, dropout):
        super().__init__()
        self.dropout = dropout
        self.embedding = nn.Embedding(max_positions, hidden_size)

    def forward(self, position_ids, generator=None):
        return seeded_dropout(self.embedding(position_ids), self.dropout if self.training else 0.0, generator)


class ReformerEmbeddings(nn.Module):
    """Word embeddings (dropout) + position embeddings, as transformers' (no LayerNorm)."""

    def __init__(self, vocab_size, hidden_size, dropout, axial_shape=None, axial_dims=None, max_positions=None):
        super().__init__()
        self.dropout = dropout
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
        if axial_shape is not None:
            self.position_embeddings = AxialPositionEmbeddings(axial_shape, axial_dims, dropout)
        else:
            self.position_embeddings = PositionEmbeddings(max_positions, hidden_size, dropout)

    def forward(self, input_ids, position_ids, inputs_embeds=None, generator=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        p = self.dropout if self.training else 0.0
        x = seeded_dropout(inputs_embeds, p, generator, scale=False)
        # the dropout's 1/(1-p) inside the addition (one pass fewer)
        return torch.add(self.position_embeddings(position_ids, generator).to(x.dtype), x, alpha=1.0 / (1.0 - p))


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:  # (B, T, H*D) -> (B, H, T, D)
    B, T, _ = x.shape
    return x.view(B, T, num_heads, -1).transpose(1, 2)


class LSHSelfAttention(nn.Module):
    """Shared query/key and value projections (no bias) + :func:`lsh_attention` (or, for
    ``attn_implementation="flex_attention"``, :func:`lsh_attention_flex`)."""

    attn_implementation = "sdpa"  # set by the model from config._attn_implementation

    def __init__(self, hidden_size, num_heads, head_dim, chunk_length, before, after, causal, dropout):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.chunk_length, self.before, self.after = chunk_length, before, after
        self.causal, self.dropout = causal, dropout
        self.query_key = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.value = nn.Linear(hidden_size, num_heads * head_dim, bias=False)

    def forward(self, x, real, rand, buckets=None, generator=None, layer_cache=None):
        """``x`` ``(B, T, C)``; ``rand`` holds ``rotations`` and ``num_buckets``; returns ``((B, T, H*D), buckets)``."""
        B, T, _ = x.shape
        qk, v = _heads(self.query_key(x), self.num_heads), _heads(self.value(x), self.num_heads)  # (B, H, T, D)
        if layer_cache is not None:
            return layer_cache.attend_lsh(qk, v, real, self.chunk_length, self.before), None
        if buckets is None:
            if T > self.chunk_length:
                buckets = lsh_buckets(qk, rand["rotations"], rand["num_buckets"])  # (B, H, R, T)
            else:  # one chunk: plain attention, no hashing (transformers' rule)
                buckets = torch.zeros(B, self.num_heads, 1, T, dtype=torch.long, device=x.device)
        attend = lsh_attention_flex if self.attn_implementation == "flex_attention" else lsh_attention
        out = attend(
            qk, v, buckets, self.chunk_length, self.before, self.after, causal=self.causal, attention_mask=real,
            dropout_p=self.dropout if self.training else 0.0, generator=generator,
        )
        return out.transpose(1, 2).reshape(B, T, -1), buckets


class LocalSelfAttention(nn.Module):
    """Query, key, value projections (no bias) + :func:`local_chunked_attention`."""

    def __init__(self, hidden_size, num_heads, head_dim, chunk_length, before, after, causal, dropout):
        super().__init__()
        self.num_heads = num_heads
        self.chunk_length, self.before, self.after = chunk_length, before, after
        self.causal, self.dropout = causal, dropout
        self.query = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.key = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.value = nn.Linear(hidden_size, num_heads * head_dim, bias=False)

    def forward(self, x, real, rand=None, buckets=None, generator=None, layer_cache=None):
        B, T, _ = x.shape
        q, k, v = (_heads(p(x), self.num_heads) for p in (self.query, self.key, self.value))  # (B, H, T, D)
        if layer_cache is not None:
            return layer_cache.attend_local(q, k, v, real, self.chunk_length, self.before), None
        out = local_chunked_attention(
            q, k, v, self.chunk_length, self.before, self.after, causal=self.causal, attention_mask=real,
            dropout_p=self.dropout if self.training else 0.0, generator=generator,
        )
        return out.transpose(1, 2).reshape(B, T, -1), None


def _scaled_linear(linear: nn.Linear, x: torch.Tensor, p: float) -> torch.Tensor:
    """``linear(x) / (1 - p)``, the scale of a dropout that follows, folded into the (small) weight and bias rather
    than applied to the (T-long) output: one pass over the output fewer."""
    if p == 0.0:
        return linear(x)
    s = 1.0 / (1.0 - p)
    return nn.functional.linear(x, linear.weight * s, None if linear.bias is None else linear.bias * s)


class ReformerSelfOutput(nn.Module):
    """dense -> dropout: the end of both sub-blocks (the attention one has no bias, the feed-forward one has)."""

    def __init__(self, in_size, hidden_size, dropout, bias=False):
        super().__init__()
        self.dropout = dropout
        self.dense = nn.Linear(in_size, hidden_size, bias=bias)

    def forward(self, x, generator=None):
        p = self.dropout if self.training else 0.0
        return seeded_dropout(_scaled_linear(self.dense, x, p), p, generator, scale=False)


class ReformerAttention(nn.Module):
    """Pre-LayerNorm attention sub-block ``f`` of a reversible layer: ``f(x) = Dropout(W_o Attn(LN x))``."""

    def __init__(self, kind, hidden_size, num_heads, head_dim, chunk_length, before, after, causal, attn_dropout,
                 hidden_dropout, eps):
        super().__init__()
        self.kind = kind
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        attention = LSHSelfAttention if kind == "lsh" else LocalSelfAttention
        self.self_attention = attention(hidden_size, num_heads, head_dim, chunk_length, before, after, causal,
                                        attn_dropout)
        self.output = ReformerSelfOutput(num_heads * head_dim, hidden_size, hidden_dropout)

    def forward(self, x, real, rand, buckets=None, generator=None, layer_cache=None):
        out, buckets = self.self_attention(self.layer_norm(x), real, rand, buckets, generator, layer_cache)
        return self.output(out, generator), buckets


class ReformerFeedForwardDense(nn.Module):
    def __init__(self, hidden_size, ff_size, act, dropout):
        super().__init__()
        self.dropout = dropout
        self.dense = nn.Linear(hidden_size, ff_size)
        self.act_fn = ACT2FN[act]
        self.relu = act == "relu"

    def forward(self, x, generator=None):
        # transformers applies the dropout before the activation (its ``ReformerFeedForwardDense.forward``)
        p = self.dropout if self.training else 0.0
        h = seeded_dropout(_scaled_linear(self.dense, x, p), p, generator, scale=False)
        return h.relu_() if self.relu else self.act_fn(h)  # in place: the masked copy is ours


class ReformerFeedForward(nn.Module):
    """Feed-forward sub-block ``g`` of a reversible layer, over ``chunk_size`` positions at a time (section 3)."""

    def __init__(self, hidden_size, ff_size, act, dropout, eps, chunk_size):
        super().__init__()
        self.chunk_size = chunk_size
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dense = ReformerFeedForwardDense(hidden_size, ff_size, act, dropout)
        self.output = ReformerSelfOutput(ff_size, hidden_size, dropout, bias=True)

    def forward(self, x, generator=None):
        def block(part):
            return self.output(self.dense(self.layer_norm(part), generator), generator)

        if not self.chunk_size or x.shape[1] <= self.chunk_size:
            return block(x)
        return torch.cat([block(part) for part in x.split(self.chunk_size, dim=1)], dim=1)


class ReformerLayer(GradientCheckpointingLayer):
    """Reversible residual layer (RevNet, Reformer section 3): ``y1 = x1 + f(x2)``, ``y2 = x2 + g(y1)``.

    ``seeds`` are the two dropout seeds of this layer in this forward (``None`` in eval), so that a recomputation
    draws the same dropout masks.
    """

    def __init__(self, kind, hidden_size, num_heads, head_dim, chunk_length, before, after, causal, attn_dropout,
                 hidden_dropout, eps, ff_size, act, ff_chunk):
        super().__init__()
        self.attention = ReformerAttention(kind, hidden_size, num_heads, head_dim, chunk_length, before, after,
                                           causal, attn_dropout, hidden_dropout, eps)
        self.feed_forward = ReformerFeedForward(hidden_size, ff_size, act, hidden_dropout, eps, ff_chunk)

    def attention_block(self, x2, real, rand, seeds, buckets=None, layer_cache=None):
        generator = _generator(None if seeds is None else seeds[0], x2.device)
        return self.attention(x2, real, rand, buckets, generator, layer_cache)

    def feed_forward_block(self, y1, seeds):
        return self.feed_forward(y1, _generator(None if seeds is None else seeds[1], y1.device))

    def forward(self, x1, x2, real, rand, seeds=None, cache=None):
        layer_cache = None if cache is None else cache.layer(self.layer_idx)
        attn, _ = self.attention_block(x2, real, rand, seeds, layer_cache=layer_cache)
        y1 = x1 + attn
        return y1, x2 + self.feed_forward_block(y1, seeds)


# --------------------------------------------------------------------------------------------------------------------
# Hugging Face glue: the config is read here and only here
# --------------------------------------------------------------------------------------------------------------------

# Every head, so a saved folder loads with any Auto class through remote code (see save_pretrained below).
AUTO_MAP = {
    "AutoConfig": "configuration_reformer.LongctxReformerConfig",
    "AutoModel": "modeling_reformer.LongctxReformerModel",
    "AutoModelForCausalLM": "modeling_reformer.LongctxReformerForCausalLM",
    "AutoModelForMaskedLM": "modeling_reformer.LongctxReformerForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_reformer.LongctxReformerForSequenceClassification",
    "AutoModelForQuestionAnswering": "modeling_reformer.LongctxReformerForQuestionAnswering",
}


class LongctxReformerPreTrainedModel(LongctxModelMixin, PreTrainedModel):
    attn_implementations = {
        "sdpa": "sorted, chunked LSH and local attention, on PyTorch's fused attention kernel where it applies (one "
                "hash round, no dropout); its dense twin loops in Python and serves the tests only",
        "flex_attention": "LSH layers through PyTorch's FlexAttention, the sorted chunks as its block mask (flex.py; "
                          "local layers keep their op): the GPU path; on the CPU inference with one hash round only, "
                          "and no LSH attention dropout",
    }
    config_class = LongctxReformerConfig
    auto_map_heads = AUTO_MAP
    config: LongctxReformerConfig
    base_model_prefix = "reformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ReformerLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, AxialTables):  # std ~1 as transformers' Reformer (axial_norm_std)
            for weight in module:
                init.normal_(weight, std=self.config.axial_norm_std)


class LongctxReformerModel(PrivateRandomness, LongctxReformerPreTrainedModel):
    """Embeddings, the reversible layers and the final LayerNorm over both streams (``2 * hidden_size`` wide)."""

    def __init__(self, config: LongctxReformerConfig):
        super().__init__(config)
        config.check_fields()
        c = config
        self.embeddings = ReformerEmbeddings(
            c.vocab_size, c.hidden_size, c.hidden_dropout_prob,
            axial_shape=c.axial_pos_shape if c.axial_pos_embds else None, axial_dims=c.axial_pos_embds_dim,
            max_positions=c.max_position_embeddings,
        )
        self.encoder = nn.Module()
        layers = []
        for kind in c.attn_layers:
            lsh = kind == "lsh"
            layers.append(ReformerLayer(
                kind, c.hidden_size, c.num_attention_heads, c.attention_head_size,
                c.lsh_attn_chunk_length if lsh else c.local_attn_chunk_length,
                c.lsh_num_chunks_before if lsh else c.local_num_chunks_before,
                c.lsh_num_chunks_after if lsh else c.local_num_chunks_after,
                c.is_decoder,
                c.lsh_attention_probs_dropout_prob if lsh else c.local_attention_probs_dropout_prob,
                c.hidden_dropout_prob, c.layer_norm_eps, c.feed_forward_size, c.hidden_act, c.chunk_size_feed_forward,
            ))
        self.encoder.layers = nn.ModuleList(layers)
        for i, layer in enumerate(self.encoder.layers):
            layer.layer_idx = i
        self.encoder.layer_norm = nn.LayerNorm(2 * c.hidden_size, eps=c.layer_norm_eps)
        self._train_rng: torch.Generator | None = None  # private: training rotations and dropout seeds
        self._eval_rotations: dict = {}  # eval rotations per (seed, shape, dtype, device), drawn once
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _num_buckets(self, T: int):
        """The configured bucket count, or transformers' automatic one for this call's length (as transformers
        computes it: after padding to the chunk lengths' LCM). Never written into the config."""
        c = self.config
        if c.num_buckets is not None or "lsh" not in c.attn_layers:  # (no LSH layer: no buckets)
            return c.num_buckets
        lcm = c.chunk_lcm
        shortest = min(getattr(c, f"{kind}_attn_chunk_length") for kind in set(c.attn_layers))
        padded = -(-T // lcm) * lcm if T > shortest else T
        return auto_num_buckets(padded, c.lsh_attn_chunk_length, c.max_position_embeddings)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        num_hashes: int | None = None,
        past_buckets_states: ReformerGenerationCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        cache: ReformerGenerationCache | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        r"""
        num_hashes (`int`): LSH rounds for this call (default ``config.num_hashes``).
        cache (`ReformerGenerationCache`): causal models only, the state of a previous call (see `generate`);
            ``past_buckets_states`` (transformers' name, at its position) is the same argument.

        ``last_hidden_state`` is ``2 * hidden_size`` wide (both reversible streams, after the final LayerNorm);
        ``hidden_states`` are the second stream before every layer and after the last, as transformers returns.

        Long on purpose: the input checks transformers' model makes, then one pass, read top to bottom.
        """
        cache = take_past_key_values(kwargs, cache)
        cache = cache if cache is not None else past_buckets_states
        c = self.config
        built = [layer.attention.kind for layer in self.encoder.layers]
        if list(c.attn_layers) != built:  # a KeyError or a silent mismatch deep inside otherwise
            raise ValueError(f"config.attn_layers is {c.attn_layers} but this model was built with {built}: layers "
                             "cannot change after the model is built; build a new model from the changed config")
        self._refuse_output_attentions(output_attentions, "LSH attention never materialises a (T x T) attention "
                                       "matrix. Use hf_longctx.models.reformer.naive.naive_lsh_attention to inspect one.")
        output_hidden_states = output_hidden_states if output_hidden_states is not None else c.output_hidden_states
        return_dict = self._return_dict(return_dict)
        B, T = check_token_inputs(input_ids, inputs_embeds, c.vocab_size)
        if inputs_embeds is not None and inputs_embeds.shape[-1] != c.hidden_size:
            raise ValueError(f"inputs_embeds must be {c.hidden_size} wide (hidden_size), got {inputs_embeds.shape[-1]}")
        if T == 0:
            raise ValueError("the input is empty (sequence length 0)")
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        attention_mask = trim_generate_mask(attention_mask, cache, T)
        real = check_mask("attention_mask", attention_mask, (B, T))
        num_hashes = c.num_hashes if num_hashes is None else num_hashes
        if isinstance(num_hashes, bool) or not isinstance(num_hashes, int) or num_hashes < 1:
            raise ValueError(f"num_hashes must be an integer >= 1, got {num_hashes!r}")
        if cache is not None or use_cache:
            self._check_cache_use(real)
        position_ids = self._position_ids(real, position_ids, cache, B, T, device)

        dtype = self.embeddings.word_embeddings.weight.dtype
        rands, seeds, outer_seeds = self._randomness(T, num_hashes, dtype, device)
        if use_cache and cache is None:
            nb = c.num_buckets if c.num_buckets is not None or "lsh" not in c.attn_layers else auto_num_buckets(
                c.max_input_tokens, c.lsh_attn_chunk_length, c.max_position_embeddings)
            rotations = self._rotations(num_hashes, nb, dtype, device) if "lsh" in c.attn_layers else None
            cache = ReformerGenerationCache(len(c.attn_layers), rotations, nb)

        x = self.embeddings(input_ids, position_ids, inputs_embeds,
                            _generator(None if outer_seeds is None else outer_seeds[0], device))
        hidden_states = [] if output_hidden_states else None
        layers = list(self.encoder.layers)
        if cache is not None:
            cache.begin_step(T, device)
            if real is None:
                real = torch.ones(B, T, dtype=torch.bool, device=device)
        # The reversible stack recomputes layers inside its backward (torch.autograd.grad), which a compiled graph
        # cannot hold: compiled training runs the layers as ordinary autograd, one graph, activation memory growing
        # with depth (the same gradients, to rounding).
        if c.reversible and torch.is_grad_enabled() and cache is None and not torch.compiler.is_compiling():
            params = [p for layer in layers for p in layer.parameters() if p.requires_grad]
            inputs = [{"real": real, "rand": r, "seeds": s, "buckets": None} for r, s in zip(rands, seeds)]
            x1, x2 = _ReversibleStack.apply(x, x, layers, inputs, hidden_states, *params)
        else:
            x1 = x2 = x
            for layer, rand, s in zip(layers, rands, seeds):
                if hidden_states is not None:
                    hidden_states.append(x2)
                x1, x2 = layer(x1, x2, real, rand, s, cache=cache)
        if hidden_states is not None:
            hidden_states.append(x2)
        if cache is not None:
            cache.end_step(real)
        out = self._final_norm(x1, x2, _generator(None if outer_seeds is None else outer_seeds[1], device))
        result = BaseModelOutput(last_hidden_state=out,
                                 hidden_states=tuple(hidden_states) if hidden_states is not None else None)
        if cache is not None:
            result["cache"] = cache
        return result if return_dict else result.to_tuple()

    def _check_cache_use(self, real: torch.Tensor | None) -> None:
        if not self.config.is_decoder:
            raise ValueError("cache is only used by causal models (config.is_decoder=True)")
        if self.training:
            raise ValueError("a generation cache is for inference: call model.eval() first")
        if has_padding_before_tokens(real):  # the cache's local chunks count columns
            raise ValueError("a generation cache takes right padding only (a row has padding before its "
                             "tokens); generate() runs left-padded prompts one row at a time")

    def _position_ids(self, real, position_ids, cache, B: int, T: int, device) -> torch.Tensor:
        """The positions of this call's tokens ``(B, T)``, after the cache's, checked against the model's length.

        A token's position counts the real tokens before it, so a left-padded row reads as it does alone
        (transformers' Reformer counts columns: its padding takes positions)."""
        c = self.config
        past = cache.seen if cache is not None else 0
        past_real = cache.real_seen if cache is not None else None  # (B,) or None
        if real is not None and position_ids is None:
            longest = (real.sum(-1) + (past if past_real is None else past_real)).max()
        else:
            longest = past + T if past_real is None else past_real.max() + T
        check_length(longest, c.max_input_tokens, c.input_limit_name)
        if position_ids is None:
            if real is None:
                position_ids = torch.arange(T, device=device)[None].expand(B, T)
            else:  # padding before a row's first token gets 0, after a real token that token's position
                position_ids = (real.long().cumsum(-1) - 1).clamp(min=0)
            return position_ids + (past if past_real is None else past_real[:, None])
        if tuple(position_ids.shape) != (B, T):
            raise ValueError(f"position_ids must have shape {(B, T)}, got {tuple(position_ids.shape)}")
        check_range("position_ids", position_ids, 0, c.max_input_tokens, c.input_limit_name)
        return position_ids

    def _final_norm(self, x1, x2, generator) -> torch.Tensor:
        """LayerNorm over both streams ``(B, T, 2C)``, then the hidden dropout."""
        p = self.config.hidden_dropout_prob if self.training else 0.0
        norm = self.encoder.layer_norm
        if p > 0:  # the dropout's 1/(1-p) folded into the norm's affine weights: one pass over (B, T, 2C) fewer
            s = 1.0 / (1.0 - p)
            out = nn.functional.layer_norm(torch.cat([x1, x2], dim=-1), norm.normalized_shape, norm.weight * s,
                                           norm.bias * s, norm.eps)
        else:
            out = norm(torch.cat([x1, x2], dim=-1))  # (B, T, 2C)
        return seeded_dropout(out, p, generator, scale=False)


class ReformerOnlyLMHead(nn.Module):
    """The vocabulary projection of both streams (``2 * hidden_size``), as transformers' ``lm_head.decoder``."""

    def __init__(self, in_size, vocab_size):
        super().__init__()
        self.decoder = nn.Linear(in_size, vocab_size)

    def forward(self, x):
        return self.decoder(x)


class ReformerClassificationHead(nn.Module):
    """First real token (``first`` ``(B,)``: its column in each row; default 0): dropout -> dense (2C -> C) ->
    tanh -> dropout -> out_proj. The dropouts draw from ``generator`` (the model's private RNG): an ``nn.Dropout``
    here advanced the global RNG, which the config promises not to."""

    def __init__(self, in_size, hidden_size, num_labels, dropout):
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.dropout = dropout
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden_states, generator=None, first=None):
        p = self.dropout if self.training else 0.0
        if first is None:
            x = hidden_states[:, 0]
        else:  # a gather, not indexing by arange(len(first)): a graph keeps the batch size dynamic
            x = hidden_states.gather(1, first[:, None, None].expand(-1, 1, hidden_states.shape[-1]))[:, 0]
        x = seeded_dropout(x, p, generator)
        return self.out_proj(seeded_dropout(torch.tanh(self.dense(x)), p, generator))


class LongctxReformerForCausalLM(LongctxReformerPreTrainedModel, GenerationMixin):
    """Causal LM (transformers' ``ReformerModelWithLMHead``); ``generate()`` keeps a :class:`ReformerGenerationCache`."""

    _is_stateful = True  # our own cache object: no assisted decoding / cache cropping

    def __init__(self, config):
        if not config.is_decoder:
            raise ValueError("LongctxReformerForCausalLM needs a causal config: set is_decoder=True")
        super().__init__(config)
        self.reformer = LongctxReformerModel(config)
        self.lm_head = ReformerOnlyLMHead(2 * config.hidden_size, config.vocab_size)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate() must not build a DynamicCache: the model creates its own on the first call

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        return None  # the model numbers positions itself, over real tokens (the attention mask and the cache)

    def generate(self, *args, **kwargs):
        """``GenerationMixin.generate``, stopped (with a warning) at the model's length instead of failing past the
        position table; a left-padded batch of prompts is generated row by row, each on its own tokens, since the
        cache's local chunks count columns (one call per row; see ``generate_left_padded_rows_alone``)."""
        c = self.config
        def within_length(*a, **k):
            return generate_within_length(super(LongctxReformerForCausalLM, self).generate, c.max_input_tokens,
                                          c.input_limit_name, a, k)

        return generate_left_padded_rows_alone(within_length, self.generation_config, args, kwargs)

    # Arguments in the order of transformers' ReformerModelWithLMHead.forward, so positional calls bind alike.
    def forward(self, input_ids=None, position_ids=None, attention_mask=None, inputs_embeds=None, num_hashes=None,
                past_buckets_states=None, use_cache=None, output_hidden_states=None, output_attentions=None,
                return_dict=None, labels=None, logits_to_keep: int = 0, cache=None, **kwargs):
        cache = take_past_key_values(kwargs, cache)
        cache = cache if cache is not None else past_buckets_states
        out = self.reformer(
            input_ids, attention_mask, position_ids, inputs_embeds, num_hashes, use_cache=use_cache, cache=cache,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions, return_dict=True,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            # num_items_in_batch arrives through kwargs, so gradient accumulation averages over all tokens.
            check_token_labels(labels, tuple(out.last_hidden_state.shape[:2]), self.config.vocab_size)
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        result = CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=out.get("cache") if use_cache else None, hidden_states=out.hidden_states
        )
        return self._output(result, return_dict)


class LongctxReformerForMaskedLM(LongctxReformerPreTrainedModel):
    def __init__(self, config):
        if config.is_decoder:
            raise ValueError("LongctxReformerForMaskedLM needs bidirectional attention: set is_decoder=False")
        super().__init__(config)
        self.reformer = LongctxReformerModel(config)
        self.lm_head = ReformerOnlyLMHead(2 * config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    def forward(self, input_ids=None, position_ids=None, attention_mask=None, inputs_embeds=None, num_hashes=None,
                labels=None, output_hidden_states=None, output_attentions=None, return_dict=None, **kwargs):
        take_past_key_values(kwargs, accepted=False, model=type(self).__name__)
        out = self.reformer(input_ids, attention_mask, position_ids, inputs_embeds, num_hashes,
                            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                            return_dict=True)
        logits = self.lm_head(out.last_hidden_state)
        loss = None
        if labels is not None:
            check_token_labels(labels, tuple(logits.shape[:2]), self.config.vocab_size)
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return self._output(MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states), return_dict)


class LongctxReformerForSequenceClassification(LongctxReformerPreTrainedModel):
    """Classifier on the first token's ``2 * hidden_size`` output."""

    accepts_loss_kwargs = False  # the loss is a per-example mean; Trainer then scales it for accumulation

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.reformer = LongctxReformerModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.classifier = ReformerClassificationHead(2 * config.hidden_size, config.hidden_size, config.num_labels,
                                                     dropout)
        self.post_init()

    def forward(self, input_ids=None, position_ids=None, attention_mask=None, inputs_embeds=None, num_hashes=None,
                labels=None, output_hidden_states=None, output_attentions=None, return_dict=None, **kwargs):
        take_past_key_values(kwargs, accepted=False, model=type(self).__name__)
        out = self.reformer(input_ids, attention_mask, position_ids, inputs_embeds, num_hashes,
                            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                            return_dict=True)
        # The first real token: transformers' reads column 0, a padding token in a left-padded row.
        first = attention_mask.int().argmax(-1) if isinstance(attention_mask, torch.Tensor) else None
        logits = self.classifier(out.last_hidden_state, self.reformer.private_generator(out.last_hidden_state.device),
                                 first)
        if self.config.num_labels > 1:  # one label is regression
            check_class_labels(labels, self.config.num_labels)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return self._output(result, return_dict)


class LongctxReformerForQuestionAnswering(LongctxReformerPreTrainedModel):
    accepts_loss_kwargs = False

    def __init__(self, config):
        if config.num_labels != 2:
            raise ValueError(f"question answering predicts a start and an end: num_labels must be 2, got {config.num_labels}")
        super().__init__(config)
        self.num_labels = config.num_labels
        self.reformer = LongctxReformerModel(config)
        self.qa_outputs = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, position_ids=None, attention_mask=None, inputs_embeds=None, num_hashes=None,
                start_positions=None, end_positions=None, output_hidden_states=None, output_attentions=None,
                return_dict=None, **kwargs):
        take_past_key_values(kwargs, accepted=False, model=type(self).__name__)
        out = self.reformer(input_ids, attention_mask, position_ids, inputs_embeds, num_hashes,
                            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                            return_dict=True)
        start_logits, end_logits = self.qa_outputs(out.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions)
        result = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                              hidden_states=out.hidden_states)
        return self._output(result, return_dict)


__all__ = [
    "LongctxReformerPreTrainedModel",
    "LongctxReformerModel",
    "LongctxReformerForCausalLM",
    "LongctxReformerForMaskedLM",
    "LongctxReformerForSequenceClassification",
    "LongctxReformerForQuestionAnswering",
    "ReformerGenerationCache",
]
