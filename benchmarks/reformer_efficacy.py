"""Is LSH attention as good as full attention? Byte-level LM on wiki-bytes, in bits per byte (the Reformer paper's
Figure 5 claim: a causal Reformer with 4 hashes comes close to a full-attention Transformer; 1 hash is worse).

For each seed, three models of the same width, depth, heads and feed-forward train on the same blocks in the same
order, with the same AdamW, learning-rate schedule, batch, length and steps:

- ``reformer-4``: ``LongctxReformerForCausalLM``, layers alternating local / LSH (local first), 4 hashes;
- ``reformer-1``: the same with 1 hash;
- ``gpt2-sdpa``: transformers' ``GPT2LMHeadModel`` with ``attn_implementation="sdpa"`` (full causal attention).

Dropout is off everywhere. Validation bits per byte is measured every ``--eval-every`` steps on a small slice (the
curves) and at the end on a larger fixed slice; Reformers are evaluated in eval mode (fixed ``hash_seed``), while
training redraws the LSH rotations each step from their private generator.

    python benchmarks/reformer_efficacy.py                 # the defaults below, 1 thread
    python benchmarks/reformer_efficacy.py --quick --out DIR   # a few steps: checks the script runs
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_longctx import LongctxReformerConfig, LongctxReformerForCausalLM
from hf_longctx.data.wiki_bytes import BYTE_ID_OFFSET, split_bytes

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--length", type=int, default=512)
parser.add_argument("--hidden", type=int, default=128)
parser.add_argument("--layers", type=int, default=4)
parser.add_argument("--heads", type=int, default=4)
parser.add_argument("--ffn", type=int, default=512)
parser.add_argument("--chunk", type=int, default=64)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--eval-every", type=int, default=20)
parser.add_argument("--curve-blocks", type=int, default=8, help="validation blocks per curve point")
parser.add_argument("--final-blocks", type=int, default=64, help="validation blocks for the final number")
parser.add_argument("--seeds", type=int, nargs="+", default=[0])
parser.add_argument("--axial-norm-std", type=float, default=None,
                    help="std of the axial position tables at init (default: the config's, 1.0 as transformers)")
parser.add_argument("--models", nargs="+", default=["reformer-4", "reformer-1", "gpt2-sdpa"])
parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
if args.quick:
    args.steps, args.batch, args.length, args.layers = 3, 2, 128, 2
    args.eval_every, args.curve_blocks, args.final_blocks, args.seeds = 2, 2, 2, [0]

torch.set_num_threads(1)  # a shared machine: one thread per process
L, B = args.length, args.batch
splits = split_bytes()


def blocks(split: str, count: int) -> torch.Tensor:
    data = np.frombuffer(splits[split], dtype=np.uint8, count=count * L).astype(np.int64) + BYTE_ID_OFFSET
    return torch.from_numpy(data).view(count, L)


n_train = len(splits["train"]) // L
val_final = blocks("validation", args.final_blocks)
val_curve = val_final[: args.curve_blocks]
vocab = 256 + BYTE_ID_OFFSET


def build(name: str):
    if name.startswith("reformer-"):
        chunk = min(args.chunk, L)
        axial = [math.ceil(L / chunk), chunk]
        cfg = LongctxReformerConfig(
            vocab_size=vocab, hidden_size=args.hidden, num_attention_heads=args.heads,
            attention_head_size=args.hidden // args.heads, attn_layers=[("local", "lsh")[i % 2] for i in range(args.layers)],
            feed_forward_size=args.ffn, hidden_act="gelu", num_hashes=int(name.split("-")[1]),
            num_buckets=max(2, 2 * L // chunk), lsh_attn_chunk_length=chunk, local_attn_chunk_length=chunk,
            is_decoder=True, axial_pos_shape=axial, axial_pos_embds_dim=[args.hidden // 4, args.hidden - args.hidden // 4],
            max_position_embeddings=math.prod(axial), hidden_dropout_prob=0.0, local_attention_probs_dropout_prob=0.0,
            lsh_attention_probs_dropout_prob=0.0, chunk_size_feed_forward=0, pad_token_id=0, eos_token_id=1,
            hash_seed=0, use_cache=False,
            **({} if args.axial_norm_std is None else {"axial_norm_std": args.axial_norm_std}))
        return LongctxReformerForCausalLM(cfg)
    cfg = GPT2Config(vocab_size=vocab, n_positions=L, n_embd=args.hidden, n_layer=args.layers, n_head=args.heads,
                     n_inner=args.ffn, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     tie_word_embeddings=False, use_cache=False, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa")
    assert model.config._attn_implementation == "sdpa"
    return model


@torch.no_grad()
def bits_per_byte(model, data: torch.Tensor) -> float:
    """Mean over every predicted byte (L - 1 per block), in bits."""
    model.eval()
    total = 0.0
    for i in range(0, len(data), B):
        x = data[i:i + B]
        total += model(input_ids=x, labels=x).loss.item() * len(x)
    model.train()
    return total / len(data) / math.log(2)


def lr_at(step: int) -> float:  # linear warmup over 5% of the steps, then cosine to 0
    warm = max(1, args.steps // 20)
    if step < warm:
        return args.lr * (step + 1) / warm
    return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, args.steps - warm)))


runs = []
for seed in args.seeds:
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[: args.steps * B].view(args.steps, B)
    for name in args.models:
        torch.manual_seed(seed)
        model = build(name)
        model.train()
        params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
        curve, losses, t0, train_s = [], [], time.time(), 0.0
        for step in range(args.steps):
            if step % args.eval_every == 0:
                curve.append((step, bits_per_byte(model, val_curve)))
            ts = time.time()
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            idx = order[step]
            x = torch.from_numpy(np.stack([np.frombuffer(splits["train"], dtype=np.uint8, count=L, offset=int(j) * L)
                                           for j in idx]).astype(np.int64) + BYTE_ID_OFFSET)
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            train_s += time.time() - ts
            losses.append(loss.item() / math.log(2))
        curve.append((args.steps, bits_per_byte(model, val_curve)))
        final = bits_per_byte(model, val_final)
        run = dict(seed=seed, model=name, params=params, final_bpb=final, curve=curve, train_bpb=losses,
                   train_s=train_s, wall_s=time.time() - t0)
        runs.append(run)
        print(f"seed {seed} {name:11s} {params:,} params: final {final:.4f} bits/byte "
              f"(train {train_s:.0f} s, wall {run['wall_s']:.0f} s)", flush=True)

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
stem = "reformer_efficacy_quick" if args.quick else "reformer_efficacy"
setup = dict(vars(args), train_blocks=n_train, torch=torch.__version__)
(out / f"{stem}.json").write_text(json.dumps(dict(setup=setup, runs=runs), indent=1))

by = {(r["seed"], r["model"]): r for r in runs}
lines = ["| seed | model | parameters | final bits per byte | train time (s) |", "| --- | --- | --- | --- | --- |"]
lines += [f"| {r['seed']} | {r['model']} | {r['params']:,} | {r['final_bpb']:.4f} | {r['train_s']:.0f} |" for r in runs]
lines += ["", "| seed | reformer-4 vs gpt2-sdpa (relative) | reformer-1 minus reformer-4 (bits per byte) |",
          "| --- | --- | --- |"]
for seed in args.seeds:
    r4, r1, g = (by.get((seed, m)) for m in ("reformer-4", "reformer-1", "gpt2-sdpa"))
    gap = f"{(r4['final_bpb'] / g['final_bpb'] - 1) * 100:+.2f}%" if r4 and g else "-"
    diff = f"{r1['final_bpb'] - r4['final_bpb']:+.4f}" if r4 and r1 else "-"
    lines.append(f"| {seed} | {gap} | {diff} |")
table = "\n".join(lines)
print("\n" + table)
(out / f"{stem}.md").write_text(
    f"# Reformer efficacy on wiki-bytes (validation bits per byte)\n\n`python benchmarks/reformer_efficacy.py"
    f"{' --quick' if args.quick else ''}`: {args.steps} steps of {B} x {L} bytes, d_model {args.hidden}, "
    f"{args.layers} layers, {args.heads} heads, FFN {args.ffn}, chunk {args.chunk}, AdamW lr {args.lr} "
    f"(5% warmup, cosine), seeds {args.seeds}; final: first {len(val_final)} validation blocks.\n\n{table}\n")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(7, 4.5))
colors = {"reformer-4": "tab:blue", "reformer-1": "tab:orange", "gpt2-sdpa": "tab:green"}
for r in runs:
    s, v = zip(*r["curve"])
    ax.plot(s, v, color=colors.get(r["model"]), linestyle=("-", "--", ":")[r["seed"] % 3],
            label=f"{r['model']} (seed {r['seed']})")
ax.set_xlabel("step")
ax.set_ylabel("validation bits per byte")
ax.set_ylim(top=min(8.5, max(max(v for _, v in r["curve"][1:] or r["curve"]) for r in runs) + 0.2))
ax.set_title(f"wiki-bytes, {B} x {L} bytes per step, d_model {args.hidden}, {args.layers} layers")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out / f"{stem}.png", dpi=110)
