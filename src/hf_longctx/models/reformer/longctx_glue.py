# Generated from src/hf_longctx/shared/glue.py by tools/sync_common.py: edit that file, not this copy.
"""The Hugging Face glue every hf_longctx model shares: remote-code saving, transformers' output rules, and the
protocol of a generation cache.

Generated into each variant folder as ``longctx_glue.py`` by ``tools/sync_common.py`` (the folders are remote code
and must not import the package); ``tests/test_common_copies.py`` fails when a copy drifts.
"""

from __future__ import annotations

import torch


class LongctxModelMixin:
    """Mixed into each variant's ``PreTrainedModel`` subclass (listed before it). The variant sets
    ``auto_map_heads``: its ``AUTO_MAP``, every Auto class and the head that serves it."""

    auto_map_heads: dict = {}
    # The attention implementations the variant runs, by transformers' names (`from_pretrained(...,
    # attn_implementation=NAME)`, `model.set_attn_implementation(NAME)`), each with what it is; the first is the
    # default. Its modules that choose an op hold the chosen name in their `attn_implementation` attribute.
    attn_implementations: dict = {"eager": "plain matrix products"}

    def _check_and_adjust_attn_implementation(self, attn_implementation, is_init_check=False, allow_all_kernels=False):
        """transformers' hook for the name in ``config._attn_implementation``: ours lists what the variant runs
        (transformers' own message asks the user to request support upstream)."""
        offered = self.attn_implementations
        if attn_implementation is None:
            return next(iter(offered))
        if attn_implementation not in offered:
            listing = "; ".join(f'"{name}": {what}' for name, what in offered.items())
            raise ValueError(f'{type(self).__name__} has no attn_implementation="{attn_implementation}". It runs '
                             f"{listing}.")
        return attn_implementation

    def set_attn_implementation(self, attn_implementation, allow_all_kernels: bool = False):
        """Switch the attention op of a built model (checked as at load time)."""
        self.config._attn_implementation_internal = self._check_and_adjust_attn_implementation(attn_implementation)
        self._apply_attn_implementation()

    def post_init(self):
        super().post_init()
        self._apply_attn_implementation()

    def _apply_attn_implementation(self) -> None:
        chosen = self.config._attn_implementation
        for module in self.modules():
            if "attn_implementation" in vars(type(module)):
                module.attn_implementation = chosen

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers writes only the saved class into `auto_map`; list every head so that any Auto class loads
        # the folder with trust_remote_code where hf_longctx is not installed.
        self.config.auto_map = dict(self.auto_map_heads)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _return_dict(self, return_dict: bool | None) -> bool:
        """transformers' rule: the argument wins, else ``config.return_dict`` (False gives tuples)."""
        return self.config.return_dict if return_dict is None else return_dict

    def _output(self, result, return_dict: bool | None):
        """``result`` (a ``ModelOutput``), or its tuple when :meth:`_return_dict` says so."""
        return result if self._return_dict(return_dict) else result.to_tuple()

    def _refuse_output_attentions(self, output_attentions: bool | None, why: str) -> None:
        """``output_attentions`` from the argument or the config (``from_pretrained(..., output_attentions=True)``)
        is refused, never silently ignored: our attention ops never materialise the probabilities."""
        if output_attentions or (output_attentions is None and self.config.output_attentions):
            raise ValueError(f"output_attentions=True is not supported: {why}")


def trim_generate_mask(attention_mask, cache, T: int):
    """``generate()`` passes the attention mask of the past and the new tokens; a call that continues ``cache``
    (positions ``cache.seen`` already in it; None: no cache) reads the last ``T`` columns. The cache is read only
    for a mask that could be such a mask (whatever else was given as a cache is the model's to refuse)."""
    if cache is not None and isinstance(attention_mask, torch.Tensor) and attention_mask.shape[-1] == cache.seen + T:
        return attention_mask[:, -T:]
    return attention_mask


class LongctxCache:
    """What ``generate()`` asks of our generation caches, which it passes back through the ``cache`` argument.

    A subclass keeps ``layers`` (one entry per layer) and ``seen`` (positions processed, padding included), and
    implements :meth:`reorder_cache` for beam search. None is compiled by ``generate()``'s static-cache path."""

    is_compileable = False
    layers: list
    seen: int

    @property
    def is_linear(self) -> list[bool]:
        return [False] * len(self.layers)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support beam search")
