"""The Transformer-XL's memory, one object for ``forward``'s segment loop: :class:`SegmentMemory`.

A segment attends to the memory of the earlier ones plus itself (Dai et al. 2019, section 3.2). The memory lives
in one of two forms, which :class:`SegmentMemory` hides behind one interface (``open`` a segment, ``run`` each
layer, ``close`` it):

* hidden states (the paper's form, what ``mems`` carries between calls): per layer, the detached **input** hidden
  states of the last ``mem_len`` positions, ``(B, M, d_model)``, with ``mems_mask`` ``(B, M)`` for padding;
* a :class:`TransfoXLMemoryCache` (what ``generate()`` carries): per layer the projected keys and values of the
  last ``mem_len`` positions in a ring, so that a decoding step projects one position instead of the memory.
  Hidden memories given with a fresh cache seed it (the first segment writes their keys and values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .longctx_glue import LongctxCache


class TransfoXLLayerKV:
    """One layer's cached keys and values in a ring of ``slots = mem_len + 1`` positions, ``(B, H, slots, D)``.

    Position ``p`` lives in slot ``p % slots``; writing a position overwrites the one ``slots`` earlier, so the ring
    always holds the last ``mem_len`` positions plus the one being processed, and nothing is ever concatenated or
    moved: a decoding step writes one slot and attends to the whole ring (static shapes, the same work at every
    step, from the first token on). Which slots are real and their distances live in :class:`TransfoXLMemoryCache`.
    """

    def __init__(self, cache: "TransfoXLMemoryCache"):
        self.cache = cache
        self.k = self.v = None  # (B, H, slots, D)

    def _ensure(self, like: torch.Tensor) -> None:
        if self.k is None:
            B, H, _, D = like.shape
            self.k = like.new_zeros(B, H, self.cache.slots, D)
            self.v = like.new_zeros(B, H, self.cache.slots, D)

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory in time order, ``(B, H, M, D)`` each (a copy)."""
        idx = self.cache.memory_slots()
        return self.k.index_select(2, idx), self.v.index_select(2, idx)

    def write(self, k: torch.Tensor, v: torch.Tensor, first: int) -> None:
        """Store positions ``first ... first + T - 1`` (``k``, ``v`` ``(B, H, T, D)``); only the last ``slots`` of
        them can be kept."""
        self._ensure(k)
        n = min(k.shape[2], self.cache.slots)
        end = first + k.shape[2]
        idx = torch.arange(end - n, end, device=k.device) % self.cache.slots
        self.k.index_copy_(2, idx, k[:, :, -n:].detach())
        self.v.index_copy_(2, idx, v[:, :, -n:].detach())

    def write_slot(self, k: torch.Tensor, v: torch.Tensor, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A decoding step: one position ``(B, H, 1, D)`` into ``slot``; returns the whole ring."""
        self._ensure(k)
        self.k[:, :, slot:slot + 1] = k
        self.v[:, :, slot:slot + 1] = v
        return self.k, self.v

    def extend(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A segment of ``T`` positions: returns memory (time order) + segment ``(B, H, M + T, D)`` and stores the
        segment. The memory is read before the segment overwrites the slots it may share with it."""
        if self.k is not None and self.cache.memory_length():
            k_mem, v_mem = self.keys_values()
            k_all, v_all = torch.cat([k_mem, k_new], dim=2), torch.cat([v_mem, v_new], dim=2)
        else:
            k_all, v_all = k_new, v_new
        self.write(k_new, v_new, self.cache.pos)
        return k_all, v_all

    def reorder(self, beam_idx: torch.LongTensor) -> None:
        if self.k is not None:
            self.k = self.k.index_select(0, beam_idx.to(self.k.device))
            self.v = self.v.index_select(0, beam_idx.to(self.v.device))


@dataclass
class RingStep:
    """What every layer needs for one decoding step over the ring: the slot written, the row of ``r`` (distance)
    of every slot ``(1, slots)``, and which slots may be attended ``(B, 1, 1, slots)``."""

    slot: int
    rows: torch.Tensor
    allowed: torch.Tensor


class TransfoXLMemoryCache(LongctxCache):
    """Projected keys/values of the last ``mem_len`` positions per layer (:class:`TransfoXLLayerKV` rings), which of
    them are real, and the projected position embeddings.

    Equivalent to hidden-state memories (keys are a linear function of them) but each position is projected once,
    when it is processed, instead of at every later step. A decoding step (one token, no gradient) writes one slot
    of each ring and attends to all ``mem_len + 1`` slots, empty ones masked, with the distances of the slots read
    from a table: its work is the same at token 1 as at token 100,000. Longer inputs (the prompt) read the memory
    in time order and run the segment path. ``generate()`` passes the object back through ``cache``; beam search
    calls :meth:`reorder_cache`.
    """

    def __init__(self, n_layer: int, mem_len: int):
        self.mem_len, self.slots = mem_len, mem_len + 1
        self.layers = [TransfoXLLayerKV(self) for _ in range(n_layer)]
        self.valid: torch.Tensor | None = None  # (B, slots) bool: the slot holds a real (not padding) position
        self.pos = 0  # positions written into the rings (memories given as hidden states included)
        self.seen = 0  # positions processed through this cache, padding included
        self.r: dict[int, tuple[int, torch.Tensor]] = {}  # layer -> (K, projected r)
        self._distances: torch.Tensor | None = None  # (slots, slots): distance of slot s when position p is in p % slots

    def memory_length(self) -> int:
        return min(self.pos, self.mem_len)

    def memory_slots(self) -> torch.Tensor:
        """The slots of the memory's positions in time order, ``(M,)``."""
        device = self.valid.device if self.valid is not None else None
        return torch.arange(self.pos - self.memory_length(), self.pos, device=device) % self.slots

    def memory_mask(self) -> torch.Tensor | None:
        """``(B, M)`` bool, True = real, in time order; ``None`` when every memory position is real."""
        if self.valid is None or not self.memory_length():
            return None
        mask = self.valid.index_select(1, self.memory_slots())
        return None if bool(mask.all()) else mask

    def mark(self, real: torch.Tensor | None, first: int, T: int, B: int, device) -> None:
        """Record which of positions ``first ... first + T - 1`` are real (``real`` ``(B, T)`` or None = all)."""
        if self.valid is None:
            self.valid = torch.zeros(B, self.slots, dtype=torch.bool, device=device)
        n = min(T, self.slots)
        idx = torch.arange(first + T - n, first + T, device=device) % self.slots
        self.valid[:, idx] = True if real is None else real[:, -n:].bool()

    def ring_step(self, real: torch.Tensor | None, B: int, window: int | None, device) -> RingStep:
        """Prepare a one-token decoding step at position ``pos``: mark its slot and say what every slot may see."""
        slot = self.pos % self.slots
        self.mark(real, self.pos, 1, B, device)
        if self._distances is None or self._distances.device != self.valid.device:
            p = torch.arange(self.slots, device=self.valid.device)
            self._distances = (p[:, None] - p[None, :]) % self.slots  # (slots, slots)
        distance = self._distances[slot]  # (slots,): pos - (position in slot s), in [0, mem_len]
        allowed = self.valid if window is None else self.valid & (distance < window)[None]
        # r rows are in descending distance order (row c = distance slots - 1 - c), as for a segment of K = slots.
        return RingStep(slot, (self.slots - 1 - distance)[None], allowed[:, None, None, :])

    def projected_r(self, layer_idx: int, K: int, dtype) -> torch.Tensor | None:
        """The layer's projected position embeddings of the last step if it had the same ``K`` (every decoding
        step has ``K = mem_len + 1``), so a step does not re-project ``mem_len`` rows."""
        hit = self.r.get(layer_idx)
        return hit[1] if hit is not None and hit[0] == K and hit[1].dtype == dtype else None

    def batch_size(self) -> int | None:
        return None if self.valid is None else self.valid.shape[0]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for layer in self.layers:
            layer.reorder(beam_idx)
        if self.valid is not None:
            self.valid = self.valid.index_select(0, beam_idx.to(self.valid.device))


class SegmentMemory:
    """The memory one ``forward`` call reads and writes, in whichever form it was given.

    ``mems`` / ``mem_mask``: hidden-state memories (``None``: none yet); ``cache``: a
    :class:`TransfoXLMemoryCache` or ``None``. Once a segment has run through a cache, the memory lives there.
    """

    def __init__(self, mems, mem_mask, cache: TransfoXLMemoryCache | None, mem_len: int):
        self.mems, self.mem_mask, self.cache, self.mem_len = mems, mem_mask, cache, mem_len

    def open(self, seg_real: torch.Tensor | None, L: int, B: int, window: int | None, device) -> int:
        """Start a segment of ``L`` positions (``seg_real`` ``(B, L)`` or None = all real); returns ``K``, the
        number of key positions (memory + segment) its attention sees."""
        self.from_cache = self.cache is not None and self.mems is None  # the memory lives in the cache
        self.ring = None
        if self.from_cache and L == 1 and not torch.is_grad_enabled():  # a decoding step: the fixed-size ring
            self.ring = self.cache.ring_step(seg_real, B, window, device)
            self.M, self.K, self.key_mask = self.mem_len, self.cache.slots, None
        else:
            if self.from_cache:
                self.M, self.mem_mask = self.cache.memory_length(), self.cache.memory_mask()
            else:
                self.M = self.mems[0].shape[1] if self.mems is not None else 0
            self.K = self.M + L
            self.key_mask = None
            if self.mem_mask is not None or seg_real is not None:
                ones = torch.ones(B, self.K, dtype=torch.bool, device=device)
                self.key_mask = torch.cat([
                    self.mem_mask if self.mem_mask is not None else ones[:, :self.M],
                    seg_real if seg_real is not None else ones[:, self.M:],
                ], dim=1)  # (B, K)
        # memory = the last mem_len of memory + segment (4.49's ``TransfoXLModel._update_mems``)
        self.keep = max(0, self.K - self.mem_len)
        self.new_mems = []
        return self.K

    def run(self, i: int, layer, x, r, window, r_w_bias, r_r_bias):
        """Layer ``i`` on the segment's input ``x`` ``(B, L, d_model)`` with its memory; returns its output."""
        if self.from_cache:  # the cache stores this segment's keys/values (a ring step: one slot)
            y, k, v = layer(x, r, self.key_mask, window, r_w_bias, r_r_bias, None, self.cache.layers[i], self.ring)
        else:
            mem = self.mems[i] if self.mems is not None else None
            y, k, v = layer(x, r, self.key_mask, window, r_w_bias, r_r_bias, mem)
        if self.cache is not None and not self.from_cache:  # hidden memories given: the cache starts with them
            self.cache.layers[i].write(k, v, 0)
        elif self.cache is None:  # this layer's input hidden states, detached (section 3.2)
            if self.keep >= self.M:  # the memory is all replaced: no copy of it
                self.new_mems.append(x[:, self.keep - self.M:].detach())
            else:
                self.new_mems.append(torch.cat([self.mems[i][:, self.keep:], x], dim=1).detach())
        return y

    def close(self, L: int, B: int, device) -> None:
        """End the segment: from now on the memory ends with it."""
        cache = self.cache
        if cache is not None:
            if self.ring is None:  # (a ring step marked its slot already)
                first = cache.pos if self.from_cache else 0
                key_mask = self.key_mask
                cache.mark(key_mask[:, self.M:] if key_mask is not None and self.from_cache else key_mask, first,
                           L if self.from_cache else self.K, B, device)
                cache.pos = cache.pos + L if self.from_cache else self.K
            else:
                cache.pos += 1
            cache.seen += L
            self.mems, self.mem_mask = None, None  # the memory lives in the cache now
        else:
            if self.key_mask is not None:
                mem_mask = self.key_mask[:, self.keep:]
                all_real = not torch.compiler.is_compiling() and bool(mem_mask.all())  # (compiled: keep the mask)
                self.mem_mask = None if all_real else mem_mask
            self.mems = self.new_mems

    def projected_r(self, i: int, K: int, dtype, training: bool) -> torch.Tensor | None:
        """Layer ``i``'s projected position embeddings that the cache kept from a segment of the same ``K`` (every
        decoding step has ``K = mem_len + 1``), or None."""
        return None if self.cache is None or training else self.cache.projected_r(i, K, dtype)

    def keep_projected_r(self, i: int, K: int, r: torch.Tensor, training: bool) -> None:
        if self.cache is not None and not training:
            self.cache.r[i] = (K, r)

    def returned(self) -> tuple[tuple[torch.Tensor, ...] | None, torch.Tensor | None]:
        """What ``forward`` returns as ``mems`` and ``mems_mask`` after its last segment."""
        if self.cache is not None:
            return None, self.cache.memory_mask()
        return (tuple(self.mems) if self.mems is not None else None), self.mem_mask
