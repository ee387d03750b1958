"""A user's own Trainer script on an hf_longctx model, as run under torchrun / accelerate launch (and alone).

Writes the per-step losses, the world size it saw and a checksum of the final weights to OUT (rank 0 only).
Masked-LM batches without any global token (the Longformer's global projections then take no part), reversible
layers (Reformer), memories carried between segments (Transformer-XL), gradient checkpointing on, and DDP left to
find no unused parameters: the cases that fail when a parameter misses a step.

    python ddp_trainer.py OUT VARIANT PER_DEVICE_BATCH [fsdp]
"""

import json
import sys

import torch
from transformers import Trainer, TrainingArguments

import hf_longctx
from hf_longctx.distributed import exit_process_group

out, variant, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
fsdp = sys.argv[4:] == ["fsdp"]  # shard with FSDP (full_shard, one unit per transformer block) instead of DDP
LAYER = {"longformer": "LongformerLayer", "reformer": "ReformerLayer", "transfo-xl": "TransfoXLLayer"}
torch.manual_seed(0)
VOCAB, T, ROWS = 97, 24, 16


def build():
    if variant == "longformer":
        config = hf_longctx.LongctxLongformerConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            attention_window=8, max_position_embeddings=64, pad_token_id=1, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
        return hf_longctx.LongctxLongformerForMaskedLM(config)
    if variant == "reformer":  # reversible layers, LSH rotations redrawn every training forward
        config = hf_longctx.LongctxReformerConfig(
            vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, attention_head_size=8,
            attn_layers=["local", "lsh"], num_hashes=2, num_buckets=4, lsh_attn_chunk_length=4,
            local_attn_chunk_length=8, axial_pos_shape=[8, 8], axial_pos_embds_dim=[16, 16],
            max_position_embeddings=64, feed_forward_size=64, hidden_dropout_prob=0.0,
            local_attention_probs_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0, pad_token_id=1)
        return hf_longctx.LongctxReformerForMaskedLM(config)
    if variant == "transfo-xl":  # three segments of 8 with memories carried (and detached) between them
        config = hf_longctx.LongctxTransfoXLConfig(
            vocab_size=VOCAB, d_model=32, n_head=4, d_head=8, d_inner=64, n_layer=2, segment_length=8, mem_len=8,
            dropout=0.0, dropatt=0.0, pad_token_id=1)
        return hf_longctx.LongctxTransfoXLForCausalLM(config)
    raise SystemExit(f"unknown variant {variant}")


g = torch.Generator().manual_seed(1)
rows = []
for _ in range(ROWS):
    ids = torch.randint(3, VOCAB, (T,), generator=g)
    labels = torch.full((T,), -100)
    labels[::3] = ids[::3]
    row = {"input_ids": ids, "attention_mask": torch.ones(T, dtype=torch.long), "labels": labels}
    if variant == "longformer":
        row["global_attention_mask"] = torch.zeros(T, dtype=torch.long)
    if variant == "transfo-xl":
        row["labels"] = ids.clone()  # causal LM
    rows.append(row)


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
    **(dict(fsdp="full_shard auto_wrap", fsdp_config={"transformer_layer_cls_to_wrap": [LAYER[variant]]}) if fsdp else {}),
)
trainer = Trainer(model=model, args=args, train_dataset=Rows())
trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
trainer.train()
if trainer.is_world_process_zero():
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    weights = {n: float(p.detach().double().sum()) for n, p in trainer.model.named_parameters()}
    with open(out, "w") as f:
        json.dump({"world_size": args.world_size, "losses": losses, "weights": weights}, f)
# Under torchrun / accelerate launch, leave without PyTorch's gloo shutdown race (see the helper's docstring).
exit_process_group(0)
