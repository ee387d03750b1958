"""Does masked-LM pretraining make long context pay on Shakespeare genre?

A script over the public API, with these subcommands:

``pretrain``: a small Longformer (``LongctxLongformerForMaskedLM``) pretrained with RoBERTa-style masking (15% of
the tokens; 80% ``<mask>``, 10% a random token, 10% unchanged) on blocks of ``--max-length`` tokens cut from the
training split's text of the shipped corpora, ``<s>`` first and global as in the downstream classifier. AdamW,
linear warm-up and decay. Every ``--eval-every`` steps it records the training loss and the masked-token accuracy
and loss on blocks of the Shakespeare *validation* split (fixed masks); no test split is ever read.

``finetune``: :func:`hf_longctx.train.train` (what ``hf-longctx train --init-from`` and the demo run) on
``shakespeare-genre`` from a checkpoint folder, reading ``--lengths`` tokens, over ``--seeds``; ``random`` makes the
same architecture with fresh weights (the from-scratch baseline). Test accuracy of every run goes to a JSON file.

``frozen``: the encoder frozen, only a classifier on its first-token state trained (``--head mlp``: the model's
own classification head with AdamW; ``--head logistic``: softmax regression by L-BFGS), every seed at every length
from one feature pass; with ``--random`` each seed draws a fresh random encoder. ``probe``: the same softmax
regression on first-token and mean-pooled states, one checkpoint.

``report``: the results JSON, markdown and a PNG of the pretraining curve under ``benchmarks/results``.

Usage (the commands behind the committed results are at the end of ``benchmarks/results/pretrain_efficacy.md``)::

    python benchmarks/pretrain_efficacy.py pretrain --out runs/pt --steps 800 --batch 4 --lr 2e-3
    python benchmarks/pretrain_efficacy.py frozen --init runs/pt/model --out runs/frozen --head logistic
    python benchmarks/pretrain_efficacy.py finetune --init runs/pt/model --out runs/ft --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

CORPORA = ("shakespeare", "kernel-docs")  # the shipped texts with words (wiki-bytes is bytes of XML)


def tokenizer():
    from hf_longctx.data.tokenizers import shipped_bpe

    return shipped_bpe("shakespeare_genre")  # the downstream task's own 8k BPE


def corpus_texts(name: str, split: str) -> list[str]:
    """The texts of one split, whole documents: a Shakespeare work is its windows joined in file order."""
    if name == "shakespeare":
        from hf_longctx.data.shakespeare import read_records

        works: dict[str, list[str]] = {}
        for record in read_records():
            if record["split"] == split:
                works.setdefault(record["work"], []).append(record["text"])
        return ["\n".join(parts) for parts in works.values()]
    if name == "kernel-docs":
        from hf_longctx.data.kernel_docs import read_records

        return [r["text"] for r in read_records() if r["split"] == split]
    raise ValueError(f"unknown corpus {name!r}; choose from {CORPORA}")


def make_blocks(tok, texts: list[str], max_length: int) -> torch.Tensor:
    """Documents joined with ``</s>`` and cut into blocks of ``<s> + max_length - 2 tokens + </s>``."""
    from hf_longctx.data.long_docs import pack_blocks

    streams = tok(texts, add_special_tokens=False)["input_ids"]
    blocks = pack_blocks(streams, max_length - 2, separator=[tok.eos_token_id])
    return torch.tensor([[tok.bos_token_id, *b, tok.eos_token_id] for b in blocks])


def mask_tokens(ids: torch.Tensor, tok, generator: torch.Generator, p: float = 0.15):
    """RoBERTa's masking: ``p`` of the non-special tokens are predicted; of those 80% -> <mask>, 10% -> random, 10%
    unchanged. Returns (inputs, labels with -100 where nothing is predicted)."""
    special = torch.zeros_like(ids, dtype=torch.bool)
    for s in tok.all_special_ids:
        special |= ids == s
    chosen = (torch.rand(ids.shape, generator=generator) < p) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = tok.mask_token_id
    randomised = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[randomised] = torch.randint(len(tok), ids.shape, generator=generator)[randomised]
    return inputs, labels


def global_first(ids: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(ids)
    mask[:, 0] = 1
    return mask


def mlm_loss(model, inputs, labels):
    """Cross-entropy and hits on the masked positions only: the LM head (8k-way, tied to the embeddings) runs on
    the ~15% of positions that have a label, not on all of them: the same loss as ``model(labels=...)``, ~2x faster
    at hidden 128."""
    out = model.longformer(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                           global_attention_mask=global_first(inputs))
    where = labels != -100
    logits = model.lm_head(out.last_hidden_state[where])
    target = labels[where]
    loss = torch.nn.functional.cross_entropy(logits, target)
    return loss, (logits.argmax(-1) == target).sum().item(), target.numel()


def build_model(tok, args):
    from hf_longctx import LongctxLongformerConfig, LongctxLongformerForMaskedLM

    config = LongctxLongformerConfig(
        vocab_size=len(tok), hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=args.hidden * 4, attention_window=args.window,
        max_position_embeddings=args.max_length + tok.pad_token_id + 1, hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, sep_token_id=tok.eos_token_id,
    )
    return LongctxLongformerForMaskedLM(config)


@torch.no_grad()
def evaluate_mlm(model, blocks: torch.Tensor, tok, batch: int) -> dict:
    model.eval()
    g = torch.Generator().manual_seed(1234)  # the same masks at every evaluation
    loss_sum = hits = n = 0
    for i in range(0, len(blocks), batch):
        inputs, labels = mask_tokens(blocks[i:i + batch], tok, g)
        loss, h, k = mlm_loss(model, inputs, labels)
        loss_sum += loss.item() * k
        hits += h
        n += k
    model.train()
    return {"val_loss": loss_sum / n, "val_masked_accuracy": hits / n}


def pretrain(args) -> None:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tok = tokenizer()
    train_blocks = torch.cat([make_blocks(tok, corpus_texts(c, "train"), args.max_length) for c in args.corpora])
    val_blocks = make_blocks(tok, corpus_texts("shakespeare", "validation"), args.max_length)[: args.val_blocks]
    model = build_model(tok, args)
    params = sum(p.numel() for p in model.parameters())
    print(f"{len(train_blocks)} training blocks of {args.max_length} tokens ({', '.join(args.corpora)}), "
          f"{len(val_blocks)} validation blocks; {params / 1e6:.2f}M parameters; {torch.get_num_threads()} threads",
          flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    steps = args.steps
    warmup = max(1, int(args.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    g = torch.Generator().manual_seed(args.seed)
    curve = [{"step": 0, "seconds": 0.0, "train_loss": None, **evaluate_mlm(model, val_blocks, tok, args.batch)}]
    print(json.dumps(curve[-1]), flush=True)
    order: list[int] = []
    start = time.perf_counter()
    run_loss = run_hits = run_n = 0.0
    model.train()
    for step in range(1, steps + 1):
        if len(order) < args.batch:
            order += torch.randperm(len(train_blocks), generator=g).tolist()
        idx, order = order[: args.batch], order[args.batch:]
        inputs, labels = mask_tokens(train_blocks[idx], tok, g)
        loss, h, k = mlm_loss(model, inputs, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        run_loss += loss.item() * k
        run_hits += h
        run_n += k
        if step % args.eval_every == 0 or step == steps:
            row = {"step": step, "seconds": round(time.perf_counter() - start, 1), "train_loss": run_loss / run_n,
                   "train_masked_accuracy": run_hits / run_n, "lr": schedule.get_last_lr()[0],
                   **evaluate_mlm(model, val_blocks, tok, args.batch)}
            curve.append(row)
            run_loss = run_hits = run_n = 0.0
            print(json.dumps(row), flush=True)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    model.save_pretrained(out / "model")
    tok.model_max_length = args.max_length
    tok.save_pretrained(out / "model")
    record = {"args": vars(args), "parameters": params, "train_blocks": len(train_blocks),
              "tokens_seen": steps * args.batch * args.max_length, "seconds": round(seconds, 1),
              "threads": torch.get_num_threads(), "curve": curve}
    (out / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"pretrained {steps} steps in {seconds:.0f} s -> {out / 'model'}", flush=True)


def random_init(like: str, out: Path) -> Path:
    """The architecture of checkpoint ``like`` with fresh weights (same seed for every comparison)."""
    from transformers import AutoConfig, AutoTokenizer

    from hf_longctx import LongctxLongformerForMaskedLM

    torch.manual_seed(0)
    model = LongctxLongformerForMaskedLM(AutoConfig.from_pretrained(like))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(like).save_pretrained(out)
    return out


def finetune(args) -> None:
    import datasets
    import transformers

    from hf_longctx.demo import metric
    from hf_longctx.train import train

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    init = args.init
    if args.random:
        init = str(random_init(args.init, out / "random_init"))
    results_file = out / "finetune.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    overrides = {
        "warmup_steps": args.warmup, "weight_decay": 0.01, "eval_strategy": "steps", "eval_steps": args.eval_steps,
        "save_strategy": "steps", "save_steps": args.eval_steps, "save_total_limit": 1,
        "load_best_model_at_end": True, "metric_for_best_model": "accuracy", "logging_steps": args.eval_steps,
        "disable_tqdm": True,
    }
    for seed in args.seeds:
        for length in args.lengths:
            run_dir = out / f"{'random' if args.random else 'pretrained'}_{length}_seed{seed}"
            start = time.perf_counter()
            summary = train("shakespeare-genre", run_dir, init_from=init, max_length=length, max_steps=args.steps,
                            batch_size=args.batch, learning_rate=args.lr, seed=seed, overrides=overrides,
                            overwrite=True, device="cpu", log=lambda m: None)
            row = {"init": "random" if args.random else args.init, "label": args.label, "max_length": length,
                   "seed": seed, "steps": args.steps, "lr": args.lr, "batch": args.batch,
                   "test_accuracy": metric(summary, "accuracy"), "test_macro_f1": metric(summary, "macro_f1"),
                   "majority": metric(summary, "majority_baseline_accuracy"),
                   "seconds": round(time.perf_counter() - start, 1)}
            results.append(row)
            results_file.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps(row), flush=True)
            if not args.keep:
                import shutil

                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


@torch.no_grad()
def features(model, data, batch: int = 8) -> dict:
    """First-token and mean-pooled last hidden states of a frozen encoder, per example."""
    from hf_longctx.collator import LongContextCollator

    collate = LongContextCollator(pad_token_id=model.config.pad_token_id)
    first, mean = [], []
    model.eval()
    for i in range(0, len(data), batch):
        rows = [{k: data[j][k] for k in ("input_ids", "attention_mask", "global_attention_mask")}
                for j in range(i, min(i + batch, len(data)))]
        b = collate(rows)
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        first.append(h[:, 0])
        mean.append((h * m).sum(1) / m.sum(1))
    return {"first": torch.cat(first), "mean": torch.cat(mean)}


def logistic(train_x, train_y, val_x, val_y, test_x, test_y, classes: int) -> dict:
    """Softmax regression on standardised features, L2 picked on validation accuracy; test accuracy of that one."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    norm = lambda x: (x - mu) / sd  # noqa: E731
    best = None
    for wd in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        torch.manual_seed(0)
        layer = torch.nn.Linear(train_x.shape[1], classes)
        opt = torch.optim.LBFGS(layer.parameters(), max_iter=200)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(layer(norm(train_x)), train_y) + wd * layer.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            val = (layer(norm(val_x)).argmax(-1) == val_y).float().mean().item()
            test = (layer(norm(test_x)).argmax(-1) == test_y).float().mean().item()
        if best is None or val > best["val_accuracy"]:
            best = {"l2": wd, "val_accuracy": val, "test_accuracy": test}
    return best


def probe(args) -> None:
    """Frozen encoder, softmax regression on its features: a cheap first look at what pretraining gives."""
    from transformers import AutoModel, AutoTokenizer

    from hf_longctx.tasks import TASKS

    init = args.init
    if args.random:
        init = str(random_init(args.init, Path(args.out) / "random_init"))
    model = AutoModel.from_pretrained(init)
    tok = AutoTokenizer.from_pretrained(init)
    rows = []
    for length in args.lengths:
        data, labels = TASKS["shakespeare-genre"].load(tok, length, 0)
        feats = {s: features(model, data[s]) for s in ("train", "validation", "test")}
        ys = {s: torch.tensor(data[s]["labels"]) for s in feats}
        for kind in ("first", "mean"):
            r = logistic(feats["train"][kind], ys["train"], feats["validation"][kind], ys["validation"],
                         feats["test"][kind], ys["test"], len(labels))
            rows.append({"init": "random" if args.random else args.init, "max_length": length, "pool": kind, **r})
            print(json.dumps(rows[-1]), flush=True)


def train_head(model, feats: dict, ys: dict, seed: int, epochs: int, lr: float, batch: int = 16) -> dict:
    """Fine-tune only the classifier head of ``model`` (a ``...ForSequenceClassification``) on cached first-token
    states of its frozen encoder; the epoch with the best validation accuracy is kept, as the demo keeps its best
    validation checkpoint. ``seed`` sets the head's initialisation, dropout and the order of the examples."""
    torch.manual_seed(seed)
    head = model.classifier
    for layer in head.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    # Standardised with the training set's mean and spread (the first token's state varies little between
    # documents, and the head did not learn from the raw states: best epoch 1, majority-class accuracy). The
    # scaling folds exactly into head.dense afterwards, so the result is still the model's own head.
    mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    x = {s: ((v - mu) / sd).unsqueeze(1) for s, v in feats.items()}  # (N, 1, hidden): the head reads position 0
    best = None
    for epoch in range(1, epochs + 1):
        head.train()
        perm = torch.randperm(len(ys["train"]))
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(head(x["train"][idx]), ys["train"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            acc = {s: (head(x[s]).argmax(-1) == ys[s]).float().mean().item() for s in ("validation", "test")}
        if best is None or acc["validation"] > best["val_accuracy"]:
            best = {"epoch": epoch, "val_accuracy": acc["validation"], "test_accuracy": acc["test"]}
    return best


def frozen(args) -> None:
    """Frozen encoder, fine-tuned classifier head: every seed, both lengths; random init: a fresh encoder per seed."""
    import datasets
    from transformers import AutoTokenizer

    from hf_longctx import LongctxLongformerForSequenceClassification
    from hf_longctx.tasks import TASKS

    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(args.init)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / f"frozen_{args.head}.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else []
    data = {length: TASKS["shakespeare-genre"].load(tok, length, 0) for length in args.lengths}
    labels = data[args.lengths[0]][1]
    cache = {}
    for seed in args.seeds:
        if args.random:
            torch.manual_seed(1000 + seed)  # a different random encoder per seed
        model = LongctxLongformerForSequenceClassification.from_pretrained(
            args.init, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)}, hidden_dropout_prob=args.dropout)
        if args.random:
            model = LongctxLongformerForSequenceClassification(model.config)
        for length in args.lengths:
            d = data[length][0]
            key = (seed if args.random else None, length)
            if key not in cache:
                start = time.perf_counter()
                cache[key] = {s: features(model.longformer, d[s])["first"] for s in ("train", "validation", "test")}
                print(f"features at {length} tokens: {time.perf_counter() - start:.0f} s", flush=True)
            ys = {s: torch.tensor(d[s]["labels"]) for s in ("train", "validation", "test")}
            if args.head == "logistic":  # convex: the seed changes only the random encoder
                f = cache[key]
                best = logistic(f["train"], ys["train"], f["validation"], ys["validation"], f["test"], ys["test"],
                                len(labels))
                recipe = "frozen encoder, softmax regression (L2 on validation)"
            else:
                best = train_head(model, cache[key], ys, seed, args.epochs, args.lr)
                recipe = f"frozen encoder, head {args.epochs} epochs lr {args.lr}"
            row = {"init": "random" if args.random else args.init, "label": args.label, "max_length": length,
                   "seed": seed, "recipe": recipe, **best}
            results.append(row)
            results_file.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps(row), flush=True)


def mean(values) -> float:
    return sum(values) / len(values)


def report(args) -> None:
    """benchmarks/results/pretrain_efficacy.{json,md,png} from a pretraining record and fine-tuning results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pre = json.loads(Path(args.pretrain).read_text())
    rows = [r for f in args.results for r in json.loads(Path(f).read_text())]
    table = {}
    for r in rows:
        table.setdefault((r["label"], r.get("recipe", "full fine-tuning")), {}).setdefault(r["max_length"], []).append(r)
    summary = []
    for (label, recipe), by_length in table.items():
        entry = {"init": label, "recipe": recipe}
        for length, runs in sorted(by_length.items(), reverse=True):
            runs = sorted(runs, key=lambda r: r["seed"])
            entry[str(length)] = {"seeds": [r["seed"] for r in runs],
                                  "test_accuracy": [round(r["test_accuracy"], 4) for r in runs],
                                  "mean": round(mean([r["test_accuracy"] for r in runs]), 4)}
        if "1024" in entry and "128" in entry:
            entry["gain_points"] = round(100 * (entry["1024"]["mean"] - entry["128"]["mean"]), 1)
        summary.append(entry)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"pretraining": {k: pre[k] for k in ("args", "parameters", "train_blocks", "tokens_seen", "seconds",
                                                   "threads")},
              "curve": pre["curve"], "finetuning": summary, "runs": rows, "notes": args.note}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    curve = pre["curve"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = [c["step"] for c in curve]
    a.plot(steps[1:], [c["train_loss"] for c in curve[1:]], label="train (masked tokens)")
    a.plot(steps, [c["val_loss"] for c in curve], label="Shakespeare validation")
    a.set_xlabel("step")
    a.set_ylabel("masked-LM loss")
    a.legend()
    b.plot(steps[1:], [c["train_masked_accuracy"] for c in curve[1:]], label="train")
    b.plot(steps, [c["val_masked_accuracy"] for c in curve], label="Shakespeare validation")
    b.set_xlabel("step")
    b.set_ylabel("masked-token accuracy")
    b.legend()
    pa = pre["args"]
    fig.suptitle(f"MLM pretraining, {pre['parameters'] / 1e6:.2f}M params, batch {pa['batch']} x {pa['max_length']} "
                 f"tokens, lr {pa['lr']}, {pre['seconds'] / 60:.0f} min, {pre['threads']} thread(s)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    lines = ["| init | recipe | 1,024 tokens (per seed) | mean | 128 tokens (per seed) | mean | gain |",
             "|---|---|---|---:|---|---:|---:|"]
    for e in summary:
        cells = []
        for length in ("1024", "128"):
            if length in e:
                cells += [" / ".join(f"{v:.3f}" for v in e[length]["test_accuracy"]), f"{e[length]['mean']:.3f}"]
            else:
                cells += ["", ""]
        gain = f"{e['gain_points']:+.1f}" if "gain_points" in e else ""
        lines.append(f"| {e['init']} | {e['recipe']} | {' | '.join(cells)} | {gain} |")
    curve_lines = ["| step | minutes | train loss | train masked acc | val loss | val masked acc |",
                   "|---:|---:|---:|---:|---:|---:|"]
    for c in curve:
        tl = "" if c["train_loss"] is None else f"{c['train_loss']:.3f}"
        ta = "" if c.get("train_masked_accuracy") is None else f"{c['train_masked_accuracy']:.3f}"
        curve_lines.append(f"| {c['step']} | {c['seconds'] / 60:.1f} | {tl} | {ta} | {c['val_loss']:.3f} | "
                           f"{c['val_masked_accuracy']:.3f} |")
    text = Path(args.template).read_text() if args.template else "{results}\n\n{curve}\n"
    out.with_suffix(".md").write_text(text.replace("{results}", "\n".join(lines)).replace(
        "{curve}", "\n".join(curve_lines)))
    print("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain")
    p.add_argument("--out", required=True)
    p.add_argument("--corpora", nargs="+", default=["shakespeare"], choices=CORPORA)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--val-blocks", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("finetune")
    f.add_argument("--init", required=True, help="a checkpoint folder (with --random: its architecture only)")
    f.add_argument("--random", action="store_true")
    f.add_argument("--label", default="")
    f.add_argument("--out", required=True)
    f.add_argument("--lengths", type=int, nargs="+", default=[1024, 128])
    f.add_argument("--seeds", type=int, nargs="+", default=[0])
    f.add_argument("--steps", type=int, default=150)
    f.add_argument("--batch", type=int, default=16)
    f.add_argument("--lr", type=float, default=2e-3)
    f.add_argument("--warmup", type=float, default=0.2)
    f.add_argument("--eval-steps", type=int, default=25)
    f.add_argument("--keep", action="store_true")
    r = sub.add_parser("probe")
    r.add_argument("--init", required=True)
    r.add_argument("--random", action="store_true")
    r.add_argument("--out", default="/tmp/pretrain_efficacy_probe")
    r.add_argument("--lengths", type=int, nargs="+", default=[1024, 128])
    z = sub.add_parser("frozen")
    z.add_argument("--init", required=True)
    z.add_argument("--random", action="store_true")
    z.add_argument("--label", default="")
    z.add_argument("--out", required=True)
    z.add_argument("--lengths", type=int, nargs="+", default=[1024, 128])
    z.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    z.add_argument("--epochs", type=int, default=40)
    z.add_argument("--lr", type=float, default=3e-3)
    z.add_argument("--dropout", type=float, default=0.1)
    z.add_argument("--head", choices=("mlp", "logistic"), default="mlp",
                   help="mlp: the model's classification head (AdamW); logistic: softmax regression by L-BFGS")
    o = sub.add_parser("report")
    o.add_argument("--pretrain", required=True, help="pretrain.json of the pretraining run")
    o.add_argument("--results", nargs="+", required=True, help="frozen.json / finetune.json files")
    o.add_argument("--out", default="benchmarks/results/pretrain_efficacy")
    o.add_argument("--template", help="markdown with {results} and {curve} placeholders")
    o.add_argument("--note", default="")
    for q in (p, f, r, z, o):
        q.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"pretrain": pretrain, "finetune": finetune, "probe": probe, "frozen": frozen,
     "report": report}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
