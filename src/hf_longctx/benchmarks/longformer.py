"""Longformer on CPU: ours against transformers' ``LongformerModel`` (and a dense-SDPA RoBERTa), in three modes.

The modes are the ways users run a model: training with the checkpoints' dropout (0.1 on the attention
probabilities and the hidden states: the headline), training with dropout 0, and inference (eval mode,
``torch.no_grad()``, forward only). Each mode compares both sides in that same mode. One config for every side
(hidden 256, 4 heads, 2 layers, FFN 1024, window 256, 2% global tokens, batch 1, one thread). Every case in
``CASES`` names the test that proves it computes the right thing; all cases at a length run interleaved in one
process (ours, theirs, ours, theirs, ...) and report medians, so a machine shared with other jobs slows every
side alike. Peak memory is measured in a fresh process per (side, mode, length). See benchmarks/README.md for
the FLOP formula and the method.

    hf-longctx bench longformer                 # full run, ~15-20 min: bench_results/longformer_cpu.{md,png,json}
    hf-longctx bench longformer --quick         # smoke run, 1024 and 2048, one repeat, < 2 min
    hf-longctx bench longformer --out benchmarks/results/longformer_cpu   # refresh the results of record
    hf-longctx bench longformer --compile --lengths 2048 --skip op: layer: inference RoBERTa --no-memory
                                                # + compiled training steps of ours and transformers (compiled.py)
    python -m hf_longctx.benchmarks.longformer --sweep-blocks  # block sizes of the fused attention op
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F

from . import compiled
from .harness import (
    Case,
    fmt_s,
    load_average,
    machine_info,
    measure_memory,
    parser,
    peak_growth,
    run_child,
    time_length,
    write_outputs,
)


# --------------------------------------------------------------------------------------------------------------------
# The shared config
# --------------------------------------------------------------------------------------------------------------------

HIDDEN, HEADS, LAYERS, FFN = 256, 4, 2, 1024
WINDOW = 256  # transformers' attention_window: every token sees WINDOW // 2 tokens on each side
W = WINDOW // 2
VOCAB = 50265  # RoBERTa's
GLOBAL_EVERY = 50  # every 50th token is global: about 2%
LENGTHS = (1024, 2048, 4096, 8192)
DROPOUT = 0.1  # every Longformer checkpoint's attention_probs_dropout_prob and hidden_dropout_prob


# mode -> (train mode?, dropout of the config). Inference runs the checkpoints' config in eval mode.
MODES = {"train, dropout 0.1": (True, DROPOUT), "train, dropout 0": (True, 0.0), "inference": (False, DROPOUT)}
MODE_KEYS = {"train, dropout 0.1": "train-0.1", "train, dropout 0": "train-0", "inference": "inference"}
MM_SHAPE = (HIDDEN, FFN)  # the anchor GEMM: (T, 256) @ (256, 1024), the FFN's first projection
MM_CASE = "torch.mm (T,256)@(256,1024)"  # the anchor GEMM's case name


def n_global(T: int) -> int:
    return math.ceil(T / GLOBAL_EVERY)


def global_positions(T: int) -> torch.Tensor:
    return torch.arange(0, T, GLOBAL_EVERY)


# --------------------------------------------------------------------------------------------------------------------
# FLOP counts (multiply-add = 2 FLOPs; backward = 2x forward, so a training step is 3x the forward)
# --------------------------------------------------------------------------------------------------------------------


def band_keys(T: int, w: int = W) -> int:
    """Sum over queries of the keys inside ``|i - j| <= w``: ``T (2w + 1)`` less the clipped corners."""
    if T <= w:
        return T * T
    return T * (2 * w + 1) - w * (w + 1)


def attention_flops(T: int, G: int, C: int = HIDDEN, w: int = W) -> float:
    """Forward FLOPs of one layer's attention: band, every query on the G global keys, G global rows on all T."""
    qk_and_pv = 2 * 2 * C  # one score (q.k over C = H * D) and its weighted value: 2 C multiply-adds
    return qk_and_pv * (band_keys(T, w) + T * G + G * T)


def model_flops(T: int, G: int, C: int = HIDDEN, Fd: int = FFN, layers: int = LAYERS) -> float:
    """Forward + backward FLOPs of the encoder (embeddings, LayerNorm, GELU and softmax not counted)."""
    projections = 2 * T * C * 3 * C + 2 * G * C * C + 2 * T * C * 2 * C + 2 * T * C * C
    #             q, k, v (all T)     q_global (G)    k_global, v_global (all T, as transformers)   output dense
    ffn = 2 * T * C * Fd * 2
    return 3 * layers * (projections + ffn + attention_flops(T, G, C))


MM_CALLS = 3  # one anchor step is three GEMMs, so a round's rate averages over ~3x the GEMM's time


def mm_flops(T: int) -> float:
    return MM_CALLS * 2 * T * MM_SHAPE[0] * MM_SHAPE[1]


# --------------------------------------------------------------------------------------------------------------------
# The three models and their inputs
# --------------------------------------------------------------------------------------------------------------------


def common_config(max_len: int, dropout: float = 0.0) -> dict:
    return dict(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_len + 2, type_vocab_size=1,
    )


def build_model(impl: str, max_len: int, dropout: float = 0.0) -> torch.nn.Module:
    from transformers import LongformerConfig, LongformerModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    config = common_config(max_len, dropout)
    theirs = LongformerModel(LongformerConfig(attention_window=WINDOW, **config), add_pooling_layer=False)
    if impl == "transformers":
        return theirs
    if impl == "ours":
        from hf_longctx.models.longformer.configuration_longformer import LongctxLongformerConfig
        from hf_longctx.models.longformer.modeling_longformer import LongctxLongformerModel

        ours = LongctxLongformerModel(LongctxLongformerConfig(attention_window=WINDOW, **config), add_pooling_layer=False)
        ours.load_state_dict(theirs.state_dict())  # same weights, same names
        return ours
    if impl == "roberta_sdpa":
        config = RobertaConfig(**config)
        config._attn_implementation = "sdpa"
        return RobertaModel(config, add_pooling_layer=False)
    raise ValueError(f"unknown impl {impl!r}")


def side(impl: str, mode: str) -> str:
    """The key of one side in one mode: models, memory results and memory children use it."""
    return f"{impl}/{MODE_KEYS[mode]}"


def _mode(key: str) -> str:
    """The mode of a side key (``ours/train-0.1`` -> ``train, dropout 0.1``)."""
    mode_key = key.split("/")[1]
    return next(m for m, k in MODE_KEYS.items() if k == mode_key)


def build_side(key: str, max_len: int) -> torch.nn.Module:
    return build_model(key.split("/")[0], max_len, MODES[_mode(key)][1])


def model_inputs(impl: str, T: int) -> dict:
    g = torch.Generator().manual_seed(T)
    inputs = dict(
        input_ids=torch.randint(3, VOCAB, (1, T), generator=g),
        attention_mask=torch.ones(1, T, dtype=torch.long),
    )
    if impl != "roberta_sdpa":  # dense attention has no global tokens: every token sees every token
        glob = torch.zeros(1, T, dtype=torch.long)
        glob[0, global_positions(T)] = 1
        inputs["global_attention_mask"] = glob
    return inputs


def model_step(model: torch.nn.Module, impl: str, T: int, train: bool = True) -> Callable[[], None]:
    """Training: train mode, forward + backward against a fixed cotangent. Inference: eval, no_grad, forward."""
    inputs = model_inputs(impl, T)
    if not train:
        model.eval()

        def infer():
            with torch.no_grad():
                model(**inputs)

        return infer
    cotangent = torch.randn(1, T, HIDDEN, generator=torch.Generator().manual_seed(1))
    model.train()

    def step():
        model(**inputs).last_hidden_state.backward(cotangent)
        model.zero_grad(set_to_none=True)

    return step


def side_step(models: dict, key: str, T: int) -> Callable[[], None]:
    impl, mode_key = key.split("/")
    train = mode_key != "inference"
    return model_step(models[key], impl, T, train)


# --------------------------------------------------------------------------------------------------------------------
# Attention alone: one layer's self-attention module (projections + attention) and the bare op
# --------------------------------------------------------------------------------------------------------------------


def layer_step(model: torch.nn.Module, impl: str, T: int) -> Callable[[], None]:
    """fwd+bwd of layer 0's self-attention module: the q/k/v and global projections plus the attention."""
    module = model.encoder.layer[0].attention.self
    hidden = torch.randn(1, T, HIDDEN, generator=torch.Generator().manual_seed(2)).requires_grad_()
    cotangent = torch.randn(1, T, HIDDEN, generator=torch.Generator().manual_seed(3))
    glob = torch.zeros(1, T, dtype=torch.bool)
    glob[0, global_positions(T)] = True
    if impl == "ours":
        from hf_longctx.models.longformer.sliding_window_attention import global_token_index

        real = torch.ones(1, T, dtype=torch.bool)

        def run():
            return module(hidden, real, glob, global_token_index(glob))
    else:
        # transformers' encoder hands its layers a float mask: 0 local, +max global, -max padding.
        mask = torch.zeros(1, T).masked_fill(glob, torch.finfo(torch.float32).max)

        def run():
            return module(hidden, attention_mask=mask, is_index_masked=mask < 0, is_index_global_attn=mask > 0,
                          is_global_attn=True)[0]

    def step():
        run().backward(cotangent)
        module.zero_grad(set_to_none=True)
        hidden.grad = None

    return step


def op_inputs(T: int, with_globals: bool) -> tuple[dict, list[torch.Tensor]]:
    from hf_longctx.models.longformer.sliding_window_attention import global_token_index

    g = torch.Generator().manual_seed(4)
    D = HIDDEN // HEADS
    make = lambda *s: (torch.randn(*s, generator=g) / D**0.25).requires_grad_()  # noqa: E731
    q, k, v = make(1, HEADS, T, D), make(1, HEADS, T, D), make(1, HEADS, T, D)
    kwargs = dict(q=q, k=k, v=v, left=W, right=W, attention_mask=torch.ones(1, T, dtype=torch.bool))
    leaves = [q, k, v]
    if with_globals:
        glob = torch.zeros(1, T, dtype=torch.bool)
        glob[0, global_positions(T)] = True
        G = global_token_index(glob)[0].shape[1]
        qg, kg, vg = make(1, HEADS, G, D), make(1, HEADS, T, D), make(1, HEADS, T, D)
        kwargs.update(global_mask=glob, q_global=qg, k_global=kg, v_global=vg)
        leaves += [qg, kg, vg]
    return kwargs, leaves


def op_step(T: int, impl: str, with_globals: bool = True, block_size: int | None = None,
            dropout_p: float = 0.0) -> Callable[[], None]:
    from hf_longctx.models.longformer.sliding_window_attention import longformer_attention

    kwargs, leaves = op_inputs(T, with_globals)
    cotangent = torch.randn(1, HEADS, T, HIDDEN // HEADS, generator=torch.Generator().manual_seed(5))
    if impl == "ours":
        run = lambda: longformer_attention(**kwargs, block_size=block_size, dropout_p=dropout_p)  # noqa: E731
    else:  # dense attention over all T keys, PyTorch's fused CPU kernel
        run = lambda: F.scaled_dot_product_attention(kwargs["q"], kwargs["k"], kwargs["v"], scale=1.0)  # noqa: E731

    def step():
        run().backward(cotangent)
        for t in leaves:
            t.grad = None

    return step


def mm_step(T: int) -> Callable[[], None]:
    a, b = torch.randn(T, MM_SHAPE[0]), torch.randn(*MM_SHAPE)
    out = torch.empty(T, MM_SHAPE[1])

    def step():
        for _ in range(MM_CALLS):
            torch.mm(a, b, out=out)

    return step


# --------------------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------------------


PARITY = "tests/test_longformer_parity.py::test_gradients_match_transformers"
DROPOUT_TEST = "tests/test_longformer_model.py::test_training_with_attention_dropout_equals_the_dense_reference"
INFERENCE_TEST = "tests/test_longformer_parity.py::test_every_layer_matches_transformers_with_padding_and_globals"


def model_case(mode: str, impl: str) -> str:
    names = {"ours": "ours", "transformers": "transformers", "roberta_sdpa": "RoBERTa dense SDPA"}
    return f"model ({mode}): {names[impl]}"


def _model_cases() -> list[Case]:
    cases = []
    for mode, (train, dropout) in MODES.items():
        proof = {"train, dropout 0.1": DROPOUT_TEST, "train, dropout 0": PARITY, "inference": INFERENCE_TEST}[mode]
        key = side("ours", mode)
        flops = (lambda T: model_flops(T, n_global(T))) if train else (lambda T: model_flops(T, n_global(T)) / 3)
        cases.append(Case(model_case(mode, "ours"), "model", key, lambda m, T, k=key: side_step(m, k, T), proof,
                          flops=flops, anchor=model_case(mode, "transformers"), memory=True))
        key = side("transformers", mode)
        cases.append(Case(model_case(mode, "transformers"), "model", key, lambda m, T, k=key: side_step(m, k, T),
                          f"anchor: transformers.LongformerModel itself ({mode})", memory=True))
    key = side("roberta_sdpa", "train, dropout 0")
    cases.append(Case(model_case("train, dropout 0", "roberta_sdpa"), "model", key,
                      lambda m, T, k=key: side_step(m, k, T),
                      "anchor: transformers.RobertaModel(attn_implementation='sdpa'), full attention, no global tokens",
                      scaling=2.0, memory=True))
    return cases


CASES = _model_cases() + [
    Case("attention layer: ours", "layer", "ours", lambda m, T: layer_step(m[side("ours", "train, dropout 0")], "ours", T),
         "tests/test_longformer_parity.py::test_every_layer_matches_transformers_with_padding_and_globals",
         anchor="attention layer: transformers"),
    Case("attention layer: transformers", "layer", "transformers",
         lambda m, T: layer_step(m[side("transformers", "train, dropout 0")], "transformers", T),
         "anchor: transformers' LongformerSelfAttention itself"),
    Case("attention op: ours", "op", "ours", lambda m, T: op_step(T, "ours"),
         "tests/test_longformer_ops.py::test_longformer_attention_matches_dense",
         flops=lambda T: 3 * attention_flops(T, n_global(T)), anchor="attention op: dense SDPA"),
    Case("attention op: ours, dropout 0.1", "op", "ours", lambda m, T: op_step(T, "ours", dropout_p=DROPOUT),
         "tests/test_longformer_ops.py::TestDropout::test_longformer_attention_with_dropout_matches_dense",
         flops=lambda T: 3 * attention_flops(T, n_global(T)), anchor="attention op: dense SDPA"),
    Case("attention op: ours, band only", "op", "ours", lambda m, T: op_step(T, "ours", with_globals=False),
         "tests/test_longformer_ops.py::test_sliding_window_matches_dense",
         flops=lambda T: 3 * attention_flops(T, 0), anchor="attention op: dense SDPA"),
    Case("attention op: dense SDPA", "op", "sdpa", lambda m, T: op_step(T, "sdpa"),
         "anchor: torch.nn.functional.scaled_dot_product_attention (PyTorch's fused CPU kernel)",
         flops=lambda T: 3 * 4 * T * T * HIDDEN, scaling=2.0),
    Case("torch.mm (T,256)@(256,1024)", "anchor", "mm", lambda m, T: mm_step(T), "anchor: torch.mm",
         flops=mm_flops),
]


# --------------------------------------------------------------------------------------------------------------------
# Peak memory: a fresh process per (side, length)
# --------------------------------------------------------------------------------------------------------------------


def memory_child(key: str, T: int) -> None:
    """Runs in a fresh process: peak RSS growth of one step (``key`` = side/mode) over the process after model build."""
    torch.set_num_threads(1)
    models = {key: build_side(key, T)}
    warm = side_step(models, key, min(T, 512))
    step = side_step(models, key, T)  # inputs and cotangent allocated before the baseline
    peak_growth(warm, step)


INFERENCE_SIDES = ("ours/inference", "transformers/inference")
_MODULE = __name__ if __name__ != "__main__" else "hf_longctx.benchmarks.longformer"  # what child processes import


def inference_child(T: int, rounds: int) -> None:
    """Runs in a fresh process that only infers (as a serving or `hf-longctx evaluate` process does): ours and
    transformers interleaved, one forward each per round. In the main run the inference steps share the process
    with training steps, whose freed memory transformers' large inference tensors then reuse; here every process
    state comes from inference alone. Prints one JSON line of per-round seconds."""
    torch.set_num_threads(1)
    models = {key: build_side(key, T) for key in INFERENCE_SIDES}
    steps = {key: side_step(models, key, T) for key in INFERENCE_SIDES}
    for step in steps.values():
        step()  # warm-up
    samples = {key: [] for key in INFERENCE_SIDES}
    for _ in range(rounds):
        for key, step in steps.items():
            gc.collect()
            t0 = time.perf_counter()
            step()
            samples[key].append(time.perf_counter() - t0)
    print(json.dumps(samples))


def measure_inference_process(T: int, rounds: int, timeout_s: float) -> dict:
    """:func:`inference_child` in a fresh process (glibc's malloc left as users run it): per-round seconds by side."""
    return run_child(_MODULE, ("--inference-child", str(T), str(rounds)), timeout_s, what="inference process")


# --------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = parser("longformer", __doc__, out_name="longformer_cpu", repeats=7,
               quick="lengths 1024 and 2048, one repeat", lengths=f"default {' '.join(map(str, LENGTHS))}")
    p.add_argument("--max-step-s", type=float, default=60.0, help="skip a case predicted to exceed this per step")
    p.add_argument("--skip", nargs="+", default=[], metavar="CASE",
                   help="leave out cases whose name contains any of these strings (e.g. RoBERTa 'op:')")
    p.add_argument("--sweep-blocks", action="store_true", help="time the fused op's block sizes instead")
    p.add_argument("--profile", action="store_true", help="where a step of ours spends its time, instead")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout of the --profile model (default 0)")
    p.add_argument("--inference-child", nargs=2, type=int, metavar=("T", "ROUNDS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from .longformer_report import write_markdown, write_plot  # (they read this module's cases and constants)
    from .longformer_tuning import profile_breakdown, sweep_blocks

    torch.set_num_threads(1)
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    if args.inference_child:
        inference_child(*args.inference_child)
        return
    if args.profile:
        for T in args.lengths or [4096]:
            profile_breakdown(T, dropout=args.dropout)
        return
    if args.sweep_blocks:
        for T in args.lengths or [4096]:
            sweep_blocks(T, [16, 32, 64, 128, 256], repeats=args.repeats)
        return

    lengths = args.lengths or ([1024, 2048] if args.quick else list(LENGTHS))
    repeats = 1 if args.quick else args.repeats
    results = {"machine": machine_info(), "quick": args.quick, "repeats": repeats,
               "load_before": load_average(), "lengths": {}}
    cases = [c for c in CASES if c.name == MM_CASE or not any(x in c.name for x in args.skip)]
    compiled_cases = []
    if args.compile:  # the training steps of ours and transformers, both dropouts (RoBERTa is no compile anchor)
        compiled.fresh_inductor_cache()
        compiled_cases = compiled.twins([c for c in cases if c.group == "model" and MODES[_mode(c.impl)][0]
                                         and not c.impl.startswith("roberta_sdpa")])
        cases += compiled_cases
    keys = {c.impl for c in cases if c.group == "model"} | {side(i, "train, dropout 0") for i in ("ours", "transformers")}
    models = {key: build_side(key, max(lengths)) for key in sorted(keys)}
    previous = {}
    t_start = time.perf_counter()
    for T in lengths:
        row = {"time": time_length(T, cases, models, repeats, args.max_step_s, previous)}
        previous.update({n: (T, r["median_s"]) for n, r in row["time"].items() if "median_s" in r})
        if not args.no_memory:
            row["memory"] = {}
            for case in (c for c in cases if c.memory):
                if "median_s" not in row["time"].get(case.name, {}):
                    row["memory"][case.impl] = {"skipped": "not timed at this length"}
                    continue
                row["memory"][case.impl] = measure_memory(
                    _MODULE, case.impl, T,
                    timeout_s=max(120.0, 20 * row["time"][case.name]["median_s"]))
        timed = [row["time"].get(model_case("inference", impl), {}) for impl in ("ours", "transformers")]
        if all("median_s" in r for r in timed):  # both sides ran here (neither --skip'ped nor over --max-step-s)
            row["inference_process"] = measure_inference_process(
                T, repeats, timeout_s=max(120.0, 60 * repeats * timed[0]["median_s"]))
        results["lengths"][str(T)] = row
        done = ", ".join(f"{n[len('model ('):]} {fmt_s(r['median_s'])}" for n, r in row["time"].items()
                         if n.startswith("model") and "median_s" in r)
        print(f"[{time.perf_counter() - t_start:5.0f} s] T={T}: {done}", flush=True)
    results["load_after"] = load_average()
    results["wall_s"] = time.perf_counter() - t_start
    if compiled_cases:
        results["compiled"] = compiled.summary({T: row["time"] for T, row in results["lengths"].items()},
                                               compiled_cases)

    write_outputs(results, args.out, write_markdown, write_plot)


if __name__ == "__main__":
    main()
