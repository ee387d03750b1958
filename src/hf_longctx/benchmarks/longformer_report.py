"""The report of ``hf-longctx bench longformer``: ratios and rates derived from the samples, the targets met or
not, the markdown tables and the plot. Reads the constants and cases of :mod:`hf_longctx.benchmarks.longformer`.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from . import compiled
from .harness import fmt_s, paired_median, pyplot
from .longformer import (
    FFN,
    HEADS,
    HIDDEN,
    LAYERS,
    MM_CASE,
    CASES,
    DROPOUT,
    GLOBAL_EVERY,
    INFERENCE_SIDES,
    MODE_KEYS,
    VOCAB,
    W,
    WINDOW,
    mm_flops,
    model_case,
    side,
)


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def derived(results: dict) -> dict:
    """Ratios, GFLOP/s and the FLOP-bound ratios from the raw samples; every ratio is a paired median."""
    by_name = {c.name: c for c in CASES}
    out = {}
    for T_str, row in results["lengths"].items():
        T = int(T_str)
        times = row["time"]
        mm = times.get(MM_CASE, {})
        d = {"mm_gflops": mm_flops(T) / mm["median_s"] / 1e9 if "median_s" in mm else None}
        for name, r in times.items():
            if "median_s" not in r or name not in by_name:
                continue
            case, e = by_name[name], {}
            if case.flops:
                e["gflops"] = case.flops(T) / r["median_s"] / 1e9
                if "samples_s" in mm and name != MM_CASE:
                    # time / (FLOPs / mm rate) and (FLOPs / time) / mm rate, with the mm rate of the same round
                    e["time_over_ideal"] = paired_median(r["samples_s"], mm["samples_s"]) * mm_flops(T) / case.flops(T)
                    e["fraction_of_mm"] = paired_median(mm["samples_s"], r["samples_s"]) * case.flops(T) / mm_flops(T)
            if case.anchor and "samples_s" in times.get(case.anchor, {}):
                e["speedup_vs_anchor"] = paired_median(times[case.anchor]["samples_s"], r["samples_s"])
            d[name] = e
        own = row.get("inference_process", {})
        if all(key in own for key in INFERENCE_SIDES):
            o, t = own["ours/inference"], own["transformers/inference"]
            d["inference_process"] = {"ours_s": statistics.median(o), "transformers_s": statistics.median(t),
                                      "speedup": paired_median(t, o)}
        ours0 = model_case("train, dropout 0", "ours")
        dense = times.get(model_case("train, dropout 0", "roberta_sdpa"), {})
        if "samples_s" in dense and "samples_s" in times.get(ours0, {}):
            d[ours0]["speedup_vs_dense"] = paired_median(dense["samples_s"], times[ours0]["samples_s"])
        out[T] = d
    return out


def _memory(results: dict, T: int, impl: str, mode: str) -> float | None:
    return results["lengths"].get(str(T), {}).get("memory", {}).get(side(impl, mode), {}).get("peak_growth_mb")


def targets(results: dict, der: dict) -> list[tuple[str, str, bool | None]]:
    rows = []

    def speed(mode, T, need):
        x = der.get(T, {}).get(model_case(mode, "ours"), {}).get("speedup_vs_anchor")
        return (f"{mode}: >= {need}x faster than transformers at {T}",
                f"{x:.2f}x" if x else "not measured", None if x is None else x >= need)

    def memory(mode, T, most):
        o, t = _memory(results, T, "ours", mode), _memory(results, T, "transformers", mode)
        return (f"{mode}: peak memory <= {most} of transformers' at {T}",
                f"{o / t:.2f} of theirs ({o:.0f} / {t:.0f} MB)" if o and t else "not measured",
                None if not (o and t) else o / t <= most)

    rows += [speed("train, dropout 0.1", 4096, 1.5), speed("train, dropout 0.1", 8192, 2.0),
             memory("train, dropout 0.1", 8192, 0.5)]
    for T, need in ((4096, 2.0), (8192, 2.75)):
        x = der.get(T, {}).get("inference_process", {}).get("speedup")
        rows.append((f"inference: >= {need}x faster than transformers at {T} (an inference-only process)",
                     f"{x:.2f}x" if x else "not measured", None if x is None else x >= need))
        _, measured, _ = speed("inference", T, need)
        rows.append((f"inference at {T}, in a process that also trains (reported, not judged: the target above "
                     "reads the inference-only process)", measured, None))
    o, t = _memory(results, 8192, "ours", "inference"), _memory(results, 8192, "transformers", "inference")
    rows.append(("inference: peak memory at 8192 (reported)",
                 f"{o / t:.2f} of theirs ({o:.0f} / {t:.0f} MB)" if o and t else "not measured", None))
    rows += [speed("train, dropout 0", 4096, 1.5), speed("train, dropout 0", 8192, 2.0),
             memory("train, dropout 0", 8192, 0.5)]
    for T in sorted(der):
        x = der[T].get("attention op: ours", {}).get("fraction_of_mm")
        if x is not None and T >= 2048:
            rows.append((f"train, dropout 0: attention op >= 50% of the mm rate at {T}", f"{x:.0%}", x >= 0.5))
    return rows


def crossover(der: dict) -> str:
    """Shortest measured length from which the whole model (ours) is faster than dense-SDPA RoBERTa."""
    ours0 = model_case("train, dropout 0", "ours")
    faster = [(T, d[ours0]["speedup_vs_dense"] > 1) for T, d in sorted(der.items())
              if "speedup_vs_dense" in d.get(ours0, {})]
    for i, (T, f) in enumerate(faster):
        if f and all(x for _, x in faster[i:]):
            below = [t for t, _ in faster if t < T]
            return (f"from {T} tokens on" + (f" (slower at {', '.join(map(str, below))})" if below else
                                             " (the shortest length measured)"))
    return "at none of the measured lengths" if faster else "(not measured)"


def write_markdown(results: dict, path: Path) -> None:
    """The markdown report. Long on purpose: its tables one after another, in the order they appear in the file."""
    der = derived(results)
    info = results["machine"]
    lines = [
        "# Longformer on CPU: ours vs transformers, in three modes",
        "",
        f"`hf-longctx bench longformer{' --quick' if results['quick'] else ''}` on {info['date']}. "
        f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs, shared with other jobs; "
        f"load average {results['load_before']} before, {results['load_after']} after), "
        f"**{info['threads']} thread**, torch {info['torch']}, transformers {info['transformers']}, "
        f"Python {info['python']}, float32.",
        "",
        f"Config for every side: hidden {HIDDEN}, {HEADS} heads, {LAYERS} layers, FFN {FFN}, window {WINDOW} "
        f"({W} tokens each side), every {GLOBAL_EVERY}th token global (about 2%; RoBERTa has none), "
        f"vocab {VOCAB}, batch 1, no pooler. Three modes, each side in the same mode: **training with dropout "
        f"{DROPOUT}** (attention probabilities and hidden states: the value every Longformer checkpoint ships, so "
        "what fine-tuning runs), training with dropout 0, and inference (eval mode, `torch.no_grad()`, forward "
        "only). A training step is forward + backward of the last hidden state against a fixed random "
        "cotangent. All cases at one length run interleaved, one step each per round; times are medians of up "
        f"to {results['repeats']} rounds (fewer for steps over a few seconds: see `samples_s` in the json), and "
        "every ratio is the median of the per-round ratios (paired, so a burst of load from another job slows "
        "both sides of a ratio). Peak memory: RSS growth of one step in a fresh process (benchmarks/README.md).",
        "",
    ]

    def tm(t, name):
        r = t.get(name, {})
        return fmt_s(r["median_s"]) if "median_s" in r else r.get("skipped", "not run")

    def mb(T, impl, mode):
        r = results["lengths"][str(T)].get("memory", {}).get(side(impl, mode), {})
        return f"{r['peak_growth_mb']:.0f} MB" if "peak_growth_mb" in r else r.get("skipped", "not run")

    def ratio(T, mode):
        o, t = _memory(results, T, "ours", mode), _memory(results, T, "transformers", mode)
        return f"{o / t:.2f}" if o and t else "-"

    ordered = sorted(results["lengths"].items(), key=lambda kv: int(kv[0]))
    for mode, title in (("train, dropout 0.1", f"Training, dropout {DROPOUT} (the checkpoints' default)"),
                        ("inference", "Inference (eval, no_grad, forward only)")):
        lines += [f"## {title}", "",
                  "| tokens | ours | transformers | speedup | ours time / (FLOPs / mm rate) | peak mem ours | "
                  "peak mem transformers | mem ratio |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for T_str, row in ordered:
            T = int(T_str)
            e = der[T].get(model_case(mode, "ours"), {})
            sp = e.get("speedup_vs_anchor")
            lines.append(
                f"| {T} | {tm(row['time'], model_case(mode, 'ours'))} | "
                f"{tm(row['time'], model_case(mode, 'transformers'))} | {f'{sp:.2f}x' if sp else '-'} | "
                f"{e.get('time_over_ideal', 0):.2f} | {mb(T, 'ours', mode)} | {mb(T, 'transformers', mode)} | "
                f"{ratio(T, mode)} |"
            )
        lines.append("")
    lines += [
        "Inference in a process that only infers (`--inference-child`: a fresh process per length, ours and "
        "transformers interleaved, glibc's malloc untouched). In the table above the inference steps share the "
        "process with the training steps, and transformers' large inference tensors (4 heads x T x 513 scores, "
        "and more) reuse memory those steps freed; in an inference-only process it maps fresh pages for them on "
        "every call. The speedup a user sees depends on which of the two their process is.",
        "",
        "| tokens | ours | transformers | speedup |",
        "|---:|---:|---:|---:|",
    ]
    for T_str, row in ordered:
        e = der[int(T_str)].get("inference_process")
        skipped = row.get("inference_process", {}).get("skipped", "not run")
        lines.append(f"| {T_str} | {fmt_s(e['ours_s'])} | {fmt_s(e['transformers_s'])} | {e['speedup']:.2f}x |"
                     if e else f"| {T_str} | {skipped} | | |")
    lines.append("")
    mode = "train, dropout 0"
    lines += [
        "## Training, dropout 0",
        "",
        "| tokens | ours | transformers | speedup | RoBERTa SDPA (dense) | ours vs dense | ours GFLOP/s | "
        "mm GFLOP/s | ours time / (FLOPs / mm rate) | peak mem ours | peak mem transformers | mem ratio | "
        "peak mem RoBERTa |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for T_str, row in ordered:
        T = int(T_str)
        t, d = row["time"], der[T]
        e = d.get(model_case(mode, "ours"), {})
        sp, sd = e.get("speedup_vs_anchor"), e.get("speedup_vs_dense")
        lines.append(
            f"| {T} | {tm(t, model_case(mode, 'ours'))} | {tm(t, model_case(mode, 'transformers'))} | "
            f"{f'{sp:.2f}x' if sp else '-'} | {tm(t, model_case(mode, 'roberta_sdpa'))} | "
            f"{f'{sd:.2f}x' if sd else '-'} | {e.get('gflops', 0):.1f} | "
            f"{d['mm_gflops'] or 0:.1f} | {e.get('time_over_ideal', 0):.2f} | {mb(T, 'ours', mode)} | "
            f"{mb(T, 'transformers', mode)} | {ratio(T, mode)} | {mb(T, 'roberta_sdpa', mode)} |"
        )
    lines += [
        "",
        f"Ours (training, dropout 0) is faster than dense SDPA RoBERTa {crossover(der)}.",
        "",
        "## Attention alone, forward + backward",
        "",
        "Layer = one self-attention module (q/k/v and global projections + attention, no output dense), same "
        "weights on both sides, dropout 0. Op = `longformer_attention` on `(1, 4, T, 64)` tensors with the "
        "model's window and global tokens (with dropout 0: the fused kernel; with dropout 0.1: the blocked path; "
        "and without global tokens: band only), against dense `F.scaled_dot_product_attention` at the same "
        "shapes. GFLOP/s count only useful FLOPs (2w+1 keys per query, global rows and columns), and `of mm` is "
        "that rate over the same run's torch.mm rate.",
        "",
        "| tokens | layer: ours | layer: transformers | speedup | op: ours | GFLOP/s | of mm | "
        "op, dropout 0.1 | of mm | op: band only | of mm | op: dense SDPA | dense / ours |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for T_str, row in ordered:
        T = int(T_str)
        t, d = row["time"], der[T]
        op, band = d.get("attention op: ours", {}), d.get("attention op: ours, band only", {})
        drop = d.get("attention op: ours, dropout 0.1", {})
        dense_ratio = op.get("speedup_vs_anchor")
        sl = d.get("attention layer: ours", {}).get("speedup_vs_anchor")
        lines.append(
            f"| {T} | {tm(t, 'attention layer: ours')} | {tm(t, 'attention layer: transformers')} | "
            f"{f'{sl:.2f}x' if sl else '-'} | {tm(t, 'attention op: ours')} | {op.get('gflops', 0):.1f} | "
            f"{op.get('fraction_of_mm', 0):.0%} | {tm(t, 'attention op: ours, dropout 0.1')} | "
            f"{drop.get('fraction_of_mm', 0):.0%} | {tm(t, 'attention op: ours, band only')} | "
            f"{band.get('fraction_of_mm', 0):.0%} | {tm(t, 'attention op: dense SDPA')} | "
            f"{f'{dense_ratio:.2f}x' if dense_ratio else '-'} |"
        )
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|:---:|"]
    for what, measured, ok in targets(results, der):
        lines.append(f"| {what} | {measured} | {'yes' if ok else ('no' if ok is False else '-')} |")
    if "compiled" in results:
        lines += [""] + compiled.markdown(
            results["compiled"], f"the training cases' shapes above (dropout {DROPOUT} and 0), {info['threads']} thread")
    lines += ["", "## Cases and the tests that prove them", "", "| case | correctness |", "|---|---|"]
    lines += [f"| {c.name} | `{c.correctness}` |" for c in CASES]
    if "compiled" in results:
        lines.append(f"| every case `..., compiled` | its eager case's; `{compiled.CORRECTNESS}` |")
    lines += ["", f"![time and peak memory against sequence length]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(lines))


def write_plot(results: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    lengths = sorted(int(T) for T in results["lengths"])
    colors = {"ours": "C0", "transformers": "C1", "roberta_sdpa": "C2"}
    styles = {"train, dropout 0.1": ("-", "o"), "train, dropout 0": ("--", "s"), "inference": (":", "^")}
    for case in (c for c in CASES if c.group == "model"):
        impl, mode_key = case.impl.split("/")
        mode = next(m for m, k in MODE_KEYS.items() if k == mode_key)
        ls, marker = styles[mode]
        label = f"{case.name.split(': ')[1]} ({mode})"
        xs = [T for T in lengths if "median_s" in results["lengths"][str(T)]["time"].get(case.name, {})]
        ax_t.plot(xs, [results["lengths"][str(T)]["time"][case.name]["median_s"] for T in xs], ls=ls,
                  marker=marker, color=colors[impl], label=label)
        xs = [T for T in lengths if _memory(results, T, impl, mode)]
        ax_m.plot(xs, [_memory(results, T, impl, mode) for T in xs], ls=ls, marker=marker, color=colors[impl],
                  label=label)
    for ax, title, unit in ((ax_t, "time per step", "seconds"), (ax_m, "peak memory (RSS growth)", "MB")):
        if not any(len(line.get_xdata()) for line in ax.lines):
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
            continue
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.set_xticks(lengths, [str(T) for T in lengths])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Longformer, hidden {HIDDEN}, {HEADS} heads, {LAYERS} layers, window {WINDOW}, 2% global, "
                 f"batch 1, 1 thread ({results['machine']['cpu']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
