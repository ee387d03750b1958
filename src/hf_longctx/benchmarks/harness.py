"""What every benchmark shares: a registry case, interleaved timing with paired medians, peak memory measured
in a fresh process, and the machine facts a report names. See ``benchmarks/README.md`` for the method.

A benchmark module defines its cases, a ``build(impl, max_len)`` and a ``memory_step(model, impl, T)``, and calls
:func:`time_length` per length and :func:`measure_memory` per (side, length). With ``--compile`` it adds the
compiled twins of its training cases (:mod:`hf_longctx.benchmarks.compiled`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

# Where results go unless --out says otherwise: the current folder, never the committed benchmarks/results/.
DEFAULT_OUT_DIR = Path("bench_results")


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # cases of one group at one length are compared with each other
    impl: str
    step: Callable[[dict, int], Callable[[], None]]  # (models, T) -> one step
    correctness: str  # what proves this case computes what it claims
    flops: Callable[[int], float] | None = None  # useful FLOPs of one step, for GFLOP/s
    anchor: str | None = None  # the case this one is compared against: ratio = anchor time / this time
    scaling: float = 1.0  # time ~ T ** scaling, to skip lengths predicted to exceed --max-step-s
    memory: bool = False  # peak RSS in a fresh process per length
    # A torch.compile'd step: its first calls (the cold compile) are timed apart as compile_s, and an error there is
    # the case's "does not compile: ..." instead of the end of the run.
    compiled: bool = False


def does_not_compile(err: BaseException) -> str:
    """What a report says of a case whose compile raised: the error's type and first line (two lines where the first
    only introduces the second, as Dynamo's "backend='inductor' raised:" does)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
    first = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return f"does not compile: {type(err).__name__}: {first[:200]}"


MAX_COMPILE_CALLS = 12  # Dynamo's recompile_limit (8) and a few: beyond it a frame runs eager, compiling nothing


def _warm_up(case: Case, models: dict, T: int) -> tuple[Callable[[], None], float, dict]:
    """The case's step after its warm-up, the seconds of one warm call, and what else the result records.

    A compiled case first runs until a call compiles nothing more (Dynamo's count of frames it converted stands
    still): the cold compile, and the recompiles later calls' guards ask for (grad mode, a module attribute the
    first call changed, a seed drawn per call: the Reformer's, up to Dynamo's recompile_limit). Those calls are its
    ``compile_s`` (``compile_calls`` of them), never a sample."""
    if not case.compiled:
        step = case.step(models, T)
        t0 = time.perf_counter()
        step()  # warm-up, and a first estimate of the cost
        return step, time.perf_counter() - t0, {}
    from torch._dynamo.utils import counters

    t0 = time.perf_counter()
    step = case.step(models, T)
    for calls in range(1, MAX_COMPILE_CALLS + 1):
        converted = counters["frames"]["total"]
        step()
        if calls > 1 and counters["frames"]["total"] == converted:
            break
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0, {"compile_s": compile_s, "compile_calls": calls}


def time_length(T: int, cases: list[Case], models: dict, repeats: int, max_step_s: float, previous: dict) -> dict:
    """Per-round seconds of every case at length T, interleaved: round r runs each case once, in registry order.

    ``samples_s[r]`` of two cases were measured seconds apart, so their ratio is paired: a burst of load from
    another job slows both. ``previous`` maps a case name to ``(T, median_s)`` at a shorter length; cases
    predicted to exceed ``max_step_s`` are skipped, and steps over a few seconds get fewer rounds (None in the
    rounds they sit out), so that a full run stays near ten minutes. A compiled case also records ``compile_s``,
    or, when its compile raises, ``{"skipped": "does not compile: ..."}``.
    """
    steps, rounds, samples, skipped, extra = {}, {}, {}, {}, {}
    if any(case.compiled for case in cases):
        torch._dynamo.reset()  # every length compiles cold; the previous length's graphs are dropped
    for case in cases:
        prev = previous.get(case.name)
        if prev is not None and prev[1] * (T / prev[0]) ** case.scaling > max_step_s:
            skipped[case.name] = f"skipped: predicted {prev[1] * (T / prev[0]) ** case.scaling:.0f} s/step"
            continue
        try:
            steps[case.name], first, extra[case.name] = _warm_up(case, models, T)
        except Exception as err:  # noqa: BLE001 - a compile error is a row of the report, not the end of the run
            if not case.compiled:
                raise
            skipped[case.name] = does_not_compile(err)
            continue
        rounds[case.name] = 1 if repeats == 1 else max(2, min(repeats, int(40 / first)))
        samples[case.name] = []
    for r in range(max(rounds.values(), default=0)):
        for name, step in steps.items():
            if r >= rounds[name]:
                samples[name].append(None)
                continue
            gc.collect()
            t0 = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - t0)
    del steps
    gc.collect()
    out = {name: {"median_s": statistics.median(x for x in s if x is not None), "samples_s": s, **extra[name]}
           for name, s in samples.items()}
    out.update({name: {"skipped": why} for name, why in skipped.items()})
    return out


def paired_median(num: list, den: list) -> float | None:
    """Median over rounds of num[r] / den[r], rounds where both ran."""
    ratios = [a / b for a, b in zip(num, den) if a is not None and b is not None]
    return statistics.median(ratios) if ratios else None


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``); OSError where there is none (not Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def peak_growth(warm_up: Callable[[], None], step: Callable[[], None]) -> dict:
    """In this (fresh) process: peak RSS growth of ``step`` over the process after ``warm_up`` (which pays the
    libraries' one-time buffers and lazy imports). Printed as JSON for :func:`measure_memory`."""
    warm_up()
    gc.collect()
    baseline = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark (Linux >= 4.0)
    step()
    peak = status_kb("VmHWM")
    result = {"peak_growth_mb": (peak - baseline) / 1024, "baseline_mb": baseline / 1024}
    print(json.dumps(result))
    return result


def run_child(module: str, args: tuple[str, ...], timeout_s: float, env: dict | None = None, what: str = "run") -> dict:
    """Run ``python -m module *args`` in a fresh one-thread process and read the JSON of its last output line; a
    timeout or a failure comes back as ``{"skipped": why}``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    try:
        done = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"skipped": f"{what} over {timeout_s:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"skipped": f"failed: {tail[:120]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_memory(module: str, impl: str, T: int, timeout_s: float, extra: tuple[str, ...] = ()) -> dict:
    """Run ``python -m module --memory-child impl T [extra]`` in a fresh process and read its JSON line."""
    # A fixed mmap threshold: every tensor above 128 KiB is its own mapping, returned to the OS when freed, so RSS
    # follows the live tensors (glibc's adaptive threshold would keep freed blocks up to 32 MiB in the heap and blur
    # the peak). The same setting for every side.
    return run_child(module, ("--memory-child", impl, str(T), *extra), timeout_s,
                     env={"MALLOC_MMAP_THRESHOLD_": "131072"}, what="memory run")


def machine_info() -> dict:
    import transformers

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def fmt_s(x: float) -> str:
    return f"{x * 1e3:.0f} ms" if x < 10 else f"{x:.1f} s"


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install 'hf_longctx[bench]'): no plot written", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_outputs(results: dict, out: Path, write_markdown, write_plot) -> None:
    """``out``.json (every sample), ``out``.md (tables; its image link names ``out``.png) and ``out``.png."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_markdown(results, out.with_suffix(".md"))
    write_plot(results, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


def parser(variant: str, doc: str, *, out_name: str, repeats: int, quick: str, lengths: str,
           memory_child_args: tuple[str, ...] = ("IMPL", "T")) -> argparse.ArgumentParser:
    """The flags every benchmark takes (``hf-longctx bench`` forwards them), plus the hidden ``--memory-child``;
    a module adds its own after."""
    p = argparse.ArgumentParser(prog=f"hf-longctx bench {variant}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--lengths", type=int, nargs="+", help=lengths)
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved rounds (default: %(default)s)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--compile", action="store_true",
                   help="also time the training steps of ours and the anchor under torch.compile (Inductor), "
                        "interleaved with the eager ones; cold compile time reported apart")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / out_name,
                   help="output path without suffix (default: %(default)s)")
    p.add_argument("--memory-child", nargs=len(memory_child_args), metavar=memory_child_args, help=argparse.SUPPRESS)
    return p
