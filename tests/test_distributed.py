"""Multi-process training on the engines users already launch with: torchrun and accelerate launch (CPU, gloo).

A user's own Trainer script (tests/scripts/ddp_trainer.py) runs on 1 process with batch 4 and on 2 processes with
batch 2 each; with the same global batch and seed the losses and final weights agree to float summation error.
The script turns gradient checkpointing on, leaves DDP's find_unused_parameters off and feeds masked-LM batches
without global tokens: the case that stopped at step 2 ("Expected to have finished reduction in the prior
iteration") before the Longformer's unused global projections got a zero gradient.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "ddp_trainer.py"
VARIANTS = ["longformer", "reformer", "transfo-xl"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stderr[-4000:]}"
    return json.loads(out.read_text())


def _launchers(out: Path, variant: str):
    port = str(_free_port())
    return {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                     "127.0.0.1", "--master_port", port, str(SCRIPT), str(out), variant, "2"],
        # `--cpu` alone starts a single process unless MPI is set up; --multi_gpu starts two, on CPU here.
        "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                       "--main_process_ip", "127.0.0.1", "--main_process_port", port, str(SCRIPT), str(out), variant,
                       "2"],
    }


@pytest.fixture(scope="module", params=VARIANTS)
def single(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "one.json"
    return request.param, _run([sys.executable, str(SCRIPT), str(out), request.param, "4"], out)


def test_two_processes_match_one(single, tmp_path):
    """torchrun for every variant; accelerate launch (the same DDP underneath) once, for the Longformer."""
    variant, one = single
    for launcher in ("torchrun", "accelerate") if variant == "longformer" else ("torchrun",):
        _check_two_match_one(one, _launchers(tmp_path / f"{launcher}.json", variant)[launcher],
                             tmp_path / f"{launcher}.json")


def _check_two_match_one(one, cmd, out):
    two = _run(cmd, out)
    assert (one["world_size"], two["world_size"]) == (1, 2), "the launcher did not start two training processes"
    assert len(two["losses"]) == len(one["losses"]) == 3
    for a, b in zip(one["losses"], two["losses"]):
        assert abs(a - b) <= 1e-5 * abs(a), (one["losses"], two["losses"])
    for name, total in one["weights"].items():
        assert abs(two["weights"][name] - total) <= 1e-4 + 1e-5 * abs(total), name
