"""Reformer on CPU: ours against transformers' ``ReformerModelWithLMHead`` (and a dense-SDPA GPT-2).

One config for both Reformers: hidden 256, 4 heads of 64, 2 layers (local, LSH), chunks of 64, FFN 512
(transformers' default), byte vocabulary, ``num_buckets = 2 T / 64``, axial positions ``(64, T / 64)``, 1 and
4 hashes, batch 1, one thread, training mode with transformers' default dropout (hidden 0.05, local attention
0.05, LSH attention 0). A step is forward + backward of the LM loss. The third line is GPT-2 of the same width,
depth and FFN with SDPA attention (full causal attention). All cases of a length run interleaved (ours, theirs,
..., GPT-2) and report paired medians. Peak memory of a step is measured in a fresh process per (side, length,
depth); it is measured at every length for the 1-hash pair, and at 2 and 12 layers at 4096 tokens. A case whose
step is predicted (from the previous length) to take over two minutes is skipped, and the output says so.
Decoding: time per generated token with ours' cache at growing positions.

Correctness of ours: tests/test_reformer_parity.py (transformers' logits), tests/test_reformer_ops.py (dense twins),
tests/test_reformer_model.py (reversible = plain gradients, cache rule).

    hf-longctx bench reformer            # full run, 1k to 32k: bench_results/reformer_cpu.{md,png,json}
    hf-longctx bench reformer --quick    # 1024 and 4096, two rounds, no memory
    hf-longctx bench reformer --compile --lengths 2048 --no-dense --no-memory
        # + the 1-hash pair trained compiled, with the default dropout and with dropout 0 (compiled.py)
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

HIDDEN, HEADS, HEAD_DIM, FFN, VOCAB, CHUNK = 256, 4, 64, 512, 256, 64
LENGTHS = (1024, 4096, 16384, 32768)
DECODE_POSITIONS = (256, 1024, 2048, 4096)
DEPTHS = (2, 12)  # memory growth with depth at 4096 tokens
DENSE_MAX = 8192  # GPT-2 above this: its (T x T) attention scores took 24 GB at 16,384 tokens and were OOM-killed


def reformer_fields(T: int, hashes: int, layers: int = 2) -> dict:
    return dict(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=HEADS, attention_head_size=HEAD_DIM,
        attn_layers=[("local", "lsh")[i % 2] for i in range(layers)], num_hashes=hashes,
        num_buckets=max(2, 2 * T // CHUNK), lsh_attn_chunk_length=CHUNK, local_attn_chunk_length=CHUNK,
        axial_pos_shape=[64, max(1, T // 64)], axial_pos_embds_dim=[64, 192], max_position_embeddings=max(T, 64 * 64),
        feed_forward_size=FFN, is_decoder=True, eos_token_id=0, pad_token_id=0,
    )


NO_DROPOUT = dict(hidden_dropout_prob=0.0, local_attention_probs_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0)


def build(impl: str, T: int, layers: int = 2):
    """``ours1``, ``ours4``, ``theirs1``, ``theirs4`` (the digit: hashes) or ``gpt2``; a Reformer's name ending in
    ``-d0`` sets its every dropout to 0 (otherwise transformers' defaults)."""
    torch.manual_seed(0)
    impl, no_dropout = impl.removesuffix("-d0"), impl.endswith("-d0")
    if impl.startswith(("ours", "theirs")):
        fields = {**reformer_fields(T, int(impl[-1]), layers), **(NO_DROPOUT if no_dropout else {})}
    if impl.startswith("ours"):
        from hf_longctx import LongctxReformerConfig, LongctxReformerForCausalLM

        return LongctxReformerForCausalLM(LongctxReformerConfig(**fields))
    if impl.startswith("theirs"):
        from transformers import ReformerConfig, ReformerModelWithLMHead

        return ReformerModelWithLMHead(ReformerConfig(**fields))
    if impl == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=layers, n_head=HEADS, n_inner=FFN,
                            n_positions=T, bos_token_id=0, eos_token_id=0)
        config._attn_implementation = "sdpa"
        return GPT2LMHeadModel(config)
    raise ValueError(f"unknown impl {impl!r}")


def train_step(model, T: int) -> Callable[[], None]:
    model.train()
    ids = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(1))

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def _case(impl: str, label: str, anchor: str | None, correctness: str) -> Case:
    return Case(label, "train", impl, lambda models, T: train_step(models[(impl, T)], T), correctness,
                anchor=anchor, scaling=2.0 if impl == "gpt2" else 1.1, memory=impl != "gpt2")


PARITY = "tests/test_reformer_parity.py (transformers' logits, same hash seed)"
CASES = [
    _case("ours1", "ours, 1 hash", "theirs, 1 hash", PARITY),
    _case("theirs1", "theirs, 1 hash", None, "anchor: transformers.ReformerModelWithLMHead"),
    _case("ours4", "ours, 4 hashes", "theirs, 4 hashes", PARITY),
    _case("theirs4", "theirs, 4 hashes", None, "anchor: transformers.ReformerModelWithLMHead"),
    _case("gpt2", "dense SDPA GPT-2", None, "anchor: transformers.GPT2LMHeadModel(attn_implementation='sdpa')"),
]
# With --compile: the 1-hash pair at dropout 0 too, eager (the baseline of its compiled twins) and compiled. The
# 4-hash pair is not compiled: another two cold compiles per length for the same question.
DROPOUT0_CASES = [
    _case("ours1-d0", "ours, 1 hash, dropout 0", "theirs, 1 hash, dropout 0", PARITY),
    _case("theirs1-d0", "theirs, 1 hash, dropout 0", None, "anchor: transformers.ReformerModelWithLMHead"),
]
COMPILED = ("ours1", "theirs1", "ours1-d0", "theirs1-d0")


def decode_times(positions, repeats: int) -> dict:
    """ms per generated token of ours (1 hash, cache) after a prompt of ``position`` tokens. One cache per
    position, stepped in turn (interleaved, so machine load hits every position alike); each timed step adds one
    token to its cache, so the rounds sit at ``position .. position + repeats``."""
    model = build("ours1", max(positions) + 64 + repeats).eval()
    caches, samples = {}, {P: [] for P in positions}
    with torch.no_grad():
        for P in positions:
            prompt = torch.randint(1, VOCAB, (1, P), generator=torch.Generator().manual_seed(2))
            caches[P] = (model(input_ids=prompt, use_cache=True).cache, prompt[:, -1:])
        for _ in range(3):  # warm-up
            for P in positions:
                model(input_ids=caches[P][1], cache=caches[P][0], use_cache=True)
        for _ in range(repeats):
            for P in positions:
                t0 = time.perf_counter()
                model(input_ids=caches[P][1], cache=caches[P][0], use_cache=True)
                samples[P].append(time.perf_counter() - t0)
    out = {str(P): {"median_ms": sorted(s)[len(s) // 2] * 1e3, "samples_ms": [x * 1e3 for x in s]}
           for P, s in samples.items()}
    medians = [d["median_ms"] for d in out.values()]
    out["max_over_min"] = max(medians) / min(medians)
    return out


def memory_child(impl: str, T: int, layers: int) -> None:
    torch.set_num_threads(1)
    model = build(impl, T, layers)
    step = train_step(model, T)
    peak_growth(step, step)


def derived(results: dict) -> dict:
    out = {"speedup": {}, "vs_dense": {}}
    for T, row in results["train"].items():
        t = row["time"]
        for h in ("1", "4"):
            o, th = t.get(f"ours, {h} hash{'es' if h == '4' else ''}", {}), t.get(f"theirs, {h} hash{'es' if h == '4' else ''}", {})
            if "samples_s" in o and "samples_s" in th:
                out["speedup"].setdefault(T, {})[h] = paired_median(th["samples_s"], o["samples_s"])
            g = t.get("dense SDPA GPT-2", {})
            if "samples_s" in o and "samples_s" in g:
                out["vs_dense"].setdefault(T, {})[h] = paired_median(g["samples_s"], o["samples_s"])
    return out


def write_markdown(results: dict, path: Path) -> None:
    mc, der = results["machine"], derived(results)
    lines = [
        "# Reformer vs transformers' Reformer (and dense SDPA GPT-2), CPU training step", "",
        f"{mc['cpu']}, {mc['threads']} thread, torch {mc['torch']}, transformers {mc['transformers']}, {mc['date']}; "
        f"load {results['load_before']} -> {results['load_after']}; {results['repeats']} interleaved rounds.", "",
        f"hidden {HIDDEN}, {HEADS} heads of {HEAD_DIM}, 2 layers (local, LSH), chunk {CHUNK}, FFN {FFN}, batch 1, "
        "train mode, transformers' default dropout.", "",
        "| length | case | median step | speed-up over transformers | speed-up over dense SDPA |",
        "| --- | --- | --- | --- | --- |",
    ]
    for T, row in results["train"].items():
        for case in CASES:
            r = row["time"].get(case.name, {})
            h = case.impl[-1] if case.impl.startswith("ours") else None
            if not r and case.impl == "gpt2" and int(T) > DENSE_MAX:
                r = {"skipped": f"skipped: over {DENSE_MAX} tokens its T x T attention does not fit in memory"}
            med = fmt_s(r["median_s"]) if "median_s" in r else r.get("skipped", "-")
            sp = f"{der['speedup'].get(T, {}).get(h):.2f}x" if h and der["speedup"].get(T, {}).get(h) else ""
            vd = f"{der['vs_dense'].get(T, {}).get(h):.2f}x" if h and der["vs_dense"].get(T, {}).get(h) else ""
            lines.append(f"| {T} | {case.name} | {med} | {sp} | {vd} |")
    if results.get("memory"):
        lines += ["", "## Peak memory growth of a training step (fresh process)", "", "| case | MB |", "| --- | --- |"]
        for key, m in results["memory"].items():
            lines.append(f"| {key} | " + (f"{m['peak_growth_mb']:.0f}" if "peak_growth_mb" in m else m.get("skipped", "?")) + " |")
    if results.get("decode"):
        dec = results["decode"]
        lines += ["", "## Cached decoding, ours (1 hash)", "",
                  "Interleaved over the positions; median of the steps. Max/min over the positions: "
                  f"{dec['max_over_min']:.2f}.", "", "| position | ms per token |", "| --- | --- |"]
        for P, d in dec.items():
            if P != "max_over_min":
                lines.append(f"| {P} | {d['median_ms']:.2f} |")
    if "compiled" in results:
        lines += [""] + compiled.markdown(results["compiled"], f"the lengths above, 1 hash, transformers' default "
                                          f"dropout and dropout 0, {mc['threads']} thread")
    lines += ["", "Correctness: " + "; ".join(f"{c.name} -> {c.correctness}" for c in CASES), "",
              f"![training step time and peak memory against length]({path.with_suffix('.png').name})", ""]
    path.write_text("\n".join(lines))


def write_plot(results: dict, path: Path) -> None:
    """Two panels against length: seconds per training step (every case) and peak memory growth (1 hash pair)."""
    plt = pyplot()
    if plt is None:
        return
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    lengths = [int(T) for T in results["train"]]
    for case in CASES:
        xs, ys = [], []
        for T in results["train"]:
            r = results["train"][T]["time"].get(case.name, {})
            if "median_s" in r:
                xs.append(int(T))
                ys.append(r["median_s"])
        ax_t.plot(xs, ys, "o-", label=case.name)
    for impl, name in (("ours1", "ours, 1 hash"), ("theirs1", "theirs, 1 hash")):
        points = [(int(T), m["peak_growth_mb"]) for T in results["train"]
                  if "peak_growth_mb" in (m := results.get("memory", {}).get(f"{impl} T={T} 2 layers", {}))]
        if points:
            ax_m.plot(*zip(*points), "o-", label=name)
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths)
        ax.set_xticklabels([str(x) for x in lengths])
        ax.set_xlabel("tokens")
        ax.legend()
    ax_t.set_ylabel("seconds per training step")
    ax_t.set_title("Reformer training step, 1 thread")
    ax_m.set_ylabel("peak RSS growth of a step (MB)")
    ax_m.set_title("Peak memory, 2 layers (fresh process)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = parser("reformer", __doc__, out_name="reformer_cpu", repeats=5,
                       quick="1024 and 4096, two rounds, no memory", lengths=f"default {' '.join(map(str, LENGTHS))}",
                       memory_child_args=("IMPL", "T", "LAYERS"))
    p.add_argument("--no-dense", action="store_true", help="skip the dense GPT-2 line")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]), int(args.memory_child[2]))
        return
    lengths = args.lengths or ([1024, 4096] if args.quick else list(LENGTHS))
    repeats = 2 if args.quick else args.repeats
    cases = [c for c in CASES if not (args.no_dense and c.impl == "gpt2")]
    compiled_cases = []
    if args.compile:
        compiled.fresh_inductor_cache()
        cases += DROPOUT0_CASES
        compiled_cases = compiled.twins([c for c in cases if c.impl in COMPILED])
        cases += compiled_cases
    results = {"machine": machine_info(), "quick": args.quick, "repeats": repeats, "load_before": load_average(),
               "train": {}}
    t_start, previous = time.perf_counter(), {}
    for T in lengths:
        if T > DENSE_MAX:  # transformers' GPT-2 passes a (T x T) mask, so CPU SDPA materialises T x T scores
            cases = [c for c in cases if c.impl != "gpt2"]
        models = {(c.impl, T): build(c.impl, T) for c in cases if not c.compiled}  # twins compile these
        row = time_length(T, cases, models, repeats, 120.0, previous)
        results["train"][str(T)] = {"time": row}
        previous.update({name: (T, r["median_s"]) for name, r in row.items() if "median_s" in r})
        del models
        print(f"[{time.perf_counter() - t_start:5.0f} s] {T} done", flush=True)
    if not (args.quick or args.no_memory):
        module = __name__ if __name__ != "__main__" else "hf_longctx.benchmarks.reformer"
        results["memory"] = {}
        for impl in ("ours1", "theirs1"):
            for T in lengths:
                if any("median_s" in results["train"][str(T)]["time"].get(c.name, {}) for c in CASES if c.impl == impl):
                    results["memory"][f"{impl} T={T} 2 layers"] = measure_memory(module, impl, T, 900.0, (str(2),))
            for layers in DEPTHS:
                if layers == 2 and 4096 in lengths:
                    continue  # measured above
                results["memory"][f"{impl} T=4096 {layers} layers"] = measure_memory(module, impl, 4096, 900.0,
                                                                                     (str(layers),))
        print(f"[{time.perf_counter() - t_start:5.0f} s] memory done", flush=True)
    results["decode"] = decode_times(DECODE_POSITIONS if not args.quick else (256, 1024), 9 if args.quick else 31)
    results["load_after"] = load_average()
    results["wall_s"] = time.perf_counter() - t_start
    results["derived"] = derived(results)
    if compiled_cases:
        results["compiled"] = compiled.summary({T: r["time"] for T, r in results["train"].items()}, compiled_cases)
    write_outputs(results, args.out, write_markdown, write_plot)


if __name__ == "__main__":
    main()
