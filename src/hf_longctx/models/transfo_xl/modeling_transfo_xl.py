"""hf_longctx Transformer-XL (Dai et al. 2019): segment-level recurrence with relative positional attention.

Read top to bottom: the modules (built from explicit arguments), then the Hugging Face glue (the only code that
reads the config) with one class per head. Beside it: ``relative_attention.py`` (the attention op and its dense
twin) and ``memory.py`` (the memory a segment attends to, as hidden states or as the generation cache).

Memories: for every layer, the **input** hidden states of the last ``mem_len`` positions seen, detached (section
3.2). They travel batch-first, ``mems[l]`` is ``(B, M, d_model)`` with ``M <= mem_len`` (transformers 4.x kept
them length-first ``(M, B, d_model)``; the converter's parity test transposes). A model starts with **empty**
memories (``M = 0``); transformers 4.x started with ``mem_len`` zero vectors that were attended like real tokens
(4.49's ``TransfoXLModel.init_mems``) -- pass such zeros as ``mems`` to reproduce it.

Inside ``forward`` a long input is cut into segments of ``config.segment_length`` that run in order, each
attending to the memories of the previous ones, so ``Trainer`` trains on long documents as on any causal LM and
one loss covers every token. Padding (``attention_mask``) is never attended, so a right-padded row gives the same
outputs as the row alone.

Differences from transformers 4.x: ``attention_mask``, batch-first memories starting empty, segments inside
``forward``, a key/value generation cache (4.x re-projected the whole memory every step), sequence
classification, no ``sample_softmax``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_transfo_xl import LongctxTransfoXLConfig
from .longctx_common import (
    check_class_labels,
    check_mask,
    check_token_inputs,
    check_token_labels,
    generate_left_padded_rows_alone,
    has_padding_before_tokens,
    take_past_key_values,
)
from .longctx_glue import LongctxModelMixin, trim_generate_mask
from .memory import SegmentMemory, TransfoXLMemoryCache
from .relative_attention import gathered_relative_attention, relative_attention, sinusoid_positions

# --------------------------------------------------------------------------------------------------------------------
# Modules, built from explicit arguments
# --------------------------------------------------------------------------------------------------------------------


class AdaptiveProjection(nn.Linear):
    """Projection between a cluster's embedding width and ``d_model``: ``weight`` is ``(d_model, width)``, the
    shape of 4.49's ``emb_projs.i`` / ``out_projs.i``. Its own class so that it gets ``proj_init_std``."""

    def __init__(self, width: int, d_model: int):
        super().__init__(width, d_model, bias=False)


class AdaptiveEmbedding(nn.Module):
    """Token embedding with one table per vocabulary cluster (adaptive input, Baevski & Auli 2019).

    Cluster ``i`` (ids in ``[cutoff_ends[i], cutoff_ends[i+1])``) has width ``widths[i]`` and a projection to
    ``d_model`` (``emb_projs.i``); a single cluster of width ``d_model`` needs no projection. The result is scaled by
    ``sqrt(d_model)`` (4.49's ``AdaptiveEmbedding.forward``).
    """

    def __init__(self, vocab_size: int, d_model: int, cutoffs: list[int], widths: list[int]):
        super().__init__()
        self.d_model = d_model
        self.cutoffs = list(cutoffs)
        cutoff_ends = [0] + self.cutoffs + [vocab_size]
        self.scale = d_model**0.5
        single = len(widths) == 1
        # div_val=1 keeps one table for the whole vocabulary (even with cutoffs): the softmax slices it per cluster.
        self.shared_table = single or len(set(widths)) == 1
        if self.shared_table:
            self.emb_layers = nn.ModuleList([nn.Embedding(vocab_size, widths[0])])
            n_proj = 1 if widths[0] != d_model else 0
        else:
            self.emb_layers = nn.ModuleList(
                nn.Embedding(r - l, w) for l, r, w in zip(cutoff_ends[:-1], cutoff_ends[1:], widths)
            )
            n_proj = len(widths)
        # Linear(w, d_model).weight is (d_model, w): the shape and orientation of 4.49's `emb_projs.i`.
        self.emb_projs = nn.ModuleList(AdaptiveProjection(widths[i], d_model) for i in range(n_proj))

    @property
    def cutoff_ends(self) -> list[int]:
        """Cluster boundaries, the last read from the tables: `resize_token_embeddings` replaces the last table."""
        last = self.emb_layers[-1].num_embeddings + (0 if self.shared_table else self.cutoffs[-1] if self.cutoffs else 0)
        return [0] + self.cutoffs + [last]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.shared_table:
            x = self.emb_layers[0](input_ids)
            if len(self.emb_projs):
                x = self.emb_projs[0](x)
            return x * self.scale
        out = input_ids.new_zeros(*input_ids.shape, self.d_model, dtype=self.emb_projs[0].weight.dtype)
        for i, (l, r) in enumerate(zip(self.cutoff_ends[:-1], self.cutoff_ends[1:])):
            in_cluster = (input_ids >= l) & (input_ids < r)
            if in_cluster.any():
                out[in_cluster] = self.emb_projs[i](self.emb_layers[i](input_ids[in_cluster] - l))
        return out * self.scale


class AdaptiveLogSoftmax(nn.Module):
    """Log-probabilities over the vocabulary from hidden states (adaptive softmax, Grave et al. 2017).

    The head scores the first cluster's tokens plus one entry per tail cluster; a tail token's log-prob is its
    cluster's head log-prob plus its log-prob within the cluster (4.49's ``ProjectedAdaptiveLogSoftmax.forward``).
    With no cutoffs this is a plain ``log_softmax(linear(h))``. Returns **log-probs**, not logits, as transformers 4.x
    did; they serve as logits for ``generate()`` since softmax(log p / t) = softmax(logit / t).
    """

    def __init__(self, vocab_size: int, d_model: int, cutoffs: list[int], widths: list[int]):
        super().__init__()
        self.cutoffs = list(cutoffs)
        cutoff_ends = [0] + self.cutoffs + [vocab_size]
        n_clusters = len(cutoffs)
        self.shared_table = len(set(widths)) == 1
        if n_clusters:
            self.cluster_weight = nn.Parameter(torch.zeros(n_clusters, widths[0]))
            self.cluster_bias = nn.Parameter(torch.zeros(n_clusters))
        if self.shared_table:
            self.out_layers = nn.ModuleList([nn.Linear(widths[0], vocab_size)])
            n_proj = len(widths) if widths[0] != d_model else 0
        else:
            self.out_layers = nn.ModuleList(
                nn.Linear(w, r - l) for l, r, w in zip(cutoff_ends[:-1], cutoff_ends[1:], widths)
            )
            n_proj = len(widths)
        # weight (d_model, w_i) as 4.49's `out_projs.i`; applied as h @ P_i (its ``_compute_logit``).
        self.out_projs = nn.ModuleList(AdaptiveProjection(widths[i], d_model) for i in range(n_proj))

    @property
    def cutoff_ends(self) -> list[int]:
        """Cluster boundaries, the last read from the output table: `resize_token_embeddings` replaces it."""
        last = self.out_layers[-1].out_features + (0 if self.shared_table else self.cutoffs[-1] if self.cutoffs else 0)
        return [0] + self.cutoffs + [last]

    def _cluster_logits(self, h: torch.Tensor, i: int) -> torch.Tensor:
        if self.shared_table:
            l, r = self.cutoff_ends[i], self.cutoff_ends[i + 1]
            weight, bias = self.out_layers[0].weight[l:r], self.out_layers[0].bias[l:r]
        else:
            weight, bias = self.out_layers[i].weight, self.out_layers[i].bias
        if i == 0 and self.cutoffs:
            weight = torch.cat([weight, self.cluster_weight])
            bias = torch.cat([bias, self.cluster_bias])
        if len(self.out_projs):
            h = F.linear(h, self.out_projs[i].weight.t())
        return F.linear(h, weight, bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., d_model)`` -> ``(..., vocab_size)`` log-probabilities."""
        head = torch.log_softmax(self._cluster_logits(hidden, 0), dim=-1)
        if not self.cutoffs:
            return head
        c0 = self.cutoffs[0]
        parts = [head[..., :c0]]
        for i in range(1, len(self.cutoffs) + 1):
            tail = torch.log_softmax(self._cluster_logits(hidden, i), dim=-1)
            parts.append(head[..., c0 + i - 1, None] + tail)
        return torch.cat(parts, dim=-1)


class RelativeSelfAttention(nn.Module):
    """Projections + :func:`relative_attention`, residual and LayerNorm (the paper's ``RelPartialLearnable``).

    Keys and values cover the layer's memory followed by the segment. The memory arrives either as hidden states
    ``(B, M, d_model)`` (projected here, so the projections get gradients through it, as in training) or as the
    generation cache's keys/values (``mem_kv``, a :class:`TransfoXLLayerKV`), which ``ring`` (a :class:`RingStep`)
    turns into a fixed-size decoding step.
    """

    def __init__(self, d_model, n_head, d_head, dropout, dropatt, pre_lnorm, eps, own_biases: bool):
        super().__init__()
        self.n_head, self.d_head, self.pre_lnorm, self.dropatt = n_head, d_head, pre_lnorm, dropatt
        self.qkv = nn.Linear(d_model, 3 * n_head * d_head, bias=False)  # rows: q, k, v (4.49 `qkv_net`)
        self.r_net = nn.Linear(d_model, n_head * d_head, bias=False)
        self.out = nn.Linear(n_head * d_head, d_model, bias=False)
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.drop = nn.Dropout(dropout)
        if own_biases:  # untie_r: u and v per layer
            self.r_w_bias = nn.Parameter(torch.zeros(n_head, d_head))
            self.r_r_bias = nn.Parameter(torch.zeros(n_head, d_head))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H*D) -> (B, H, T, D)
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.d_head).transpose(1, 2)

    def project_r(self, pos_emb: torch.Tensor) -> torch.Tensor:
        """``(K, d_model)`` sinusoids -> ``(H, K, D)``."""
        return self.r_net(pos_emb).view(-1, self.n_head, self.d_head).transpose(0, 1)

    def forward(self, x, r, key_mask, window, r_w_bias, r_r_bias, mem=None, mem_kv=None, ring=None):
        """``x`` ``(B, T, d_model)``; ``r`` ``(H, K, D)``; returns the output and the keys/values ``(B, H, K, D)``."""
        B, T, _ = x.shape
        hd = self.n_head * self.d_head
        inp = self.norm(x) if self.pre_lnorm else x
        q, k, v = (self._heads(t) for t in self.qkv(inp).split(hd, dim=-1))  # (B, H, T, D) each
        if mem is not None and mem.shape[1]:
            # The memory's keys/values by their own GEMM: it is detached, so autograd computes no input gradient for
            # its rows (one GEMM over memory + segment would, and throw it away), and no queries are computed for it
            # (4.49 projects them and throws them away). Pre-LN normalises memory and segment (4.49's
            # ``RelPartialLearnableMultiHeadAttn.forward``).
            m = self.norm(mem) if self.pre_lnorm else mem
            k_mem, v_mem = (self._heads(t) for t in F.linear(m, self.qkv.weight[hd:]).split(hd, dim=-1))
            # Written head-major: the attention's batched GEMMs need (B*H, K, D) rows, a copy the cat replaces.
            k, v = torch.cat([k_mem, k], dim=2), torch.cat([v_mem, v], dim=2)  # (B, H, K, D)
        elif ring is not None:  # one decoding step over the cache's fixed ring of mem_len + 1 slots
            k, v = mem_kv.write_slot(k, v, ring.slot)  # the whole ring (B, H, mem_len + 1, D)
            attn = gathered_relative_attention(q, k, v, r, r_w_bias, r_r_bias, rows=ring.rows, allowed=ring.allowed)
            return self._finish(x, attn), k, v
        elif mem_kv is not None:  # memory from the cache, in time order, then this segment; the cache keeps it
            k, v = mem_kv.extend(k, v)
        attn = relative_attention(
            q, k, v, r, r_w_bias, r_r_bias, key_mask=key_mask, window=window,
            dropout_p=self.dropatt if self.training else 0.0,
        )
        return self._finish(x, attn), k, v

    def _finish(self, x, attn):
        B, T, _ = x.shape
        attn = self.drop(self.out(attn.transpose(1, 2).reshape(B, T, self.n_head * self.d_head)))
        return x + attn if self.pre_lnorm else self.norm(x + attn)


class PositionwiseFF(nn.Module):
    """Linear -> ReLU -> Linear with dropout, residual and LayerNorm (pre or post). 4.49's ``pos_ff``."""

    def __init__(self, d_model, d_inner, dropout, pre_lnorm, eps):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.drop = nn.Dropout(dropout)
        self.pre_lnorm = pre_lnorm

    def forward(self, x):
        h = self.norm(x) if self.pre_lnorm else x
        h = self.drop(self.fc2(self.drop(F.relu(self.fc1(h)))))
        return x + h if self.pre_lnorm else self.norm(x + h)


class TransfoXLLayer(GradientCheckpointingLayer):
    def __init__(self, d_model, n_head, d_head, d_inner, dropout, dropatt, pre_lnorm, eps, own_biases):
        super().__init__()
        self.attn = RelativeSelfAttention(d_model, n_head, d_head, dropout, dropatt, pre_lnorm, eps, own_biases)
        self.ff = PositionwiseFF(d_model, d_inner, dropout, pre_lnorm, eps)

    def forward(self, x, r, key_mask, window, r_w_bias, r_r_bias, mem=None, mem_kv=None, ring=None):
        out, k, v = self.attn(x, r, key_mask, window, r_w_bias, r_r_bias, mem, mem_kv, ring)
        return self.ff(out), k, v


# --------------------------------------------------------------------------------------------------------------------
# Hugging Face glue: the config is read here and only here
# --------------------------------------------------------------------------------------------------------------------

# Every head, so a saved folder loads with any Auto class through remote code (see save_pretrained below).
AUTO_MAP = {
    "AutoConfig": "configuration_transfo_xl.LongctxTransfoXLConfig",
    "AutoModel": "modeling_transfo_xl.LongctxTransfoXLModel",
    "AutoModelForCausalLM": "modeling_transfo_xl.LongctxTransfoXLForCausalLM",
    "AutoModelForSequenceClassification": "modeling_transfo_xl.LongctxTransfoXLForSequenceClassification",
}


@dataclass
class TransfoXLModelOutput(ModelOutput):
    """``last_hidden_state`` ``(B, T, d_model)``; ``mems``: per layer ``(B, M, d_model)`` for the next call;
    ``mems_mask`` ``(B, M)`` bool (True = real) or ``None`` when every memory position is real."""

    last_hidden_state: torch.FloatTensor | None = None
    mems: tuple[torch.FloatTensor, ...] | None = None
    mems_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    cache: TransfoXLMemoryCache | None = None


@dataclass
class TransfoXLCausalLMOutput(ModelOutput):
    """As :class:`TransfoXLModelOutput`, with ``logits`` = log-probabilities ``(B, T, vocab)`` and the loss."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mems: tuple[torch.FloatTensor, ...] | None = None
    mems_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    cache: TransfoXLMemoryCache | None = None


class LongctxTransfoXLPreTrainedModel(LongctxModelMixin, PreTrainedModel):
    attn_implementations = {
        "eager": "relative-position attention over memory and segment in plain matrix products (the one op)",
    }
    auto_map_heads = AUTO_MAP
    config_class = LongctxTransfoXLConfig
    config: LongctxTransfoXLConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransfoXLLayer"]

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """transformers' resize, for one embedding table (``div_val=1``): the new ids join the last cluster, and
        the adaptive softmax reads its boundaries from the resized table. Per-cluster tables are refused."""
        c = self.config
        if new_num_tokens is not None and len(set(c.cluster_widths)) > 1:
            raise ValueError(f"resize_token_embeddings needs one embedding table (div_val=1); this model has "
                             f"{len(c.cluster_widths)} tables of widths {c.cluster_widths} (div_val={c.div_val})")
        if new_num_tokens is not None and c.cutoffs and new_num_tokens <= c.cutoffs[-1]:
            raise ValueError(f"cannot resize to {new_num_tokens} tokens: the last adaptive cluster starts at "
                             f"{c.cutoffs[-1]} (config.cutoffs={c.cutoffs})")
        return super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)

    def _init_weights(self, module):
        std, proj_std = self.config.init_std, self.config.proj_init_std
        if isinstance(module, AdaptiveProjection):
            init.normal_(module.weight, 0.0, proj_std)
        elif isinstance(module, AdaptiveLogSoftmax):
            if module.cutoffs:
                init.normal_(module.cluster_weight, 0.0, std)
                init.zeros_(module.cluster_bias)
        elif isinstance(module, RelativeSelfAttention) and hasattr(module, "r_w_bias"):
            init.normal_(module.r_w_bias, 0.0, std)
            init.normal_(module.r_r_bias, 0.0, std)
        elif isinstance(module, LongctxTransfoXLModel) and hasattr(module, "r_w_bias"):
            init.normal_(module.r_w_bias, 0.0, std)
            init.normal_(module.r_r_bias, 0.0, std)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, 0.0, std)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class LongctxTransfoXLModel(LongctxTransfoXLPreTrainedModel):
    """Adaptive embedding, ``n_layer`` relative-attention layers, and the segment recurrence."""

    def __init__(self, config: LongctxTransfoXLConfig):
        super().__init__(config)
        config.check_fields()
        c = config
        self.word_emb = AdaptiveEmbedding(c.vocab_size, c.d_model, c.cutoffs, c.cluster_widths)
        self.drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            TransfoXLLayer(c.d_model, c.n_head, c.d_head, c.d_inner, c.dropout, c.dropatt, c.pre_lnorm,
                           c.layer_norm_epsilon, own_biases=c.untie_r)
            for _ in range(c.n_layer)
        )
        if not c.untie_r:  # one u, v pair shared by every layer (4.49's ``TransfoXLModel.__init__`` with ``untie_r=False``)
            self.r_w_bias = nn.Parameter(torch.zeros(c.n_head, c.d_head))
            self.r_r_bias = nn.Parameter(torch.zeros(c.n_head, c.d_head))
        self.post_init()

    def get_input_embeddings(self):
        return self.word_emb.emb_layers[0] if len(self.word_emb.emb_layers) == 1 else self.word_emb

    def set_input_embeddings(self, value):
        self.word_emb.emb_layers[0] = value

    def _biases(self, layer: TransfoXLLayer):
        owner = layer.attn if self.config.untie_r else self
        return owner.r_w_bias, owner.r_r_bias

    def _check_mems(self, mems, mems_mask, B: int):
        c = self.config
        if mems is None:
            return None, None
        if not isinstance(mems, (list, tuple)) or len(mems) != c.n_layer:
            got = len(mems) if isinstance(mems, (list, tuple)) else type(mems).__name__
            raise ValueError(f"mems must hold one tensor per layer ({c.n_layer} layers), got {got}")
        M = mems[0].shape[1] if mems[0].dim() == 3 else -1
        for i, m in enumerate(mems):
            if isinstance(m, torch.Tensor) and m.dtype != self.word_emb.emb_layers[0].weight.dtype:
                raise ValueError(f"mems[{i}] is {m.dtype} but the model computes in "
                                 f"{self.word_emb.emb_layers[0].weight.dtype}: cast the memories (or the model)")
            if m.dim() != 3 or m.shape[0] != B or m.shape[1] != M or m.shape[2] != c.d_model:
                raise ValueError(
                    f"mems[{i}] must have shape (batch={B}, memory length, d_model={c.d_model}) like mems[0] "
                    f"(batch-first; transformers 4.x memories are (length, batch, d_model): transpose them), "
                    f"got {tuple(m.shape)}"
                )
        mems_mask = check_mask("mems_mask", mems_mask, (B, M))
        return [m.detach() for m in mems], mems_mask

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mems: tuple[torch.Tensor, ...] | None = None,
        mems_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: TransfoXLMemoryCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TransfoXLModelOutput | tuple:
        r"""
        input_ids (`(B, T)`): any length; processed in segments of ``config.segment_length``.
        attention_mask (`(B, T)`, 0/1): 0 marks padding, which no position attends to.
        mems (tuple of `(B, M, d_model)` per layer): memories returned by a previous call (``mems`` output).
        mems_mask (`(B, M)`, 0/1): which memory positions are real (the ``mems_mask`` output); default all.
        inputs_embeds (`(B, T, d_model)`): replaces ``word_emb(input_ids)`` (scaling included).
        cache (`TransfoXLMemoryCache`): generation state of a previous call; ``use_cache=True`` creates one.
            ``past_key_values=`` (transformers' older name) is the same argument.

        Long on purpose: the input checks transformers' model makes, then the segment loop over
        :class:`SegmentMemory`.
        """
        cache = take_past_key_values(kwargs, cache)
        c = self.config
        self._refuse_output_attentions(output_attentions, "the attention probabilities are never kept")
        output_hidden_states = output_hidden_states if output_hidden_states is not None else c.output_hidden_states
        return_dict = self._return_dict(return_dict)
        B, T = check_token_inputs(input_ids, inputs_embeds, c.vocab_size, c.d_model)
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        attention_mask = trim_generate_mask(attention_mask, cache, T)
        real = check_mask("attention_mask", attention_mask, (B, T))
        if real is not None and not torch.compiler.is_compiling() and bool(real.all()):
            real = None  # fast path: no padding (a compiled graph keeps the mask: the same result)
        if has_padding_before_tokens(real):
            if mems is not None or cache is not None or use_cache:
                raise ValueError("padding before a row's tokens (left padding) cannot continue memories or a cache: "
                                 "segments would not fall where they fall for the row alone; pad on the right, or "
                                 "give each row alone (generate() does so for left-padded prompts)")
            return self._forward_left_aligned(input_ids, real, inputs_embeds, output_hidden_states, return_dict)
        if use_cache and cache is None:
            cache = TransfoXLMemoryCache(c.n_layer, c.mem_len)
        if cache is not None and cache.seen and mems is not None:
            raise ValueError("pass either mems or a cache that already holds positions, not both")
        mems, mems_mask = self._check_mems(mems, mems_mask, B)
        if cache is not None and cache.batch_size() is not None and cache.batch_size() != B:
            raise ValueError(f"the cache holds {cache.batch_size()} rows but the input has {B}")

        hidden = self.word_emb(input_ids) if inputs_embeds is None else inputs_embeds
        hidden = self.drop(hidden)
        if torch.compiler.is_compiling() and mems is None and cache is None:
            # A graph cannot loop over a number of segments that follows the length: every segment at once.
            out = self._segments_at_once(hidden, real, output_hidden_states)
            return out if return_dict else out.to_tuple()
        all_real = mems_mask is None or (not torch.compiler.is_compiling() and bool(mems_mask.all()))
        memory = SegmentMemory(mems, None if all_real else mems_mask, cache, c.mem_len)
        window = c.mem_len if c.same_length else None
        all_hidden = [[] for _ in range(c.n_layer + 1)] if output_hidden_states else None
        outputs = []
        for start in range(0, T, c.segment_length):
            x = hidden[:, start:start + c.segment_length]
            L = x.shape[1]
            K = memory.open(None if real is None else real[:, start:start + L], L, B, window, device)
            pos_emb = None  # the sinusoids, built on first use: a decoding step usually reuses the cache's r
            for i, layer in enumerate(self.layers):
                if all_hidden is not None:
                    all_hidden[i].append(x)
                r = memory.projected_r(i, K, x.dtype, self.training)
                if r is None:
                    if pos_emb is None:
                        pos_emb = self._position_embeddings(K, x.dtype, device)
                    r = layer.attn.project_r(pos_emb)
                    memory.keep_projected_r(i, K, r, self.training)
                x = memory.run(i, layer, x, r, window, *self._biases(layer))
            memory.close(L, B, device)
            x = self.drop(x)
            outputs.append(x)
            if all_hidden is not None:
                all_hidden[-1].append(x)
        mems, mem_mask = memory.returned()
        last = torch.cat(outputs, dim=1) if outputs else hidden.new_zeros(B, 0, c.d_model)
        out = TransfoXLModelOutput(
            last_hidden_state=last,
            mems=mems,
            mems_mask=mem_mask,
            hidden_states=tuple(torch.cat(h, dim=1) for h in all_hidden) if all_hidden is not None else None,
            cache=cache,
        )
        return out if return_dict else out.to_tuple()

    def _segments_at_once(self, hidden, real, output_hidden_states: bool) -> TransfoXLModelOutput:
        """The segment loop without the loop, for graphs (compiled, exported): what ``forward`` computes from no
        memory, with every segment of every layer at once.

        Layer ``i`` of segment ``s`` reads the segment and, as memory, the ``mem_len`` layer-``i`` inputs before
        it (detached) - all known once layer ``i - 1`` has run over every segment. So each layer runs once over
        the ``n`` segments as a batch of ``B * n`` rows, each with a memory window gathered from the sequence.
        Early segments, whose memory is shorter in the loop, get masked slots in front: the relative distances of
        the real keys, so every score, are the loop's (tested against it in tests/test_transfo_xl_model.py).
        """
        c = self.config
        B, T, C = hidden.shape
        S, M = c.segment_length, c.mem_len
        n = (T + S - 1) // S
        device = hidden.device
        real = torch.ones(B, T, dtype=torch.bool, device=device) if real is None else real
        x = F.pad(hidden, (0, 0, 0, n * S - T))  # (B, n*S, C)
        real_p = F.pad(real, (0, n * S - T), value=False)
        # Segment s's memory: positions s*S - M ... s*S - 1 (before the sequence: masked slots), the windows of M
        # starting every S positions of the sequence with M slots in front.
        def windows(t):  # (B, n*S, ...) -> (B, n, M, ...)
            return F.pad(t, (0, 0) * (t.dim() - 2) + (M, 0)).unfold(1, M, S)[:, :n].movedim(-1, 2)

        mem_real = windows(real_p)  # (B, n, M); the front slots are False
        key_mask = torch.cat([mem_real, real_p.view(B, n, S)], dim=2).view(B * n, M + S)
        pos_emb = self._position_embeddings(M + S, x.dtype, device)
        window = c.mem_len if c.same_length else None
        all_hidden, new_mems = [], []
        for layer in self.layers:
            all_hidden.append(x[:, :T])
            new_mems.append(x[:, max(0, T - M):T].detach())
            mem = windows(x).reshape(B * n, M, C).detach() if M else None
            y, _, _ = layer(x.view(B * n, S, C), layer.attn.project_r(pos_emb), key_mask, window, *self._biases(layer),
                            mem)
            x = y.view(B, n * S, C)
        x = self.drop(x[:, :T])
        all_hidden.append(x)
        return TransfoXLModelOutput(
            last_hidden_state=x, mems=tuple(new_mems), mems_mask=real[:, max(0, T - M):],
            hidden_states=tuple(all_hidden) if output_hidden_states else None, cache=None,
        )

    def _forward_left_aligned(self, input_ids, real, inputs_embeds, output_hidden_states, return_dict):
        """A batch with padding before some row's tokens, read with every row's real tokens moved to the front (in
        order): segments then start at each row's first token, as for the row alone, and the outputs go back to
        the columns they came from. The memories returned are those of the moved rows (padding at their end,
        marked by ``mems_mask``)."""
        B, T = real.shape
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)  # (B, T) real tokens first
        out = self.forward(
            input_ids=None if input_ids is None else input_ids.gather(1, order), attention_mask=real.gather(1, order),
            inputs_embeds=None if inputs_embeds is None else inputs_embeds.gather(
                1, order[..., None].expand(-1, -1, inputs_embeds.shape[-1])),
            output_hidden_states=output_hidden_states, return_dict=True,
        )

        def back(x):  # (B, T, d) in moved order -> original columns
            return torch.empty_like(x).scatter_(1, order[..., None].expand_as(x), x)

        out.last_hidden_state = back(out.last_hidden_state)
        if out.hidden_states is not None:
            out.hidden_states = tuple(back(h) for h in out.hidden_states)
        return out if return_dict else out.to_tuple()

    def _position_embeddings(self, K: int, dtype, device) -> torch.Tensor:
        """Sinusoids of the distances K-1 ... 0, clamped (4.49's ``TransfoXLModel.forward``); one table per segment
        for all layers."""
        distances = torch.arange(K - 1, -1, -1, device=device)
        if self.config.clamp_len is not None:
            distances = distances.clamp(max=self.config.clamp_len)
        return self.drop(sinusoid_positions(distances, self.config.d_model, dtype=dtype))  # (K, d_model)


def _tied_keys(config: LongctxTransfoXLConfig, lm_head: AdaptiveLogSoftmax, emb: AdaptiveEmbedding) -> dict:
    """Weights the LM head shares with the embedding (4.49's ``TransfoXLLMHeadModel.tie_weights``): every output
    table, and the projections that ``tie_projs`` names (with div_val=1 they all share the single embedding
    projection)."""
    keys = {}
    for i in range(len(lm_head.out_layers)):
        keys[f"lm_head.out_layers.{i}.weight"] = f"transformer.word_emb.emb_layers.{i}.weight"
    if len(lm_head.out_projs):
        for i, tie in enumerate(config.tie_projs):
            if tie:
                source = 0 if emb.shared_table else i
                keys[f"lm_head.out_projs.{i}.weight"] = f"transformer.word_emb.emb_projs.{source}.weight"
    return keys


class LongctxTransfoXLForCausalLM(LongctxTransfoXLPreTrainedModel, GenerationMixin):
    """Language model over the adaptive softmax; ``logits`` are log-probabilities (see :class:`AdaptiveLogSoftmax`).

    ``generate()`` keeps a :class:`TransfoXLMemoryCache`; the prompt is processed in segments like any input.
    """

    _is_stateful = True  # own cache object: no assisted decoding or cache cropping

    def __init__(self, config):
        super().__init__(config)
        self.transformer = LongctxTransfoXLModel(config)
        self.lm_head = AdaptiveLogSoftmax(config.vocab_size, config.d_model, config.cutoffs, config.cluster_widths)
        self._tied_weights_keys = _tied_keys(config, self.lm_head, self.transformer.word_emb)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate() must not build a DynamicCache: the model creates its own on the first call

    def get_output_embeddings(self):
        return self.lm_head.out_layers[0] if len(self.lm_head.out_layers) == 1 else None

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.out_layers[0] = new_embeddings

    def generate(self, *args, **kwargs):
        """``GenerationMixin.generate``; a left-padded batch of prompts is generated row by row, each on its own
        tokens (segments and the cache count columns; one call per row, see ``generate_left_padded_rows_alone``)."""
        return generate_left_padded_rows_alone(super().generate, self.generation_config, args, kwargs)

    def prepare_inputs_for_generation(self, input_ids, cache=None, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, cache=cache, **kwargs)
        if cache is not None and cache.seen:
            inputs.pop("mems", None)  # the initial memories are already inside the cache
            inputs.pop("mems_mask", None)
        return inputs

    def forward(self, input_ids=None, attention_mask=None, mems=None, mems_mask=None, inputs_embeds=None,
                labels=None, cache=None, use_cache=None, logits_to_keep: int = 0, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        labels (`(B, T)`): next-token targets as ``input_ids`` (shifted inside); -100 is ignored. One loss over all
            segments: the last token of a segment predicts the first of the next.
        shift_labels (`(B, T)`, keyword): the target of every position, already shifted (replaces the shift of
            ``labels``), as transformers' causal-LM loss takes it: stream training (:mod:`hf_longctx.streams`)
            predicts the first token of the next call this way. A keyword and not a named argument because
            ``Trainer`` takes every named argument with "label" in it as a label that each batch must carry.
        """
        cache = take_past_key_values(kwargs, cache)
        shift_labels = kwargs.pop("shift_labels", None)
        out = self.transformer(
            input_ids, attention_mask, mems, mems_mask, inputs_embeds, cache=cache, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        hidden = out.last_hidden_state
        for name, value in (("labels", labels), ("shift_labels", shift_labels)):
            check_token_labels(value, tuple(hidden.shape[:2]), self.config.vocab_size, name)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None or shift_labels is not None:
            # Cross-entropy of log-probs equals their NLL (log_softmax is idempotent on them); num_items_in_batch
            # arrives through kwargs, so gradient accumulation averages over all tokens.
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, shift_labels=shift_labels,
                                      **kwargs)
        result = TransfoXLCausalLMOutput(
            loss=loss, logits=logits, mems=out.mems, mems_mask=out.mems_mask, hidden_states=out.hidden_states,
            cache=out.cache if use_cache or cache is not None else None,
        )
        return self._output(result, return_dict)


class LongctxTransfoXLForSequenceClassification(LongctxTransfoXLPreTrainedModel):
    """Document classification with segment recurrence: the whole document is read segment by segment and the
    hidden state of its last real token (which has seen the memory of everything before) is classified."""

    accepts_loss_kwargs = False  # the loss is a per-example mean; Trainer then scales it for accumulation

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = LongctxTransfoXLModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        take_past_key_values(kwargs, accepted=False, model=type(self).__name__)
        out = self.transformer(
            input_ids, attention_mask, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        hidden = out.last_hidden_state  # (B, T, d_model)
        B, T = hidden.shape[:2]
        if attention_mask is None:
            last = torch.full((B,), T - 1, dtype=torch.long, device=hidden.device)
        else:  # index of the last real token of every row
            last = T - 1 - attention_mask.bool().flip(1).int().argmax(dim=1)
        pooled = hidden[torch.arange(B, device=hidden.device), last]  # (B, d_model)
        logits = self.classifier(self.dropout(pooled))
        if labels is not None and labels.shape[0] != B:
            raise ValueError(f"labels must have one entry per row ({B}), got shape {tuple(labels.shape)}")
        if self.config.num_labels > 1:  # one label is regression
            check_class_labels(labels, self.config.num_labels)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return self._output(result, return_dict)


__all__ = [
    "LongctxTransfoXLPreTrainedModel",
    "LongctxTransfoXLModel",
    "LongctxTransfoXLForCausalLM",
    "LongctxTransfoXLForSequenceClassification",
    "TransfoXLMemoryCache",
    "AdaptiveEmbedding",
    "AdaptiveLogSoftmax",
]
