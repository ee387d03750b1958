"""The Reformer's private randomness: LSH rotations and dropout seeds drawn from a generator of its own.

Training redraws the rotations every forward (as the paper does) from a private ``torch.Generator`` seeded by the
config's ``hash_seed``; eval uses transformers' rotations for ``torch.manual_seed(hash_seed)``, drawn once. The
global RNG is never read or reseeded (transformers reseeds it on every LSH call). The generator is not a weight,
so a training loop that resumes saves and restores it (:meth:`PrivateRandomness.private_rng_state`).
"""

from __future__ import annotations

import torch

from .lsh_attention import CounterStream, random_rotations


def _generator(seed: int | torch.Tensor | None, device: torch.device) -> torch.Generator | CounterStream | None:
    """A fresh generator for one dropout site, so a recomputation (reversible backward, checkpointing) replays it;
    in a compiled graph (the seed a tensor) a :class:`CounterStream`."""
    if seed is None:
        return None
    if isinstance(seed, torch.Tensor):
        return CounterStream(seed)
    return torch.Generator(device=device).manual_seed(int(seed))


class PrivateRandomness:
    """Mixed into the Reformer model (an ``nn.Module`` with ``config``, ``_num_buckets(T)``, ``_train_rng`` and
    ``_eval_rotations``): where every random draw of a forward comes from."""

    def _rotations(self, num_hashes, num_buckets, dtype, device, generator=None):
        c = self.config
        if generator is not None:  # training: the next draw of the private generator
            return random_rotations(c.num_attention_heads, c.attention_head_size, num_hashes, num_buckets, generator,
                                    dtype=dtype, device=device)
        # eval: transformers' rotations for manual_seed(hash_seed), the same in every layer. Kept, so that a call
        # draws nothing (and torch.jit.trace records a constant, not a generator that a rerun would advance).
        key = (c.hash_seed, c.num_attention_heads, c.attention_head_size, num_hashes, str(num_buckets), dtype, device)
        if key not in self._eval_rotations:
            self._eval_rotations[key] = random_rotations(
                c.num_attention_heads, c.attention_head_size, num_hashes, num_buckets,
                torch.Generator().manual_seed(c.hash_seed), dtype=dtype, device=device,
            )
        return self._eval_rotations[key]

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode:  # eval(): draw the eval rotations now, outside any compiled region (a graph cannot create
            self._draw_eval_rotations()  # the generator they come from); a compiled eval forward finds them
        return self

    def _draw_eval_rotations(self) -> None:
        """The eval rotations of the configured bucket count, in the weights' dtype and device. With
        ``num_buckets=None`` the count follows the length, and each new one is drawn at its first forward."""
        c = self.config
        if "lsh" not in c.attn_layers or c.num_buckets is None:
            return
        weight = next(self.parameters())
        self._rotations(c.num_hashes, c.num_buckets, weight.dtype, weight.device)

    def private_generator(self, device) -> torch.Generator | CounterStream | None:
        """In training, a generator seeded from the model's private RNG, for a head's dropout; None in eval."""
        if not self.training:
            return None
        seed = self._draw_seed()
        return _generator(seed if torch.compiler.is_compiling() else int(seed), device)

    @torch.compiler.disable
    def _draw_seed(self) -> torch.Tensor:
        # Eagerly from the private generator, also in a compiled model (a graph cannot hold a generator): one
        # graph break, and the seed eager would draw.
        return torch.randint(0, 2**62, (1,), generator=self._training_rng())[0]

    @torch.compiler.disable
    def _draw_training_randomness(self, kinds, num_hashes, num_buckets, dtype, device):
        # The rotations of every layer, then two dropout seeds per layer and two for the embeddings and the output.
        g = self._training_rng()
        rotations = [self._rotations(num_hashes, num_buckets, dtype, device, g) if k == "lsh" else None for k in kinds]
        return rotations, torch.randint(0, 2**62, (len(kinds) + 1, 2), generator=g)

    def _training_rng(self) -> torch.Generator:
        """The private generator of training draws, seeded by ``hash_seed`` on first use."""
        if self._train_rng is None:
            self._train_rng = torch.Generator().manual_seed(self.config.hash_seed)
        return self._train_rng

    # The private generator is not a weight, so a checkpoint of the weights does not hold it. A training loop that
    # resumes (hf-longctx train --resume does, through a Trainer callback) saves and restores it with these, so the
    # resumed run draws the rotations and dropout masks the uninterrupted one would have drawn.

    def seed_private_rng(self, seed: int) -> None:
        """Restart the private training generator from ``(hash_seed, seed)``: runs with other seeds draw other
        rotations and dropout masks; the same seed draws the same ones. Touches no global RNG."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        mixed = (self.config.hash_seed * 1_000_003 + seed) % 2**63
        self._train_rng = torch.Generator().manual_seed(mixed)

    def private_rng_state(self) -> torch.Tensor:
        """The private training generator's state (a ``uint8`` tensor), for a checkpoint."""
        return self._training_rng().get_state()

    def set_private_rng_state(self, state: torch.Tensor) -> None:
        """Continue the private training generator from a state :meth:`private_rng_state` returned."""
        expected = self._training_rng().get_state()
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.shape != expected.shape:
            raise ValueError(f"the private generator state must be the uint8 tensor of shape {tuple(expected.shape)} "
                             "that private_rng_state() returned")
        self._training_rng().set_state(state)

    def _randomness(self, T, num_hashes, dtype, device):
        """Per layer: the LSH rotations and dropout seeds of this forward; plus seeds for embeddings and output."""
        c = self.config
        num_buckets = self._num_buckets(T)
        if not self.training:
            rotations = self._rotations(num_hashes, num_buckets, dtype, device) if "lsh" in c.attn_layers else None
            rand = {"rotations": rotations, "num_buckets": num_buckets}
            return [rand] * len(c.attn_layers), [None] * len(c.attn_layers), None
        rotations, seeds = self._draw_training_randomness(c.attn_layers, num_hashes, num_buckets, dtype, device)
        rands = [{"rotations": r, "num_buckets": num_buckets} for r in rotations]
        if not torch.compiler.is_compiling():  # eagerly, ints that seed a generator per dropout site
            seeds = seeds.tolist()
        return rands, list(seeds[:-1]), seeds[-1]
