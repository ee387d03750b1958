"""``Trainer`` callbacks of ``hf-longctx train``: the epoch a collator draws its masks for, and the private
generator of a model that has one (the Reformer's), saved into every checkpoint and restored on ``--resume``.
"""

from __future__ import annotations

from pathlib import Path

from .run_arguments import TrainError


def _epoch_callbacks(collator) -> list:
    """New masks every epoch: tell a masking collator which epoch starts (from the state, so a resumed run agrees)."""
    if not hasattr(collator, "epoch"):
        return []
    import math

    from transformers import TrainerCallback

    class MaskEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            collator.epoch = math.floor((state.epoch or 0) + 1e-6)  # 0.5 when resumed half-way through epoch 0

    return [MaskEpoch()]


PRIVATE_RNG_FILE = "hf_longctx_private_rng.pt"  # in each checkpoint folder, beside Trainer's own rng_state.pth


def _private_rng_callbacks(model, seed: int, resume_from: str | None, log=print) -> list:
    """Models that draw from a private generator (the Reformer: LSH rotations and dropout, never the global RNG)
    get it seeded from ``--seed`` at the start, saved into every checkpoint and restored on ``--resume``, as Trainer
    does for the global RNG; otherwise a resumed run would draw again from the start of the generator."""
    owners = [m for m in model.modules() if hasattr(m, "set_private_rng_state")]
    if not owners:
        return []
    import torch
    from transformers import TrainerCallback

    class PrivateRNG(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            for module in owners:
                module.seed_private_rng(seed)
            if resume_from is None:
                return
            path = Path(resume_from) / PRIVATE_RNG_FILE
            if not path.is_file():  # written before this file existed, or killed between Trainer's save and ours
                log(f"warning: {resume_from} holds no {PRIVATE_RNG_FILE}; the model's private generator (LSH "
                    "rotations, dropout) starts again from --seed, so this resumed run draws other rotations and "
                    "masks than an uninterrupted one would have")
                return
            try:
                states = torch.load(path, weights_only=True)
                if not isinstance(states, list) or len(states) != len(owners):
                    raise ValueError(f"it holds {len(states) if isinstance(states, list) else 'no list of'} "
                                     f"generator states, the model has {len(owners)}")
                for module, saved in zip(owners, states):
                    module.set_private_rng_state(saved)
            except Exception as err:  # a damaged or foreign file: say which, not a pickling traceback
                raise TrainError(f"cannot restore the private generator from {path}: {err}") from None

        def on_save(self, args, state, control, **kwargs):
            if args.should_save:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                staging = folder / f".{PRIVATE_RNG_FILE}.partial"  # renamed when complete: never half a file
                torch.save([m.private_rng_state() for m in owners], staging)
                staging.replace(folder / PRIVATE_RNG_FILE)

    return [PrivateRNG()]
