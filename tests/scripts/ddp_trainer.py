"""A user's own Trainer script on an hf_longctx model, as run under torchrun / accelerate launch (and alone).

Writes the per-step losses, the world size it saw and checksums of the final weights to OUT (rank 0 only).
Masked-LM batches without any global token (the Longformer's global projections then take no part), reversible
layers (Reformer), memories carried between segments (Transformer-XL), gradient checkpointing on, and DDP left to
find no unused parameters: the cases that fail when a parameter misses a step.

    python ddp_trainer.py OUT VARIANT PER_DEVICE_BATCH [fsdp]
"""

import importlib
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, Trainer, TrainingArguments

from hf_longctx.distributed import exit_process_group
from hf_longctx.variants import BY_NAME

out, variant, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
fsdp = sys.argv[4:] == ["fsdp"]  # shard with FSDP (full_shard, one unit per transformer block) instead of DDP
record = BY_NAME[variant]
# The variant's tiny, dropout-free test config (tests/test_<folder>_model.py), with its masked-LM head where it has
# one and its causal LM otherwise (the Transformer-XL: memories carried, and detached, between segments of 8).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
tiny = importlib.import_module(f"test_{record.folder}_model")
head = AutoModelForMaskedLM if AutoModelForMaskedLM in record.heads else AutoModelForCausalLM
torch.manual_seed(0)
T, ROWS = 24, 16

g = torch.Generator().manual_seed(1)
rows = []
for _ in range(ROWS):
    ids = torch.randint(3, tiny.VOCAB, (T,), generator=g)
    labels = torch.full((T,), -100)
    labels[::3] = ids[::3]
    rows.append({"input_ids": ids, "attention_mask": torch.ones(T, dtype=torch.long),
                 "labels": labels if head is AutoModelForMaskedLM else ids.clone()})


class Rows(torch.utils.data.Dataset):
    def __len__(self):
        return len(rows)

    def __getitem__(self, i):
        return rows[i]


model = record.heads[head](tiny.make_config())
args = TrainingArguments(
    output_dir=out + ".checkpoints", per_device_train_batch_size=per_device, max_steps=3, learning_rate=1e-2,
    logging_steps=1, report_to="none", use_cpu=True, seed=0, save_strategy="no", activation_checkpointing=True,
    ddp_find_unused_parameters=False, dataloader_drop_last=True, disable_tqdm=True,
    **(dict(fsdp="full_shard auto_wrap", fsdp_config={"transformer_layer_cls_to_wrap": [record.block_class]}) if fsdp else {}),
)
trainer = Trainer(model=model, args=args, train_dataset=Rows())
trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
trainer.train()
if trainer.is_world_process_zero():
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    # A checksum per parameter: its sum, and the sum of its magnitudes (the scale its rounding error is relative to)
    weights = {n: (float(p.detach().double().sum()), float(p.detach().double().abs().sum()))
               for n, p in trainer.model.named_parameters()}
    with open(out, "w") as f:
        json.dump({"world_size": args.world_size, "losses": losses, "weights": weights}, f)
# Under torchrun / accelerate launch, leave without PyTorch's gloo shutdown race (see the helper's docstring).
exit_process_group(0)
