"""Compiled training steps beside the eager ones: ``hf-longctx bench VARIANT --compile``.

A compiled case is the twin of an eager training case: the same step, built on ``torch.compile(model)`` (Inductor,
the default backend, default settings: what ``hf-longctx train --compile`` runs) of the same model object, so the
same weights and the same dropout. It is named ``<eager name>, compiled`` and runs in the same interleaved rounds as
the eager cases of its length, so the compiled/eager ratio of a side is paired like every other ratio.
:func:`harness.time_length` times its cold compile apart (``compile_s``: the calls until one compiles nothing more,
never a sample) and turns an error there into the row "does not compile: <first line>".

Every length compiles cold: Dynamo's caches are reset at each length, and a ``--compile`` run gives Inductor an empty
on-disk cache of its own (:func:`fresh_inductor_cache`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Mapping

import torch

from .harness import Case, fmt_s, paired_median

SUFFIX = ", compiled"
# What proves a compiled step of ours computes what the eager one does (tests/model_suite.py, parametrized over the
# variants by tests/test_<variant>_model.py): loss and every gradient equal eager's under Dynamo + AOTAutograd
# (slow tier), and a training step with dropout through Inductor (RUN_INDUCTOR=1).
CORRECTNESS = ("compiled: test_torch_compile_trains_at_batch_1_and_2_as_eager, "
               "test_torch_compile_with_inductor_trains_with_dropout (tests/model_suite.py)")


class CompiledModels(Mapping):
    """A benchmark's models seen through ``torch.compile``: ``m[key]`` wraps ``models[key]`` (its parameters, not a
    copy), once per key, so a twin's step builder is the eager one unchanged."""

    def __init__(self, models: Mapping):
        self.models, self.compiled = models, {}

    def __getitem__(self, key):
        if key not in self.compiled:
            self.compiled[key] = torch.compile(self.models[key])
        return self.compiled[key]

    def __iter__(self):
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)


def twins(cases: list[Case]) -> list[Case]:
    """The compiled twin of each case: same group, side and scaling; its anchor is the anchor's twin."""
    return [Case(case.name + SUFFIX, case.group, case.impl,
                 lambda models, T, case=case: case.step(CompiledModels(models), T),
                 f"{case.correctness}; {CORRECTNESS}" if case.anchor else f"{case.correctness}, torch.compile",
                 anchor=case.anchor + SUFFIX if case.anchor else None, scaling=case.scaling, compiled=True)
            for case in cases]


def fresh_inductor_cache() -> str:
    """Point Inductor at an empty cache folder (a new temporary one) for the rest of this process, so that a compile
    is cold even when an earlier run compiled the same graphs (the FX-graph and AOTAutograd caches would otherwise
    serve them from disk in seconds). The folder (tens of MB) is removed when the process exits. Returns it."""
    from torch._inductor.utils import clear_caches

    # Read at every use (torch/_inductor/runtime/cache_dir_utils.py: cache_dir()); importing transformers already
    # sets it to the shared default, so it is replaced here, and the in-memory caches of paths are cleared with it.
    folder = tempfile.mkdtemp(prefix="hf_longctx_bench_inductor_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    clear_caches()
    return folder


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def summary(times: dict[str, dict], compiled_cases: list[Case]) -> list[dict]:
    """One row per length and compiled case with an anchor (ours): medians, cold compile seconds, compiled/eager
    speed-up of each side and anchor/ours of both kinds, every ratio a paired median. ``times`` maps a length to
    :func:`harness.time_length`'s result."""
    rows = []
    for T, t in times.items():
        for case in (c for c in compiled_cases if c.anchor):
            ours, anchor = case.name.removesuffix(SUFFIX), case.anchor.removesuffix(SUFFIX)
            if ours not in t or anchor not in t:
                continue
            row = {"length": int(T), "case": ours, "anchor": anchor}
            for side, eager, comp in (("ours", ours, case.name), ("anchor", anchor, case.anchor)):
                e, c = t[eager], t.get(comp, {"skipped": "not run"})
                row[f"{side}_eager_s"] = e.get("median_s")
                row[f"{side}_compiled_s"] = c.get("median_s")
                row[f"{side}_compile_s"], row[f"{side}_compile_calls"] = c.get("compile_s"), c.get("compile_calls")
                if "median_s" not in c:
                    row[f"{side}_compiled"] = c["skipped"]
                if "samples_s" in e and "samples_s" in c:
                    row[f"{side}_speedup"] = paired_median(e["samples_s"], c["samples_s"])
            for kind, a, o in (("eager", anchor, ours), ("compiled", case.anchor, case.name)):
                if "samples_s" in t.get(a, {}) and "samples_s" in t.get(o, {}):
                    row[f"{kind}_ratio"] = paired_median(t[a]["samples_s"], t[o]["samples_s"])
            rows.append(row)
    return rows


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _s(row: dict, side: str) -> str:
    if row.get(f"{side}_compiled_s") is not None:
        return fmt_s(row[f"{side}_compiled_s"])
    return row.get(f"{side}_compiled", "not run")


def verdicts(rows: list[dict]) -> list[tuple[str, str, bool | None]]:
    """The compile targets, judged over every row: (target, measured, met)."""
    speed = [(r["length"], r["case"], r["ours_speedup"]) for r in rows if r.get("ours_speedup")]
    ahead = [(r["length"], r["case"], r["compiled_ratio"], r["eager_ratio"]) for r in rows
             if r.get("compiled_ratio") and r.get("eager_ratio")]
    out = []
    if speed:
        worst = min(speed, key=lambda x: x[2])
        out.append(("a compiled training step of ours is never slower than our eager one",
                    f"{sum(x[2] >= 1 for x in speed)} of {len(speed)} rows; worst {worst[2]:.2f}x "
                    f"({worst[1]}, {worst[0]} tokens)", all(x[2] >= 1 for x in speed)))
    else:
        out.append(("a compiled training step of ours is never slower than our eager one", "not measured", None))
    if ahead:
        worst = min(ahead, key=lambda x: x[2] / x[3])
        out.append(("compiled, ours ahead of the compiled anchor by at least the eager ratio",
                    f"{sum(x[2] >= x[3] for x in ahead)} of {len(ahead)} rows; worst {worst[2]:.2f}x against "
                    f"{worst[3]:.2f}x eager ({worst[1]}, {worst[0]} tokens)", all(x[2] >= x[3] for x in ahead)))
    else:
        out.append(("compiled, ours ahead of the compiled anchor by at least the eager ratio", "not measured", None))
    return out


def markdown(rows: list[dict], shapes: str) -> list[str]:
    """The report's section on compiled training: what was run, the table, whether compile paid, the targets."""
    lines = [
        "## Compiled training steps (`--compile`)", "",
        f"`torch.compile(model)` (Inductor, the default backend and settings) of the same model objects as the "
        f"eager cases (same weights, same dropout), train mode, {shapes}. The compiled steps run in the same "
        "interleaved rounds as the eager ones of their length: medians, and paired medians for every ratio. Cold "
        "compile: the calls at a length until one compiles nothing more (their count in brackets; Dynamo's caches "
        "reset per length, Inductor's on-disk cache empty at the start of the run), reported apart, never in a "
        "median. Speed-up = eager / compiled of the same side; anchor / ours > 1 means ours is faster.", "",
        "| tokens | ours: case | ours eager | ours compiled | speed-up | cold compile | anchor eager | "
        "anchor compiled | speed-up | cold compile | anchor / ours, eager | anchor / ours, compiled |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cold = {side: f"{r[f'{side}_compile_s']:.0f} s ({r[f'{side}_compile_calls']})"
                if r.get(f"{side}_compile_s") is not None else "-" for side in ("ours", "anchor")}
        eager = {side: fmt_s(r[f"{side}_eager_s"]) if r.get(f"{side}_eager_s") is not None else "-"
                 for side in ("ours", "anchor")}
        lines.append(f"| {r['length']} | {r['case']} | {eager['ours']} | {_s(r, 'ours')} | "
                     f"{_x(r.get('ours_speedup'))} | {cold['ours']} | {eager['anchor']} | {_s(r, 'anchor')} | "
                     f"{_x(r.get('anchor_speedup'))} | {cold['anchor']} | {_x(r.get('eager_ratio'))} | "
                     f"{_x(r.get('compiled_ratio'))} |")
    speedups = [r["ours_speedup"] for r in rows if r.get("ours_speedup")]
    lo, hi = (f"{min(speedups):.2f}", f"{max(speedups):.2f}") if speedups else ("", "")
    spread = f"{lo}x" if lo == hi else f"{lo}-{hi}x"
    paid = (f"In this run it paid for ours in {sum(x > 1 for x in speedups)} of {len(speedups)} rows (eager / "
            f"compiled {spread})." if speedups else "In this run nothing of ours compiled.")
    lines += ["", "On a CPU, compile is for capture and serving (one graph to export, or to serve from a process that "
              f"compiles once), not for training speed: our eager steps already run fused kernels. {paid}",
              "", "| target | measured | met |", "|---|---|:---:|"]
    for what, measured, ok in verdicts(rows):
        lines.append(f"| {what} | {measured} | {'yes' if ok else ('no' if ok is False else '-')} |")
    return lines + [""]
