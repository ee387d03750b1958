"""Does Transformer-XL's memory help? Byte-level LM on wiki-bytes, stream-trained as in the paper, in bits per byte.

For each seed, two models of the same size train for the same number of steps on the same byte streams: one with
memories (mem_len = segment length, carried across steps by hf_longctx.streams.StreamTrainer) and one without
(mem_len = 0). Both are evaluated on the validation bytes as streams; the first also with a memory 4x longer than
in training (the paper evaluates with longer memories, section 4.1) and with none.

    python benchmarks/transfo_xl_memory.py            # 2 seeds x 2 models, ~6 minutes on 2 CPU cores
    python benchmarks/transfo_xl_memory.py --quick    # a few steps: checks the script runs
"""

import argparse
import math
import tempfile

import numpy as np
import torch
from transformers import TrainingArguments

from hf_longctx import LongctxTransfoXLConfig, LongctxTransfoXLForCausalLM
from hf_longctx.data.wiki_bytes import BYTE_ID_OFFSET, split_bytes
from hf_longctx.streams import StreamDataset, StreamTrainer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=800)
parser.add_argument("--segment", type=int, default=32)
parser.add_argument("--train-mem", type=int, default=None, help="mem_len in training (default: the segment length)")
parser.add_argument("--streams", type=int, default=8)
parser.add_argument("--eval-bytes", type=int, default=65536)
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()
if args.quick:
    args.steps, args.eval_bytes, args.seeds = 2, 2048, [0]

torch.set_num_threads(1)  # a shared machine: one thread per process
splits = split_bytes()
ids = {s: np.frombuffer(splits[s], dtype=np.uint8).astype(np.int64) + BYTE_ID_OFFSET for s in ("train", "validation")}
L, B = args.segment, args.streams
M = L if args.train_mem is None else args.train_mem
train_ids = ids["train"][: args.steps * B * L + B]  # exactly the bytes the steps read
eval_ids = ids["validation"][: args.eval_bytes]


def config(mem_len: int) -> LongctxTransfoXLConfig:
    return LongctxTransfoXLConfig(vocab_size=256 + BYTE_ID_OFFSET, d_model=128, n_head=4, d_head=32, d_inner=512,
                                  n_layer=3, segment_length=L, mem_len=mem_len, dropout=0.0)


def bits_per_byte(trainer, mem_len: int, clamp_len=None) -> float:
    c = trainer.model.config
    c.mem_len, c.clamp_len = mem_len, clamp_len  # the weights depend on neither: evaluate with any memory
    loss = trainer.evaluate(StreamDataset(eval_ids, B, L))["eval_loss"]
    return loss / math.log(2)


rows = []
for seed in args.seeds:
    for train_mem in (M, 0):
        torch.manual_seed(seed)
        model = LongctxTransfoXLForCausalLM(config(train_mem))
        with tempfile.TemporaryDirectory() as tmp:
            trainer = StreamTrainer(model=model, args=TrainingArguments(
                output_dir=tmp, per_device_train_batch_size=B, per_device_eval_batch_size=B, max_steps=args.steps,
                learning_rate=args.lr, warmup_steps=0.05, lr_scheduler_type="cosine", weight_decay=0.0,
                logging_steps=max(1, args.steps // 4), report_to=[], save_strategy="no", use_cpu=True, seed=seed,
                dataloader_num_workers=0, disable_tqdm=True,
            ), train_dataset=StreamDataset(train_ids, B, L))
            trainer.train()
            evals = [(str(train_mem), bits_per_byte(trainer, train_mem))]
            if train_mem:
                # Longer memories than in training; with distances clamped to the longest seen in training
                # (M + L - 1; the paper clamps at evaluation too); and none (does the model use its memory?).
                far = train_mem + L - 1
                evals += [(str(2 * train_mem), bits_per_byte(trainer, 2 * train_mem)),
                          (str(4 * train_mem), bits_per_byte(trainer, 4 * train_mem)),
                          (f"{4 * train_mem}, clamp {far}", bits_per_byte(trainer, 4 * train_mem, far)),
                          ("0", bits_per_byte(trainer, 0))]
        for eval_mem, bpb in evals:
            rows.append((seed, train_mem, eval_mem, bpb))
            print(f"seed {seed}: trained with mem_len {train_mem:4d}, evaluated with {eval_mem}: {bpb:.4f} bits/byte",
                  flush=True)

print(f"\n{args.steps} steps of {B} x {L} bytes; validation: first {len(eval_ids)} bytes as {B} streams\n")
print("| seed | trained mem_len | eval mem_len | bits per byte |\n| --- | --- | --- | --- |")
for seed, train_mem, eval_mem, bpb in rows:
    print(f"| {seed} | {train_mem} | {eval_mem} | {bpb:.4f} |")
