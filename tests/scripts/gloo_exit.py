"""One gloo collective in each of two processes, then the exit every multi-process run of ours takes.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python gloo_exit.py [--plain | --code N]

``--code N`` leaves through the helper with exit status N (a failed run must still fail). With ``--plain`` the process lets Python finalise as usual instead (to see PyTorch's shutdown race, which aborts
some of those runs with SIGABRT; pytorch/pytorch#190489). Imports only torch and our helper module's file, so
that a launch costs the interpreter and torch alone.
"""

import importlib.util
import sys
from pathlib import Path

import torch
import torch.distributed as dist

# The helper's own file, without importing the hf_longctx package (which loads transformers: seconds a launch).
HELPER = Path(__file__).resolve().parents[2] / "src" / "hf_longctx" / "distributed.py"
spec = importlib.util.spec_from_file_location("hf_longctx_distributed", HELPER)
helper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helper)

dist.init_process_group("gloo")
gathered = [torch.zeros(2) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, torch.tensor([float(dist.get_rank()), 1.0]))  # like Trainer's final store_flos
assert [g[0].item() for g in gathered] == [0.0, 1.0], gathered
assert helper.in_process_group()
print(f"rank {dist.get_rank()} done", flush=True)
if sys.argv[1:] != ["--plain"]:
    helper.exit_process_group(int(sys.argv[2]) if sys.argv[1:2] == ["--code"] else 0)
    raise SystemExit("exit_process_group returned in a process group of two")
