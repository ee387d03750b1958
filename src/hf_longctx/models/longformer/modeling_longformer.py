"""hf_longctx Longformer: RoBERTa with sliding-window + global attention (Beltagy et al. 2020), and a causal
sliding-window decoder with attention sinks and a bounded generation cache.

Read top to bottom: the modules (built from explicit arguments), then the cache for generation, then the
Hugging Face glue (the only code that reads the config) with one class per task head.

Weight names equal transformers' ``LongformerModel`` ones (``longformer.encoder.layer.0.attention.self.query``,
...), so converting a transformers checkpoint only rewrites its config (``hf_longctx.convert``).
Differences from transformers' implementation: no padding to a multiple of the window, per-layer windows of
different sizes, dilation, memory O(T * window) (no dense ``T x T`` mask), a causal variant with ``generate()``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .configuration_longformer import LongctxLongformerConfig
from .longctx_common import (
    check_class_labels,
    check_length,
    check_mask,
    check_range,
    check_token_inputs,
    generate_within_length,
    take_past_key_values,
)
from .counter_dropout import _draw_seed, counter_dropout, counter_dropout_graph
from .longctx_glue import LongctxCache, LongctxModelMixin, trim_generate_mask
from .banded_graph import longformer_attention_graph
from .flex import longformer_attention_flex
from .naive import naive_longformer_attention
from .scores import _MASKED_SCORE, _softmax_dtype
from .sliding_window_attention import global_token_index, longformer_attention

# --------------------------------------------------------------------------------------------------------------------
# Modules, built from explicit arguments
# --------------------------------------------------------------------------------------------------------------------


def roberta_position_ids(real: torch.Tensor, padding_idx: int, offset: torch.Tensor | None = None) -> torch.Tensor:
    """RoBERTa positions: real tokens count up from ``padding_idx + 1``, padding sits at ``padding_idx``.

    ``offset`` ``(B,)`` adds the real tokens already seen (cached generation).
    """
    real = real.long()
    ranks = torch.cumsum(real, dim=1)
    if offset is not None:
        ranks = ranks + offset[:, None]
    return ranks * real + padding_idx


class HiddenDropout(nn.Dropout):
    """``nn.Dropout`` with the counter-based mask of :func:`counter_dropout` (about 10x cheaper than PyTorch's
    ``bernoulli_`` on CPU, nothing saved for the backward). A subclass, so code that finds or sets dropouts by
    ``isinstance(m, nn.Dropout)`` and ``m.p`` still does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.p > 0):
            return x
        # In a compiled graph: the same mask in int64 tensor ops, its seed drawn in the graph (no graph break).
        return counter_dropout_graph(x, self.p) if torch.compiler.is_compiling() else counter_dropout(x, self.p)


class LongformerEmbeddings(nn.Module):
    """Word + learned absolute position + token type embeddings, LayerNorm, dropout (RoBERTa)."""

    def __init__(self, vocab_size, hidden_size, max_positions, type_vocab_size, pad_token_id, eps, dropout):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_positions, hidden_size, padding_idx=pad_token_id)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = HiddenDropout(dropout)

    def forward(self, input_ids, position_ids, token_type_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(position_ids)
        x = inputs_embeds + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


def _dense_attention(q, k, v, *, dropout_p=0.0, **kwargs):
    """:func:`naive_longformer_attention` behind the fast op's signature (dropout: the fast op's counter-based
    mask, from a seed drawn from torch's RNG)."""
    seed = _draw_seed() if dropout_p > 0.0 else None
    return naive_longformer_attention(q, k, v, dropout_p=dropout_p, dropout_seed=seed, **kwargs)


def _graph_attention(q, k, v, *, dilation=1, **kwargs):
    """:func:`longformer_attention_graph` behind the fast op's signature (chosen only without dilation)."""
    return longformer_attention_graph(q, k, v, **kwargs)


class LongformerSelfAttention(nn.Module):
    """Projections + :func:`longformer_attention`. Bidirectional layers also own the global projections."""

    attn_implementation = "sdpa"  # the model sets it from config._attn_implementation ("eager": the dense twin)

    def __init__(self, hidden_size, num_heads, window, dilation, causal, dropout):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.causal = causal
        self.dilation = dilation
        self.dropout = dropout
        # Causal layers see the previous `window` tokens, bidirectional ones window/2 on each side: the same cost.
        self.left, self.right = (window, 0) if causal else (window // 2, window // 2)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        if not causal:
            self.query_global = nn.Linear(hidden_size, hidden_size)
            self.key_global = nn.Linear(hidden_size, hidden_size)
            self.value_global = nn.Linear(hidden_size, hidden_size)

    def _attention_op(self, dropout_p: float, global_mask, global_index):
        """The op that computes the same attention best here: the fast op eagerly; in a graph (compiled, exported),
        the static-shape op of ``banded_graph.py`` over the global tokens the model indexed once (an exported
        graph holds their count as a data-dependent size; a compiled one breaks once to read it, since Inductor
        cannot yet generate code for such a size), with the same counter-based dropout; FlexAttention for
        ``attn_implementation="flex_attention"``; the dense twin for ``attn_implementation="eager"`` and under
        ``torch.jit.trace``, which cannot record the fast op's custom autograd kernels at every length (short
        inputs failed with "unordered_map::at")."""
        if self.attn_implementation == "eager" or (dropout_p == 0.0 and torch.jit.is_tracing()):
            return _dense_attention
        if self.attn_implementation == "flex_attention":
            return longformer_attention_flex
        if self.dilation == 1 and torch.compiler.is_compiling() and (
            global_mask is None or global_index is not None
        ):
            return functools.partial(_graph_attention, global_index=global_index)
        return longformer_attention

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, nh, T, hs)
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states, attention_mask, global_mask, global_index=None, layer_cache=None):
        """``hidden_states`` ``(B, T, C)``; masks ``(B, T)`` bool; returns ``(B, T, C)``."""
        B, T, C = hidden_states.shape
        # One GEMM for q, k, v and, when there are global tokens, the global keys and values of every token (the
        # weights stay separate parameters, as in transformers' checkpoints).
        with_global = global_index is not None and not self.causal and layer_cache is None
        projections = [self.query, self.key, self.value] + ([self.key_global, self.value_global] if with_global else [])
        # q is pre-scaled by 1/sqrt(hs), as transformers does, so the ops take scale 1; folding the scale into the
        # (C, C) weight saves a pass over (B, T, C) forward and backward.
        scale = 1.0 / math.sqrt(self.head_dim)
        fused = F.linear(
            hidden_states,
            torch.cat([self.query.weight * scale] + [p.weight for p in projections[1:]]),
            torch.cat([self.query.bias * scale] + [p.bias for p in projections[1:]]),
        )
        q, k, v, *kv_global = (self._heads(x) for x in fused.split(C, dim=-1))  # (B, nh, T, hs) each
        dropout_p = self.dropout if self.training else 0.0

        attend = self._attention_op(dropout_p, global_mask, global_index)
        if layer_cache is not None:
            out = layer_cache.attend(q, k, v, self.left, self.dilation)
        elif self.causal or global_index is None:
            out = attend(
                q, k, v, left=self.left, right=self.right, attention_mask=attention_mask, global_mask=global_mask,
                causal=self.causal, dilation=self.dilation, dropout_p=dropout_p,
            )
            if not self.causal and self.training and torch.is_grad_enabled():
                # Without global tokens the global projections take no part in the loss, and DDP without
                # find_unused_parameters stops at the next step ("Expected to have finished reduction"): a
                # zero-weighted touch gives them a zero gradient for the price of three scalar reads.
                touch = sum(p.weight[0, 0] + p.bias[0] for p in (self.query_global, self.key_global, self.value_global))
                out = out + 0.0 * touch
        else:
            index, valid = global_index
            g_hidden = hidden_states.gather(1, index[:, :, None].expand(B, index.shape[1], C))  # (B, G, C)
            q_global = self._heads(self.query_global(g_hidden)) * scale
            k_global, v_global = kv_global
            out = attend(
                q, k, v, left=self.left, right=self.right, attention_mask=attention_mask, global_mask=global_mask,
                q_global=q_global, k_global=k_global, v_global=v_global, dilation=self.dilation, dropout_p=dropout_p,
            )
        return out.transpose(1, 2).reshape(B, T, C)  # (B, T, C)


class LongformerResidualOutput(nn.Module):
    """dense -> dropout -> add the residual -> LayerNorm: the end of both sub-blocks (post-LN, as BERT).

    Named ``attention.output`` and ``output`` inside a layer, as in transformers' checkpoints.
    """

    def __init__(self, in_size, hidden_size, eps, dropout):
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = HiddenDropout(dropout)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class LongformerAttention(nn.Module):
    def __init__(self, hidden_size, num_heads, window, dilation, causal, attn_dropout, hidden_dropout, eps):
        super().__init__()
        self.self = LongformerSelfAttention(hidden_size, num_heads, window, dilation, causal, attn_dropout)
        self.output = LongformerResidualOutput(hidden_size, hidden_size, eps, hidden_dropout)

    def forward(self, hidden_states, attention_mask, global_mask, global_index=None, layer_cache=None):
        return self.output(self.self(hidden_states, attention_mask, global_mask, global_index, layer_cache), hidden_states)


class LongformerIntermediate(nn.Module):
    def __init__(self, hidden_size, intermediate_size, act):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = ACT2FN[act]

    def forward(self, x):
        return self.intermediate_act_fn(self.dense(x))


class LongformerLayer(GradientCheckpointingLayer):
    """Post-LayerNorm transformer block (BERT/RoBERTa order) with Longformer attention."""

    def __init__(self, hidden_size, num_heads, intermediate_size, act, window, dilation, causal, attn_dropout,
                 hidden_dropout, eps):
        super().__init__()
        self.attention = LongformerAttention(
            hidden_size, num_heads, window, dilation, causal, attn_dropout, hidden_dropout, eps
        )
        self.intermediate = LongformerIntermediate(hidden_size, intermediate_size, act)
        self.output = LongformerResidualOutput(intermediate_size, hidden_size, eps, hidden_dropout)

    def forward(self, hidden_states, attention_mask, global_mask, global_index=None, cache=None):
        layer_cache = None if cache is None else cache.layer(self.layer_idx)
        x = self.attention(hidden_states, attention_mask, global_mask, global_index, layer_cache)
        return self.output(self.intermediate(x), x)


class LongformerPooler(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


class LongformerLMHead(nn.Module):
    """dense -> gelu -> LayerNorm -> decoder (tied to the word embeddings), as RoBERTa's."""

    def __init__(self, hidden_size, vocab_size, eps):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x):
        return self.decoder(self.layer_norm(F.gelu(self.dense(x))))


class LongformerClassificationHead(nn.Module):
    """Sentence-level head on the first token: dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, hidden_size, num_labels, dropout):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = HiddenDropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden_states, first=None):
        """``first`` ``(B,)``: the column of each row's first real token (default 0: no left padding)."""
        x = hidden_states[:, 0] if first is None else hidden_states[torch.arange(len(first)), first]
        x = self.dropout(x)
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


# --------------------------------------------------------------------------------------------------------------------
# Generation cache of the causal model: sink tokens + the last window, per layer
# --------------------------------------------------------------------------------------------------------------------


class LongformerSinkWindowCache(LongctxCache):
    """Keys and values a causal Longformer still needs: its global sinks and the last ``window`` positions.

    Columns are shared by the batch (row ``b``, column ``s`` is the token at input column ``s``); each layer
    keeps a column while any row may still attend to it, so the size stays bounded by
    ``window * dilation + sink columns`` however long generation runs. ``generate()`` passes the object back
    through the ``cache`` argument; beam search calls :meth:`reorder_cache`.
    """

    def __init__(self, num_layers: int):
        self.layers: list[dict | None] = [None] * num_layers
        self.seen = 0  # input columns processed so far, padding included
        self.real_count: torch.Tensor | None = None  # (B,) real tokens seen per row
        self.step: dict | None = None  # masks of the chunk being processed, set by begin_step()

    def stored_length(self) -> int:
        """Columns held by the largest layer (what bounds memory)."""
        return max((s["k"].shape[2] for s in self.layers if s is not None), default=0)

    def begin_step(self, real: torch.Tensor, sink: torch.Tensor) -> None:
        B, T = real.shape
        if self.real_count is None:
            self.real_count = torch.zeros(B, dtype=torch.long, device=real.device)
        slots = torch.arange(self.seen, self.seen + T, device=real.device)
        self.step = {"real": real, "sink": sink, "slots": slots}

    def end_step(self) -> None:
        self.real_count = self.real_count + self.step["real"].sum(dim=1)
        self.seen += self.step["slots"].numel()
        self.step = None

    def layer(self, idx: int) -> "_LayerCacheView":
        return _LayerCacheView(self, idx)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for state in self.layers:
            if state is not None:
                for name in ("k", "v", "real", "sink"):
                    state[name] = state[name].index_select(0, beam_idx.to(state[name].device))
        if self.real_count is not None:
            self.real_count = self.real_count.index_select(0, beam_idx.to(self.real_count.device))


class _LayerCacheView:
    def __init__(self, cache: LongformerSinkWindowCache, idx: int):
        self.cache, self.idx = cache, idx

    def attend(self, q, k, v, left: int, dilation: int) -> torch.Tensor:
        """Attention of the new chunk over cached + new keys, then keep only what later tokens can reach."""
        step, state = self.cache.step, self.cache.layers[self.idx]
        real, sink, slots = step["real"], step["sink"], step["slots"]
        if state is None:  # prefill: the whole prompt through the fast banded op
            out = longformer_attention(
                q, k, v, left=left, right=0, attention_mask=real, global_mask=sink, causal=True, dilation=dilation
            )
            keys = {"k": k, "v": v, "slot": slots, "real": real, "sink": sink}
        else:  # decode: a dense pass over the few kept columns
            keys = {name: torch.cat([state[name], new], dim=-1 if name in ("slot", "real", "sink") else 2)
                    for name, new in (("k", k), ("v", v), ("slot", slots), ("real", real), ("sink", sink))}
            offset = slots[:, None] - keys["slot"][None, :]  # (T, S): query column - key column
            band = (offset >= 0) & (offset <= left * dilation) & (offset % dilation == 0)
            key_sink = keys["sink"][:, None, :]  # (B, 1, S)
            allowed = keys["real"][:, None, :] & ((band[None] & ~key_sink) | (key_sink & (offset >= 0)[None]))
            scores = _softmax_dtype(q @ keys["k"].transpose(-1, -2)).masked_fill(~allowed[:, None], _MASKED_SCORE)
            out = torch.softmax(scores, dim=-1).to(v.dtype) @ keys["v"]
            out = out * real[:, None, :, None].to(out.dtype)
        # The next query sits at column slots[-1] + 1: it reaches sinks and columns within left * dilation.
        keep = keys["sink"].any(dim=0) | (keys["slot"] > slots[-1] - left * dilation)
        self.cache.layers[self.idx] = {
            "k": keys["k"][:, :, keep], "v": keys["v"][:, :, keep], "slot": keys["slot"][keep],
            "real": keys["real"][:, keep], "sink": keys["sink"][:, keep],
        }
        return out


# --------------------------------------------------------------------------------------------------------------------
# Hugging Face glue: the config is read here and only here
# --------------------------------------------------------------------------------------------------------------------

# Every head, so a saved folder loads with any Auto class through remote code (see save_pretrained below).
AUTO_MAP = {
    "AutoConfig": "configuration_longformer.LongctxLongformerConfig",
    "AutoModel": "modeling_longformer.LongctxLongformerModel",
    "AutoModelForMaskedLM": "modeling_longformer.LongctxLongformerForMaskedLM",
    "AutoModelForCausalLM": "modeling_longformer.LongctxLongformerForCausalLM",
    "AutoModelForSequenceClassification": "modeling_longformer.LongctxLongformerForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_longformer.LongctxLongformerForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_longformer.LongctxLongformerForQuestionAnswering",
    "AutoModelForMultipleChoice": "modeling_longformer.LongctxLongformerForMultipleChoice",
}


class LongctxLongformerPreTrainedModel(LongctxModelMixin, PreTrainedModel):
    config_class = LongctxLongformerConfig
    auto_map_heads = AUTO_MAP
    attn_implementations = {
        "sdpa": "the banded op on PyTorch's fused attention kernels, O(T x window) memory (the default)",
        "eager": "the dense twin (naive.py): one T x T mask, readable and exact, O(T^2) time and memory",
        "flex_attention": "PyTorch's FlexAttention over the band's and global tokens' tiles (flex.py): the GPU "
        "path; on the CPU inference only, about half the default's speed, and no attention dropout",
    }
    config: LongctxLongformerConfig
    base_model_prefix = "longformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LongformerLayer"]
    # Old transformers checkpoints carry an `embeddings.position_ids` buffer; we compute positions instead.
    _keys_to_ignore_on_load_unexpected = [r"position_ids"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LongformerLMHead):
            init.zeros_(module.bias)

    def _unsupported(self, output_attentions):
        self._refuse_output_attentions(
            output_attentions, "the fast attention never materialises the attention probabilities. Use "
            "hf_longctx.models.longformer.naive.naive_longformer_attention to inspect them.")


class LongctxLongformerModel(LongctxLongformerPreTrainedModel):
    """The bare encoder (or causal decoder when ``config.causal``): embeddings, layers, optional pooler."""

    def __init__(self, config: LongctxLongformerConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        config.check_fields()
        c = config
        self.embeddings = LongformerEmbeddings(
            c.vocab_size, c.hidden_size, c.max_position_embeddings, c.type_vocab_size, c.pad_token_id,
            c.layer_norm_eps, c.hidden_dropout_prob,
        )
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            LongformerLayer(
                c.hidden_size, c.num_attention_heads, c.intermediate_size, c.hidden_act, window, dilation, c.causal,
                c.attention_probs_dropout_prob, c.hidden_dropout_prob, c.layer_norm_eps,
            )
            for window, dilation in zip(c.layer_windows, c.layer_dilations)
        )
        for i, layer in enumerate(self.encoder.layer):
            layer.layer_idx = i
        self.pooler = LongformerPooler(c.hidden_size) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    @property
    def max_length(self) -> int:
        """Longest input the position table allows (RoBERTa positions start after the padding index)."""
        return self.config.max_position_embeddings - (self.config.pad_token_id or 0) - 1

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        global_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: LongformerSinkWindowCache | None = None,  # after transformers' arguments: positional calls bind alike
        use_cache: bool | None = None,
        global_tokens_at_most: int | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        global_attention_mask (`(batch, seq_len)`, 0/1): tokens that attend to, and are attended by, every token.
            In a causal model they are sinks that every later token attends to.
        global_tokens_at_most (`int`): the most global tokens any row holds, when the caller knows it (the
            sequence-classification head's own first-token mask: 1). A compiled model then holds that many global
            slots instead of reading the count from the input, which breaks its graph; a row with more is an error.
            A causal model's sinks are counted in by itself (``num_sink_tokens``).
        cache (`LongformerSinkWindowCache`): causal models only, the state of a previous call (see `generate`);
            ``past_key_values=`` (transformers' older name) is the same argument.

        Long on purpose: the input checks transformers' model makes (positions, global tokens, the cache), then one
        pass.
        """
        cache = take_past_key_values(kwargs, cache)
        self._unsupported(output_attentions)
        c = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else c.output_hidden_states
        return_dict = self._return_dict(return_dict)
        B, T = check_token_inputs(input_ids, inputs_embeds, c.vocab_size, c.hidden_size)
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        attention_mask = trim_generate_mask(attention_mask, cache, T)
        real = check_mask("attention_mask", attention_mask, (B, T))
        if real is None:
            real = torch.ones(B, T, dtype=torch.bool, device=device)
        global_mask = check_mask("global_attention_mask", global_attention_mask, (B, T))
        if token_type_ids is not None:
            check_range("token_type_ids", token_type_ids, 0, c.type_vocab_size, "type_vocab_size")
        if cache is not None and not c.causal:
            raise ValueError("cache is only used by causal models (config.causal=True)")
        if use_cache and c.causal and cache is None:
            cache = LongformerSinkWindowCache(c.num_hidden_layers)

        past_real = cache.real_count if cache is not None and cache.real_count is not None else None
        if position_ids is None:
            # Bidirectional: transformers' rule (positions count non-pad input ids) for exact parity.
            # Causal: count the attention mask, since generation often pads with the eos id.
            counted = real if (c.causal or input_ids is None) else input_ids.ne(c.pad_token_id)
            position_ids = roberta_position_ids(counted, c.pad_token_id, past_real)
        check_length(position_ids.max() + 1, c.max_position_embeddings)
        check_range("position_ids", position_ids, 0, c.max_position_embeddings, "max_position_embeddings")

        at_most = global_tokens_at_most
        if c.causal:
            rank = torch.cumsum(real.long(), dim=1) - 1 + (past_real[:, None] if past_real is not None else 0)
            sinks = real & (rank < c.num_sink_tokens)
            if global_mask is None:
                at_most = c.num_sink_tokens + (at_most or 0)
            global_mask = sinks if global_mask is None else (global_mask & real) | sinks
        global_index = None
        if global_mask is not None and not c.causal:
            global_mask = global_mask & real
            # An exported graph keeps the global path; a compiled one does too when it knows the bound.
            if torch.compiler.is_exporting() or (at_most is not None and torch.compiler.is_compiling()) or bool(
                global_mask.any()
            ):
                global_index = global_token_index(global_mask, at_most)
        elif global_mask is not None and cache is None and torch.compiler.is_compiling():
            global_index = global_token_index(global_mask, at_most)  # the sinks, once for every layer's graph op

        hidden = self.embeddings(input_ids, position_ids, token_type_ids, inputs_embeds)
        if cache is not None:
            cache.begin_step(real, global_mask if global_mask is not None else torch.zeros_like(real))
        all_hidden = [] if output_hidden_states else None
        for layer in self.encoder.layer:
            if all_hidden is not None:
                all_hidden.append(hidden)
            hidden = layer(hidden, real, global_mask, global_index, cache=cache)
        if all_hidden is not None:
            all_hidden.append(hidden)
        if cache is not None:
            cache.end_step()
        pooled = self.pooler(hidden) if self.pooler is not None else None
        out = BaseModelOutputWithPooling(
            last_hidden_state=hidden, pooler_output=pooled,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
        if cache is not None:
            out["cache"] = cache
        return out if return_dict else out.to_tuple()


def _first_separator(input_ids: torch.Tensor, sep_token_id: int, head: str) -> torch.Tensor:
    """Index of the first ``sep_token_id`` in every row, or a ValueError naming the rows without one."""
    if sep_token_id is None:
        raise ValueError(
            f"{head} finds the question through config.sep_token_id, which is None: set it, or pass "
            "global_attention_mask yourself"
        )
    is_sep = input_ids == sep_token_id
    if torch.compiler.is_compiling():  # a graph asserts at run time
        torch._assert_async(is_sep.any(dim=1).all(), f"{head} needs a separator (sep_token_id={sep_token_id}) in "
                                                     "every row, or global_attention_mask")
        return is_sep.int().argmax(dim=1)
    missing = (~is_sep.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(
            f"{head} puts global attention on the question, found as the tokens before the first separator "
            f"(sep_token_id={sep_token_id}), but rows {missing} have no separator. Pass global_attention_mask "
            "yourself, or fix config.sep_token_id."
        )
    return is_sep.int().argmax(dim=1)


class LongctxLongformerForMaskedLM(LongctxLongformerPreTrainedModel):
    _tied_weights_keys = {
        "lm_head.decoder.weight": "longformer.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }

    def __init__(self, config):
        super().__init__(config)
        self.longformer = LongctxLongformerModel(config, add_pooling_layer=False)
        self.lm_head = LongformerLMHead(config.hidden_size, config.vocab_size, config.layer_norm_eps)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    def forward(self, input_ids=None, attention_mask=None, global_attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        take_past_key_values(kwargs, accepted=False, model=type(self).__name__)
        out = self.longformer(
            input_ids, attention_mask, global_attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.lm_head(out.last_hidden_state)
        loss = None
        if labels is not None:
            # num_items_in_batch arrives through kwargs, so gradient accumulation averages over all tokens.
            check_class_labels(labels, self.config.vocab_size)
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        result = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return self._output(result, return_dict)


class LongctxLongformerForCausalLM(LongctxLongformerPreTrainedModel, GenerationMixin):
    """Causal sliding-window LM with attention sinks; ``generate()`` keeps a bounded cache."""

    _tied_weights_keys = {
        "lm_head.decoder.weight": "longformer.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }
    _is_stateful = True  # our own cache object: no assisted decoding / cache cropping

    def __init__(self, config):
        if not config.causal:
            raise ValueError("LongctxLongformerForCausalLM needs a causal config: set causal=True")
        super().__init__(config)
        self.longformer = LongctxLongformerModel(config, add_pooling_layer=False)
        self.lm_head = LongformerLMHead(config.hidden_size, config.vocab_size, config.layer_norm_eps)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate() must not build a DynamicCache: the model creates its own on the first call

    def generate(self, *args, **kwargs):
        """``GenerationMixin.generate``, stopped at the model's length instead of failing past the position table
        (see ``generate_within_length``)."""
        return generate_within_length(super().generate, self.config.max_input_tokens,
                                      "max_position_embeddings - pad_token_id - 1", args, kwargs)

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    # No `position_ids` argument on purpose: generate() would pass 0-based ids, while this model counts
    # RoBERTa positions itself (from the attention mask and the cache).
    def forward(self, input_ids=None, attention_mask=None, global_attention_mask=None, token_type_ids=None,
                inputs_embeds=None, labels=None, cache=None, use_cache=None, logits_to_keep: int = 0,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        cache = take_past_key_values(kwargs, cache)
        if kwargs.get("position_ids") is not None:  # generate() passes none; a user's would be silently ignored
            raise ValueError("position_ids are not accepted by the causal Longformer: it numbers positions itself "
                             "from the attention mask and the cache (RoBERTa-style), so that generation stays exact")
        out = self.longformer(
            input_ids, attention_mask, global_attention_mask, token_type_ids, None, inputs_embeds,
            cache=cache, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            check_class_labels(labels, self.config.vocab_size)
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        result = CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=out.get("cache") if use_cache else None, hidden_states=out.hidden_states
        )
        return self._output(result, return_dict)


class LongctxLongformerForSequenceClassification(LongctxLongformerPreTrainedModel):
    """Classifier on the first real token (``<s>``; after any left padding), which is global unless a
    ``global_attention_mask`` says otherwise. transformers' reads column 0, a padding token in a left-padded row."""

    accepts_loss_kwargs = False  # the loss is a per-example mean; Trainer then scales it for accumulation

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.longformer = LongctxLongformerModel(config, add_pooling_layer=False)
        self.classifier = LongformerClassificationHead(config.hidden_size, config.num_labels, config.hidden_dropout_prob)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, global_attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        take_past_key_values(kwargs, accepted=False, model=type(self).__name__)
        B, T = check_token_inputs(input_ids, inputs_embeds, self.config.vocab_size)  # before indexing them below
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        first = None  # the column of each row's first real token, when rows are left-padded
        if isinstance(attention_mask, torch.Tensor) and tuple(attention_mask.shape) == (B, T):
            first = check_mask("attention_mask", attention_mask, (B, T)).int().argmax(-1)  # (B,) an empty row: 0
        at_most = None
        if global_attention_mask is None:
            global_attention_mask = torch.zeros(B, T, dtype=torch.long, device=device)
            global_attention_mask[torch.arange(B, device=device), 0 if first is None else first] = 1
            at_most = 1
        out = self.longformer(
            input_ids, attention_mask, global_attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            global_tokens_at_most=at_most,
        )
        logits = self.classifier(out.last_hidden_state, first)
        if self.config.num_labels > 1:  # one label is regression
            check_class_labels(labels, self.config.num_labels)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return self._output(result, return_dict)


class LongctxLongformerForTokenClassification(LongctxLongformerPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.longformer = LongctxLongformerModel(config, add_pooling_layer=False)
        self.dropout = HiddenDropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, global_attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        take_past_key_values(kwargs, accepted=False, model=type(self).__name__)
        out = self.longformer(
            input_ids, attention_mask, global_attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            # Token-level loss: num_items_in_batch (through kwargs) makes accumulation average over all tokens.
            check_class_labels(labels, self.config.num_labels)
            loss = self.loss_function(logits, labels, self.config, **kwargs)
        result = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return self._output(result, return_dict)


class LongctxLongformerForQuestionAnswering(LongctxLongformerPreTrainedModel):
    """Extractive QA; by default the question (tokens before the first separator) is global."""

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.longformer = LongctxLongformerModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, global_attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, start_positions=None, end_positions=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        take_past_key_values(kwargs, accepted=False, model=type(self).__name__)
        if global_attention_mask is None and input_ids is not None:
            # Bad ids get their own error first, not "no separator" (or an IndexError) from the search below.
            check_token_inputs(input_ids, inputs_embeds, self.config.vocab_size)
            question_end = _first_separator(input_ids, self.config.sep_token_id, type(self).__name__)
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            global_attention_mask = (positions[None, :] < question_end[:, None]).long()
        out = self.longformer(
            input_ids, attention_mask, global_attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        start_logits, end_logits = self.qa_outputs(out.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions)
        result = QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, hidden_states=out.hidden_states
        )
        return self._output(result, return_dict)


class LongctxLongformerForMultipleChoice(LongctxLongformerPreTrainedModel):
    """One score per choice from the pooled first token; inputs are ``(batch, num_choices, seq_len)``.

    Default global tokens follow transformers: everything after the first two separators (the question and
    choice that come after the context in its multiple-choice format).
    """

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.longformer = LongctxLongformerModel(config)
        self.dropout = HiddenDropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None, global_attention_mask=None,
                labels=None, position_ids=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        take_past_key_values(kwargs, accepted=False, model=type(self).__name__)
        # transformers' LongformerForMultipleChoice order (token_type_ids second), unlike the other heads.
        ref = input_ids if input_ids is not None else None if inputs_embeds is None else inputs_embeds[..., 0]
        if not isinstance(ref, torch.Tensor) or ref.dim() != 3:
            got = tuple(ref.shape) if isinstance(ref, torch.Tensor) else type(ref).__name__  # say what came
            raise ValueError(f"multiple choice inputs must have shape (batch, num_choices, seq_len), got {got}")
        num_choices = ref.shape[1]
        # (B*choices, ...); the product, not -1, so that an empty input reaches the checks; what is not a tensor
        # passes unchanged to the model's checks, which name it
        flat = lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]) if isinstance(x, torch.Tensor) else x  # noqa: E731
        if global_attention_mask is None and input_ids is not None:
            ids = flat(input_ids)
            check_token_inputs(ids, None, self.config.vocab_size)  # bad ids first, as in question answering
            question_end = _first_separator(ids, self.config.sep_token_id, type(self).__name__)
            positions = torch.arange(ids.shape[1], device=ids.device)
            global_attention_mask = (positions[None, :] > question_end[:, None] + 1).long().view(input_ids.shape)
        out = self.longformer(
            flat(input_ids), flat(attention_mask), flat(global_attention_mask), flat(token_type_ids),
            flat(position_ids), flat(inputs_embeds),
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(-1, num_choices)
        check_class_labels(labels, num_choices)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        result = MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return self._output(result, return_dict)


__all__ = [
    "LongctxLongformerPreTrainedModel",
    "LongctxLongformerModel",
    "LongctxLongformerForMaskedLM",
    "LongctxLongformerForCausalLM",
    "LongctxLongformerForSequenceClassification",
    "LongctxLongformerForTokenClassification",
    "LongctxLongformerForQuestionAnswering",
    "LongctxLongformerForMultipleChoice",
    "LongformerSinkWindowCache",
]
