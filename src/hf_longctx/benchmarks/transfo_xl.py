"""Transformer-XL on CPU against transformers' GPT-2 with SDPA, same width and depth.

Config for both: d_model 256, 4 layers, 4 heads of 64, FFN 1024, byte vocabulary (256), batch 4, one thread.

- Training: ours reads a segment of 256 tokens with a memory of 256 (the memory of the previous segment), so
  every token sees up to 512 positions; GPT-2 sees the same total context at once (512 tokens). Compared per
  trained token: ours trains 4 x 256 tokens a step, GPT-2 4 x 512. ``torch.mm`` of the FFN's shape gives the
  dense-matmul rate of the same run, against which ours' FLOP count is set (time / (FLOPs / rate)).
- Decoding: one token per row with the cache, at positions 100 ... 2,000 (the cache prepared by a prefill; GPT-2's
  cache is cropped back after every timed step so the position stays put). Ours decodes over a ring of
  ``mem_len + 1`` = 257 slots: the same work at every position, from the first token on.
- Peak memory of one training step in a fresh process per side.

All cases of a group run interleaved (ours, GPT-2, ours, ...) and report paired medians. Correctness of ours:
tests/test_transfo_xl_parity.py (transformers 4.49 outputs) and tests/test_transfo_xl_model.py (cached = uncached
generation).

    hf-longctx bench transfo-xl            # full run, a few minutes: bench_results/transfo_xl_cpu.{md,png,json}
    hf-longctx bench transfo-xl --compile  # + the training steps of ours and GPT-2 compiled (compiled.py)
    hf-longctx bench transfo-xl --quick    # smoke run
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from . import compiled
from .harness import (
    Case, fmt_s, load_average, machine_info, measure_memory, paired_median, parser, peak_growth, pyplot,
    time_length, write_outputs,
)

D_MODEL, LAYERS, HEADS, D_HEAD, FFN, VOCAB = 256, 4, 4, 64, 1024, 256
BATCH, SEGMENT, MEM = 4, 256, 256
CONTEXT = SEGMENT + MEM  # what GPT-2 sees at once
POSITIONS = (100, 500, 1000, 2000)
MM_SHAPE = (BATCH * SEGMENT, D_MODEL, FFN)  # (M, K, N) of the anchor GEMM: the FFN's first projection
TRAIN_T = CONTEXT  # the "length" key under which the training group is stored


def build(impl: str):
    torch.manual_seed(0)
    if impl == "ours":
        from hf_longctx import LongctxTransfoXLConfig, LongctxTransfoXLForCausalLM

        return LongctxTransfoXLForCausalLM(LongctxTransfoXLConfig(
            vocab_size=VOCAB, d_model=D_MODEL, n_head=HEADS, d_head=D_HEAD, d_inner=FFN, n_layer=LAYERS,
            segment_length=SEGMENT, mem_len=MEM, dropout=0.0))
    if impl == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=VOCAB, n_embd=D_MODEL, n_layer=LAYERS, n_head=HEADS, n_inner=FFN,
                            n_positions=max(POSITIONS) + 64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=0, eos_token_id=0)
        config._attn_implementation = "sdpa"
        return GPT2LMHeadModel(config)
    raise ValueError(f"unknown impl {impl!r}")


# ------------------------------------------------------------------------------------------------ FLOPs (2 per MAC)


def ours_train_flops() -> float:
    """FLOPs one training step of ours must do: forward + backward, counting what the model needs, not what an
    implementation happens to compute. Per layer: q/k/v of the segment, k/v of the memory, r_net over the 512
    distances, the output projection, the FFN, and attention with two score terms (content and position) and the
    value product over memory + segment keys, **causal** (query i sees M + i + 1 keys; the dense T x K blocks
    computed in practice are 4/3 of that); plus the softmax head. Backward is 2x forward (input and weight
    gradients), except for the memory's k/v and r_net, whose inputs (detached memory, constant sinusoids) need no
    gradient: 1x. LayerNorm, softmax, embedding not counted."""
    B, T, M, C, HD = BATCH, SEGMENT, MEM, D_MODEL, HEADS * D_HEAD
    keys = T * M + T * (T + 1) // 2  # causal: query i sees M + i + 1 keys
    full_backward = (2 * B * T * C * 3 * HD + 2 * B * T * HD * C + 2 * B * T * C * FFN * 2 + 3 * 2 * B * HD * keys)
    weight_only = 2 * B * M * C * 2 * HD + 2 * (M + T) * C * HD
    return LAYERS * (3 * full_backward + 2 * weight_only) + 3 * 2 * B * T * C * VOCAB


def mm_flops() -> float:
    M, K, N = MM_SHAPE
    return 2 * M * K * N


# ------------------------------------------------------------------------------------------------ steps


def train_step(model, impl: str) -> Callable[[], None]:
    g = torch.Generator().manual_seed(1)
    model.train()
    if impl == "ours":
        ids = torch.randint(0, VOCAB, (BATCH, SEGMENT), generator=g)
        with torch.no_grad():  # a full memory, from the eager model: a compiled one compiles only the step
            mems = getattr(model, "_orig_mod", model)(torch.randint(0, VOCAB, (BATCH, MEM), generator=g)).mems

        def step():
            model(ids, mems=mems, labels=ids).loss.backward()
            model.zero_grad(set_to_none=True)
    else:
        ids = torch.randint(0, VOCAB, (BATCH, CONTEXT), generator=g)

        def step():
            model(ids, labels=ids).loss.backward()
            model.zero_grad(set_to_none=True)

    return step


def decode_step(model, impl: str, position: int) -> Callable[[], None]:
    """One cached decoding step of every row at ``position`` (the number of tokens already processed)."""
    g = torch.Generator().manual_seed(2)
    model.eval()
    prompt = torch.randint(0, VOCAB, (BATCH, position), generator=g)
    token = torch.randint(0, VOCAB, (BATCH, 1), generator=g)
    with torch.no_grad():
        if impl == "ours":
            cache = model(prompt, use_cache=True).cache

            def step():
                with torch.no_grad():
                    model(token, cache=cache, use_cache=True)  # the cache stays at mem_len positions
        else:
            from transformers import DynamicCache

            cache = DynamicCache(config=model.config)
            model(prompt, cache=cache, use_cache=True)

            def step():
                with torch.no_grad():
                    model(token, cache=cache, use_cache=True)
                    cache.crop(-1)  # back to the same position for the next round

    return step


FLAT_CALLS = 20  # decoding calls per timed step of the flatness group: one call (~10 ms) is too short to time alone


def flat_step(model, position: int) -> Callable[[], None]:
    """``FLAT_CALLS`` decoding steps of ours from ``position``, then the cache is put back at ``position`` (which
    slots are real and the counters; the slots written meanwhile are masked again), so every timed step of a
    position starts there."""
    g = torch.Generator().manual_seed(2)
    model.eval()
    prompt = torch.randint(0, VOCAB, (BATCH, position), generator=g)
    token = torch.randint(0, VOCAB, (BATCH, 1), generator=g)
    with torch.no_grad():
        cache = model(prompt, use_cache=True).cache
    pos, seen, valid = cache.pos, cache.seen, cache.valid.clone()

    def step():
        with torch.no_grad():
            for _ in range(FLAT_CALLS):
                model(token, cache=cache, use_cache=True)
        cache.pos, cache.seen = pos, seen
        cache.valid.copy_(valid)

    return step


def mm_step() -> Callable[[], None]:
    M, K, N = MM_SHAPE
    a, b, out = torch.randn(M, K), torch.randn(K, N), torch.empty(M, N)
    return lambda: torch.mm(a, b, out=out)


PARITY = "tests/test_transfo_xl_parity.py::test_three_segments_match_4_49"
GENERATION = "tests/test_transfo_xl_model.py::test_cached_generation_equals_the_uncached_loop"
TRAIN_CASES = [
    Case("train: ours (256 + mem 256)", "train", "ours", lambda m, T: train_step(m["ours"], "ours"), PARITY,
         flops=lambda T: ours_train_flops(), anchor="train: GPT-2 SDPA (512)", memory=True),
    Case("train: GPT-2 SDPA (512)", "train", "gpt2", lambda m, T: train_step(m["gpt2"], "gpt2"),
         "anchor: transformers.GPT2LMHeadModel(attn_implementation='sdpa')", memory=True),
    Case("torch.mm (1024,256)@(256,1024)", "anchor", "mm", lambda m, T: mm_step(), "anchor: torch.mm",
         flops=lambda T: mm_flops()),
]
DECODE_CASES = [
    Case("decode: ours (cache of 256)", "decode", "ours", lambda m, P: decode_step(m["ours"], "ours", P), GENERATION,
         anchor="decode: GPT-2 SDPA (KV cache)"),
    Case("decode: GPT-2 SDPA (KV cache)", "decode", "gpt2", lambda m, P: decode_step(m["gpt2"], "gpt2", P),
         "anchor: transformers.GPT2LMHeadModel with DynamicCache"),
    # A fixed amount of work timed in the same rounds: time / mm time is comparable across positions even when the
    # machine's load changes between them (the flatness target).
    Case("torch.mm (1024,256)@(256,1024) [decode rounds]", "anchor", "mm", lambda m, P: mm_step(), "anchor: torch.mm"),
]




def flat_cases(positions) -> list[Case]:
    """Ours at every decoding position in the same interleaved rounds: the flatness target compares positions
    measured seconds apart (a group per position, run one after another, mixes in the load's drift)."""
    return [Case(f"flat: ours at {P}", "flat", "ours", lambda m, T, P=P: flat_step(m["ours"], P), GENERATION)
            for P in positions]


def memory_child(impl: str, T: int) -> None:
    torch.set_num_threads(1)
    model = build(impl)
    step = train_step(model, impl)
    peak_growth(step, step)


# ------------------------------------------------------------------------------------------------ report


def derived(results: dict) -> dict:
    train = results["train"]["time"]
    ours, gpt, mm = (train.get(c.name, {}) for c in TRAIN_CASES)
    out = {}
    if "samples_s" in ours and "samples_s" in gpt:
        # per token: ours trains BATCH * SEGMENT tokens a step, GPT-2 BATCH * CONTEXT
        out["train_per_token_ratio"] = paired_median(ours["samples_s"], gpt["samples_s"]) * CONTEXT / SEGMENT
        out["ours_us_per_token"] = ours["median_s"] / (BATCH * SEGMENT) * 1e6
        out["gpt2_us_per_token"] = gpt["median_s"] / (BATCH * CONTEXT) * 1e6
    if "samples_s" in ours and "samples_s" in mm:
        out["mm_gflops"] = mm_flops() / mm["median_s"] / 1e9
        out["ours_gflops"] = ours_train_flops() / ours["median_s"] / 1e9
        out["time_over_flop_ideal"] = paired_median(ours["samples_s"], mm["samples_s"]) * mm_flops() / ours_train_flops()
    decode = {}
    for P, row in results["decode"].items():
        o, g, mm = (row["time"].get(c.name, {}) for c in DECODE_CASES)
        if "samples_s" in o and "samples_s" in g:
            decode[P] = {"ours_ms": o["median_s"] * 1e3, "gpt2_ms": g["median_s"] * 1e3,
                         "ratio": paired_median(o["samples_s"], g["samples_s"])}
            if "samples_s" in mm:  # in units of the mm anchor of the same rounds
                decode[P]["ours_in_mm"] = paired_median(o["samples_s"], mm["samples_s"])
                decode[P]["gpt2_in_mm"] = paired_median(g["samples_s"], mm["samples_s"])
    out["decode"] = decode
    flat = results.get("flat", {}).get("time", {})
    names = {p: f"flat: ours at {p}" for p in results.get("flat", {}).get("positions", [])}
    first = names[min(names, key=int)] if names else None
    out["flat"] = {str(p): {"ms_per_call": flat[n]["median_s"] / FLAT_CALLS * 1e3,
                            "vs_first": paired_median(flat[n]["samples_s"], flat[first]["samples_s"])}
                   for p, n in names.items() if "samples_s" in flat.get(n, {})}
    mem = results["train"].get("memory", {})
    o, g = mem.get("ours", {}).get("peak_growth_mb"), mem.get("gpt2", {}).get("peak_growth_mb")
    if o and g:
        out["memory_mb"] = {"ours": o, "gpt2": g, "ratio": o / g}
    return out


def targets(der: dict) -> list[tuple[str, str, bool | None]]:
    rows = []
    x = der.get("train_per_token_ratio")
    rows.append(("training time per token <= 1.4x GPT-2 at 512", f"{x:.2f}x" if x else "not measured",
                 None if x is None else x <= 1.4))
    x = der.get("time_over_flop_ideal")
    rows.append(("training step <= 1.35x its FLOPs / dense-matmul rate", f"{x:.2f}x" if x else "not measured",
                 None if x is None else x <= 1.35))
    dec = der.get("decode", {})
    if dec:
        worst = max(d["ratio"] for d in dec.values())
        rows.append(("decode per token <= 1.5x GPT-2 with KV cache (every position)", f"worst {worst:.2f}x",
                     worst <= 1.5))
        ps = sorted(dec, key=int)
        flat = der.get("flat", {})
        if len(flat) >= 2:
            fs = sorted(flat, key=int)
            ratios = [flat[p]["vs_first"] for p in fs]
            spread = max(ratios + [1.0]) / min(ratios + [1.0])
            grow = dec[ps[-1]]["gpt2_ms"] / dec[ps[0]]["gpt2_ms"]
            rows.append((f"ours' decode flat from {fs[0]} to {fs[-1]} (max/min of per-position times, interleaved "
                         f"rounds of {FLAT_CALLS} steps)", f"{spread:.2f} (GPT-2 {ps[-1]} vs {ps[0]}: {grow:.2f}x)",
                         spread <= 1.2))
    m = der.get("memory_mb")
    rows.append(("peak training memory <= GPT-2's at 512",
                 f"{m['ratio']:.2f} of GPT-2's ({m['ours']:.0f} / {m['gpt2']:.0f} MB)" if m else "not measured",
                 None if not m else m["ratio"] <= 1.0))
    return rows


def write_markdown(results: dict, path: Path) -> None:
    der = derived(results)
    mc = results["machine"]
    lines = [
        "# Transformer-XL vs GPT-2 (SDPA), CPU", "",
        f"{mc['cpu']}, {mc['threads']} thread, torch {mc['torch']}, transformers {mc['transformers']}, {mc['date']}; "
        f"load {results['load_before']} -> {results['load_after']}; {results['repeats']} interleaved rounds; "
        f"{'QUICK run' if results['quick'] else 'full run'}.", "",
        f"d_model {D_MODEL}, {LAYERS} layers, {HEADS} heads, FFN {FFN}, vocabulary {VOCAB}, batch {BATCH}. Ours: "
        f"segment {SEGMENT} + memory {MEM}; GPT-2: {CONTEXT} tokens at once.", "",
        "| target | measured | met |", "| --- | --- | --- |",
    ]
    for name, value, ok in targets(der):
        lines.append(f"| {name} | {value} | {'yes' if ok else 'no' if ok is not None else '-'} |")
    lines += ["", "## Training", "", "| case | median step | per token | GFLOP/s |", "| --- | --- | --- | --- |"]
    train = results["train"]["time"]
    for case, tokens in zip(TRAIN_CASES, (BATCH * SEGMENT, BATCH * CONTEXT, None)):
        r = train.get(case.name, {})
        if "median_s" in r:
            per = f"{r['median_s'] / tokens * 1e6:.0f} us" if tokens else "-"
            gf = f"{case.flops(0) / r['median_s'] / 1e9:.1f}" if case.flops else "-"
            lines.append(f"| {case.name} | {fmt_s(r['median_s'])} | {per} | {gf} |")
    lines += ["", "## Decoding (one token per row, batch 4)", "", "| position | ours | GPT-2 | ours / GPT-2 |",
              "| --- | --- | --- | --- |"]
    for P, d in sorted(der.get("decode", {}).items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {P} | {d['ours_ms']:.2f} ms | {d['gpt2_ms']:.2f} ms | {d['ratio']:.2f} |")
    if der.get("flat"):
        lines += ["", f"## Flatness: ours at every position in the same rounds ({FLAT_CALLS} steps a round)", "",
                  "| position | ms per step | time / time at the first position |", "| --- | --- | --- |"]
        for P, d in sorted(der["flat"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {P} | {d['ms_per_call']:.2f} | {d['vs_first']:.3f} |")
    if "memory" in results["train"]:
        lines += ["", "## Peak memory of a training step (fresh process)", ""]
        for impl, m in results["train"]["memory"].items():
            lines.append(f"- {impl}: " + (f"{m['peak_growth_mb']:.0f} MB" if "peak_growth_mb" in m else m.get("skipped", "?")))
    if "compiled" in results:
        lines += [""] + compiled.markdown(results["compiled"], f"the training shapes above (ours {SEGMENT} + memory "
                                          f"{MEM}, GPT-2 {CONTEXT}; dropout 0 on both), {mc['threads']} thread")
    lines += ["", "Correctness: " + "; ".join(f"{c.name} -> {c.correctness}" for c in TRAIN_CASES + DECODE_CASES), "",
              f"![decode time per position]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(lines))


def write_plot(results: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    dec = derived(results).get("decode", {})
    ps = sorted(dec, key=int)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([int(p) for p in ps], [dec[p]["ours_ms"] for p in ps], "o-", label="ours (cache of 256)")
    ax.plot([int(p) for p in ps], [dec[p]["gpt2_ms"] for p in ps], "s-", label="GPT-2 SDPA (KV cache)")
    ax.set_xlabel("position")
    ax.set_ylabel("ms per decoding step (batch 4)")
    ax.set_title("Transformer-XL vs GPT-2 decoding, 1 thread")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = parser("transfo-xl", __doc__, out_name="transfo_xl_cpu", repeats=9,
                       quick="decode at 300 and 1000 only, two rounds",
                       lengths=f"decode positions, default {' '.join(map(str, POSITIONS))}")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    positions = args.lengths or ([300, 1000] if args.quick else list(POSITIONS))
    repeats = 2 if args.quick else args.repeats
    results = {"machine": machine_info(), "quick": args.quick, "repeats": repeats, "load_before": load_average()}
    models = {impl: build(impl) for impl in ("ours", "gpt2")}
    t_start = time.perf_counter()
    compiled_cases = []
    if args.compile:  # both sides as the benchmark trains them: dropout 0
        compiled.fresh_inductor_cache()
        compiled_cases = compiled.twins([c for c in TRAIN_CASES if c.group == "train"])
    results["train"] = {"time": time_length(TRAIN_T, TRAIN_CASES + compiled_cases, models, repeats, 600.0, {})}
    if compiled_cases:
        results["compiled"] = compiled.summary({str(TRAIN_T): results["train"]["time"]}, compiled_cases)
    if not args.no_memory:
        module = __name__ if __name__ != "__main__" else "hf_longctx.benchmarks.transfo_xl"
        results["train"]["memory"] = {c.impl: measure_memory(module, c.impl, TRAIN_T, timeout_s=300.0)
                                      for c in TRAIN_CASES if c.memory}
    print(f"[{time.perf_counter() - t_start:5.0f} s] training done", flush=True)
    results["decode"] = {}
    for P in positions:
        results["decode"][str(P)] = {"time": time_length(P, DECODE_CASES, models, max(repeats, 5), 600.0, {})}
        print(f"[{time.perf_counter() - t_start:5.0f} s] decode at {P}", flush=True)
    results["flat"] = {"positions": positions,
                       "time": time_length(0, flat_cases(positions), models, max(repeats, 9), 600.0, {})}
    print(f"[{time.perf_counter() - t_start:5.0f} s] flatness", flush=True)
    results["load_after"] = load_average()
    results["wall_s"] = time.perf_counter() - t_start
    results["derived"] = derived(results)
    write_outputs(results, args.out, write_markdown, write_plot)


if __name__ == "__main__":
    main()
