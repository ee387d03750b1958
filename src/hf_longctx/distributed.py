"""Leaving a multi-process run without the gloo shutdown race.

When a process that ran a gloo collective lets Python finalise normally, it can abort with SIGABRT ("terminate
called without an active exception") after all its work is done: gloo's worker thread
(``ProcessGroupGloo::runLoop``) still holds tensors from the last collective, and freeing them needs the GIL.
``Py_FinalizeEx`` kills that thread, the forced unwind meets a ``noexcept`` destructor, and ``std::terminate``
runs. This is PyTorch's race (pytorch/pytorch#190489; its fix, PR #179291, was abandoned); ``Trainer.train()``
always ends with such a collective (``store_flos`` gathers a scalar). ``destroy_process_group()`` does not help
while DDP, FSDP or accelerate still hold the group, and a final barrier only moves the race.

What avoids it: once everything is written, flush what Python buffers and end the process with ``os._exit``,
which skips interpreter finalisation (and so the thread kill). Only a process in a group of more than one
takes that exit; a single process, or one without a process group, returns and exits as usual.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["in_process_group", "exit_process_group"]


def in_process_group() -> bool:
    """True when this process belongs to an initialised torch.distributed group of more than one process."""
    torch = sys.modules.get("torch")  # never import torch only to learn that it was not used
    if torch is None:
        return False
    distributed = torch.distributed
    return bool(distributed.is_available() and distributed.is_initialized() and distributed.get_world_size() > 1)


def exit_process_group(code: int = 0) -> None:
    """End this process with ``code`` without the gloo shutdown race, if it is in a group of more than one.

    Call it last, when everything the process writes is written: it flushes ``sys.stdout``, ``sys.stderr`` and
    the logging handlers, then leaves with ``os._exit(code)``; ``atexit`` handlers and finalisers do not run. A
    process that is not in such a group returns from here, and its caller exits as usual.
    """
    if not in_process_group():
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it anyway
            pass
    os._exit(code)
