"""A user's own Trainer script on an hf_longctx model, as run under torchrun / accelerate launch (and alone).

Writes the per-step losses, the world size it saw and a checksum of the final weights to OUT (rank 0 only).
Masked-LM batches without any global token (the Longformer's global projections then take no part), gradient
checkpointing on, and DDP left to find no unused parameters: the cases that failed for users.

    python ddp_trainer.py OUT VARIANT PER_DEVICE_BATCH
"""

import json
import sys

import torch
from transformers import Trainer, TrainingArguments

import hf_longctx

out, variant, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
VOCAB, T, ROWS = 97, 24, 16


def build():
    if variant == "longformer":
        config = hf_longctx.LongctxLongformerConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            attention_window=8, max_position_embeddings=64, pad_token_id=1, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
        return hf_longctx.LongctxLongformerForMaskedLM(config)
    raise SystemExit(f"unknown variant {variant}")


g = torch.Generator().manual_seed(1)
rows = []
for _ in range(ROWS):
    ids = torch.randint(3, VOCAB, (T,), generator=g)
    labels = torch.full((T,), -100)
    labels[::3] = ids[::3]
    rows.append({"input_ids": ids, "attention_mask": torch.ones(T, dtype=torch.long),
                 "global_attention_mask": torch.zeros(T, dtype=torch.long), "labels": labels})


class Rows(torch.utils.data.Dataset):
    def __len__(self):
        return len(rows)

    def __getitem__(self, i):
        return rows[i]


model = build()
args = TrainingArguments(
    output_dir=out + ".checkpoints", per_device_train_batch_size=per_device, max_steps=3, learning_rate=1e-2,
    logging_steps=1, report_to="none", use_cpu=True, seed=0, save_strategy="no", activation_checkpointing=True,
    ddp_find_unused_parameters=False, dataloader_drop_last=True, disable_tqdm=True,
)
trainer = Trainer(model=model, args=args, train_dataset=Rows())
trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
trainer.train()
if trainer.is_world_process_zero():
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    weights = {n: float(p.detach().double().sum()) for n, p in trainer.model.named_parameters()}
    with open(out, "w") as f:
        json.dump({"world_size": args.world_size, "losses": losses, "weights": weights}, f)
