#!/usr/bin/env python3
"""PyTorch + PEFT reference run of the finetune recipe, for the training-parity check.

Same recipe as `cargo run --example finetune`: all-MiniLM-L6-v2 + LoRA (PEFT) on
query,value, a linear head on the pooled output (mean pooling by default, as the
checkpoint's sentence-transformers config says; `--pooling pooler` gives
BertForSequenceClassification's path), BCE-with-logits, AdamW (no decay on biases),
linear warmup then linear decay, global-norm clipping 1.0, head bias at the label priors, one global threshold tuned on
valid (0.01 grid, micro-F1), metrics on test with scikit-learn (zero_division=0).

  python scripts/peft_reference_train.py --model models/all-MiniLM-L6-v2 \
      --data data/debtags-min200 --train-limit 4000 --epochs 3 --lr 2e-3 --out runs/peft
"""
import argparse
import gzip
import json
import math
import os
import random
import time

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from sklearn.metrics import f1_score, hamming_loss, precision_score, recall_score
from transformers import AutoTokenizer, BertModel


def read_split(data, name):
    path = os.path.join(data, name + ".jsonl")
    opener = open
    if not os.path.exists(path):
        path, opener = path + ".gz", gzip.open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Classifier(torch.nn.Module):
    def __init__(self, bert, num_labels, pooling, dropout):
        super().__init__()
        self.bert = bert
        self.pooling = pooling
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(bert.config.hidden_size, num_labels)
        self.classifier.weight.data.normal_(0.0, 0.02)
        self.classifier.bias.data.zero_()

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state
        if self.pooling == "mean":
            m = attention_mask.unsqueeze(-1).float()
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        elif self.pooling == "cls":
            pooled = h[:, 0]
        else:
            pooled = out.pooler_output
        return self.classifier(self.dropout(pooled))


def metrics(y, pred):
    kw = dict(zero_division=0)
    return {
        "micro_f1": f1_score(y, pred, average="micro", **kw),
        "macro_f1": f1_score(y, pred, average="macro", **kw),
        "samples_f1": f1_score(y, pred, average="samples", **kw),
        "micro_precision": precision_score(y, pred, average="micro", **kw),
        "micro_recall": recall_score(y, pred, average="micro", **kw),
        "hamming_loss": hamming_loss(y, pred),
        "subset_accuracy": float((y == pred).all(1).mean()),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--train-limit", type=int, default=4000)
    ap.add_argument("--warmup-ratio", type=float, default=0.06)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--pooling", default="mean", choices=["mean", "cls", "pooler"])
    ap.add_argument("--head-bias-init", default="prior", choices=["prior", "zero"],
                    help="prior: classifier bias = logit of each label's training frequency")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    labels = [l.strip() for l in open(os.path.join(args.data, "labels.txt")) if l.strip()]
    index = {l: i for i, l in enumerate(labels)}
    train = read_split(args.data, "train")[: args.train_limit]
    valid, test = read_split(args.data, "valid"), read_split(args.data, "test")

    def targets(rows):
        y = np.zeros((len(rows), len(labels)), dtype=np.int64)
        for i, r in enumerate(rows):
            for l in r["labels"]:
                if l in index:
                    y[i, index[l]] = 1
        return y

    tok = AutoTokenizer.from_pretrained(args.model)
    bert = BertModel.from_pretrained(args.model)
    cfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.dropout,
                     target_modules=["query", "value"])
    bert = get_peft_model(bert, cfg)
    model = Classifier(bert, len(labels), args.pooling, bert.base_model.model.config.hidden_dropout_prob)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if args.head_bias_init == "prior":
        # Start at the label priors: with Adam the bias moves ~lr per step, too slowly to
        # reach logit(p) of rare labels (about -3) within a short run from 0.
        freq = targets(train).mean(0).clip(1e-4, 1 - 1e-4)
        with torch.no_grad():
            model.classifier.bias.copy_(torch.tensor(np.log(freq / (1 - freq)), dtype=torch.float32))

    decay = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = int(args.warmup_ratio * total)

    def lr_lambda(step):
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    y_train = torch.tensor(targets(train), dtype=torch.float32)
    texts = [r["text"] for r in train]
    loss_fn = torch.nn.BCEWithLogitsLoss()
    start = time.time()
    tokens = 0
    for epoch in range(args.epochs):
        model.train()
        order = list(range(len(train)))
        random.Random(args.seed + epoch).shuffle(order)
        for b in range(0, len(order), args.batch_size):
            idx = order[b: b + args.batch_size]
            enc = tok([texts[i] for i in idx], padding="longest", truncation=True,
                      max_length=args.max_len, return_tensors="pt")
            tokens += int(enc["attention_mask"].sum())
            logits = model(enc["input_ids"], enc["attention_mask"])
            loss = loss_fn(logits, y_train[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step = epoch * steps_per_epoch + b // args.batch_size + 1
            if step % 50 == 0:
                print(f"epoch {epoch} step {step}/{total} loss {loss.item():.4f} "
                      f"lr {sched.get_last_lr()[0]:.2e} {time.time() - start:.0f}s", flush=True)
    train_seconds = time.time() - start

    def probs(rows):
        model.eval()
        out = []
        with torch.no_grad():
            for b in range(0, len(rows), 64):
                enc = tok([r["text"] for r in rows[b: b + 64]], padding="longest", truncation=True,
                          max_length=args.max_len, return_tensors="pt")
                out.append(torch.sigmoid(model(enc["input_ids"], enc["attention_mask"])).numpy())
        return np.concatenate(out)

    pv, yv = probs(valid), targets(valid)
    best = max((f1_score(yv, (pv >= t).astype(int), average="micro", zero_division=0), t)
               for t in np.round(np.arange(0.01, 1.0, 0.01), 2))
    threshold = float(best[1])
    pt, yt = probs(test), targets(test)
    result = {
        "recipe": vars(args),
        "valid": {**metrics(yv, (pv >= threshold).astype(int)), "threshold": threshold},
        "test": {**metrics(yt, (pt >= threshold).astype(int)), "threshold": threshold},
        "train_seconds": train_seconds,
        "train_tokens_per_second": tokens / train_seconds,
        "trainable_params": trainable,
        "torch": torch.__version__,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["test"], indent=1))


if __name__ == "__main__":
    main()
