#!/usr/bin/env python3
"""PyTorch + PEFT half of the side-by-side speed benchmark (scripts/bench_vs_pytorch.sh).

Two subcommands:

- `prepare` tokenises the first training texts with the model's own tokenizer (special tokens
  as the tokenizer adds them, truncated to --max-len, no padding, no prompt template) and
  writes a workload JSON that both implementations run: the examples, length-bucketed train
  and inference batches (sorted by length, chunked, batch order shuffled with seed 42; the
  two lists use disjoint examples), and the number of leading warm-up batches of each list.

    python scripts/bench_pytorch.py prepare --model models/all-MiniLM-L6-v2 \
        --data data/debtags-min200 --out /tmp/wl-minilm.json

- `run` replays one list of a workload with PEFT LoRA on the backbone and a linear head
  (BERT: mean pooling, as peft_reference_train.py; llama: last non-padding token, no head
  bias, as transformers' `score`), fp32 on CPU, and prints one JSON line on stdout. Training
  steps are BCE-with-logits + AdamW + global-norm clipping 1.0; inference is forward +
  sigmoid under torch.inference_mode(). Only batches after the warm-up ones are timed.

    python scripts/bench_pytorch.py run --workload /tmp/wl-minilm.json --mode train --threads 2

  LoRA: --rank (default 8), --alpha (16), --lora-dropout (0.1) and --targets: `peft` (the
  default: the family's PEFT default, BERT query,value and llama q_proj,v_proj), `all-linear`
  (PEFT's shorthand: every linear of the backbone but an output head) or comma-separated
  module names, as tools/bench_workload.rs and the finetune example read it.

- `gemm` prints torch's f32 matmul rate at a MiniLM FFN shape (the machine's gemm peak).

Models: a Hugging Face folder (BERT, or a llama-type config) or a llama.cpp .gguf file, which
transformers dequantises to fp32.
"""
import argparse
import gzip
import json
import os
import random
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertModel

LLAMA_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


def fail(msg):
    sys.exit(f"bench_pytorch.py: {msg}")


def read_split(data, name):
    path = os.path.join(data, name + ".jsonl")
    opener = open
    if not os.path.exists(path):
        path, opener = path + ".gz", gzip.open
    if not os.path.exists(path):
        fail(f"no {name}.jsonl or {name}.jsonl.gz in {data}")
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def family_of(model):
    if not os.path.exists(model):
        fail(f"model not found: {model}")
    if model.endswith(".gguf"):
        return "llama"
    config = os.path.join(model, "config.json")
    if not os.path.exists(config):
        fail(f"not a .gguf file nor a folder with config.json: {model}")
    with open(config) as f:
        return "llama" if json.load(f).get("model_type") in LLAMA_TYPES else "bert"


def pretrained_args(model):
    """`from_pretrained` arguments: a .gguf file is loaded from its folder by name."""
    if model.endswith(".gguf"):
        return (os.path.dirname(model) or ".",), {"gguf_file": os.path.basename(model)}
    return (model,), {}


def buckets(examples, indices, batch_size, rng):
    order = sorted(indices, key=lambda i: len(examples[i]["ids"]))
    batches = [order[b: b + batch_size] for b in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def prepare(args):
    family = family_of(args.model)
    labels_path = os.path.join(args.data, "labels.txt")
    if not os.path.exists(labels_path):
        fail(f"labels file not found: {labels_path}")
    labels = [l.strip() for l in open(labels_path) if l.strip()]
    index = {l: i for i, l in enumerate(labels)}
    n_train = (args.warmup + args.train_steps) * args.train_batch
    n_infer = (args.warmup + args.infer_steps) * args.infer_batch
    rows = read_split(args.data, "train")[: n_train + n_infer]
    if len(rows) < n_train + n_infer:
        fail(f"need {n_train + n_infer} training examples, {args.data} has {len(rows)}")

    a, kw = pretrained_args(args.model)
    tok = AutoTokenizer.from_pretrained(*a, **kw)
    ids = tok([r["text"] for r in rows], truncation=True, max_length=args.max_len)["input_ids"]
    examples = [{"ids": list(i), "labels": sorted(index[l] for l in r["labels"] if l in index)}
                for i, r in zip(ids, rows)]
    pad_id = next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
    workload = {
        "model": args.model, "family": family, "max_len": args.max_len,
        "num_labels": len(labels), "pad_id": pad_id, "warmup": args.warmup,
        "examples": examples,
        "train_batches": buckets(examples, range(n_train), args.train_batch, random.Random(42)),
        "infer_batches": buckets(examples, range(n_train, n_train + n_infer), args.infer_batch,
                                 random.Random(42)),
    }
    workload.update(timed_gflop(args.model, examples, workload))
    with open(args.out, "w") as f:
        json.dump(workload, f)
    lengths = [len(e["ids"]) for e in examples]
    print(f"{args.out}: {family}, {len(examples)} examples, mean length "
          f"{sum(lengths) / len(lengths):.1f}, pad_id {pad_id}", file=sys.stderr)


def timed_gflop(model, examples, workload):
    """Floating-point work of the timed batches (padded shapes), an estimate both sides share:
    forward = linears (2 FLOP per weight per token) + attention scores and context (full
    s x s, 4 FLOP per head dim per query-key pair); a training step adds the input gradient of
    each (frozen) linear (1x forward) and of attention (2x forward); LoRA, norms, activations
    and the head are left out."""
    a, kw = pretrained_args(model)
    c = AutoConfig.from_pretrained(*a, **kw)
    h, layers, heads = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or h // heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    if workload["family"] == "llama":
        weights = h * heads * head_dim * 2 + 2 * h * kv * head_dim + 3 * h * c.intermediate_size
    else:
        weights = 4 * h * h + 2 * h * c.intermediate_size
    out = {}
    for mode in ("train", "infer"):
        lin = att = 0
        for batch in workload[f"{mode}_batches"][workload["warmup"]:]:
            b, s = len(batch), max(len(examples[i]["ids"]) for i in batch)
            lin += 2 * weights * b * s * layers
            att += 4 * b * s * s * heads * head_dim * layers
        total = lin + att if mode == "infer" else 2 * lin + 3 * att
        out[f"{mode}_gflop"] = total / 1e9
    return out


def gemm(args):
    """The machine's f32 matmul rate through torch at the FFN shapes of a MiniLM batch."""
    torch.set_num_threads(args.threads)
    x, w = torch.randn(2048, 384), torch.randn(384, 1536)
    for _ in range(3):
        x @ w
    reps, start = 50, time.perf_counter()
    for _ in range(reps):
        x @ w
    seconds = (time.perf_counter() - start) / reps
    print(json.dumps({"impl": "pytorch", "mode": "gemm", "shape": [2048, 384, 1536],
                      "gflops": round(2 * 2048 * 384 * 1536 / seconds / 1e9, 1)}))


class Classifier(torch.nn.Module):
    """peft_reference_train.py's head: pooled hidden state -> dropout -> linear."""

    def __init__(self, backbone, num_labels, pooling, bias, dropout=0.1):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(backbone.config.hidden_size, num_labels, bias=bias)
        self.classifier.weight.data.normal_(0.0, 0.02)
        if bias:
            self.classifier.bias.data.zero_()

    def forward(self, input_ids, attention_mask):
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "mean":
            m = attention_mask.unsqueeze(-1).float()
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        else:  # last non-padding token; padding is on the right
            pooled = h[torch.arange(h.shape[0]), attention_mask.sum(1) - 1]
        return self.classifier(self.dropout(pooled))


def lora_targets(spec, llama):
    """`--targets` as PEFT's `target_modules`, spelled as the finetune example's --targets."""
    spec = spec.strip()
    if spec == "peft":
        return ["q_proj", "v_proj"] if llama else ["query", "value"]
    if spec == "all-linear":
        return "all-linear"
    names = [n.strip() for n in spec.split(",")]
    if any(not n for n in names):
        fail(f"--targets `{spec}` has an empty module name; give comma-separated names, "
             "`all-linear` or `peft`")
    return names


def build_model(workload, args):
    llama = workload["family"] == "llama"
    targets = lora_targets(args.targets, llama)
    a, kw = pretrained_args(workload["model"])
    if llama:
        backbone = AutoModel.from_pretrained(*a, dtype=torch.float32, **kw)
    else:
        backbone = BertModel.from_pretrained(*a, **kw)
    cfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=args.lora_dropout,
                     target_modules=targets, use_dora=args.dora,
                     bias="none")
    return Classifier(get_peft_model(backbone, cfg), workload["num_labels"],
                      pooling="last" if llama else "mean", bias=not llama)


def tensors(workload, batch):
    rows = [workload["examples"][i] for i in batch]
    width = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), width), workload["pad_id"], dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    y = torch.zeros((len(rows), workload["num_labels"]))
    for k, r in enumerate(rows):
        ids[k, : len(r["ids"])] = torch.tensor(r["ids"])
        mask[k, : len(r["ids"])] = 1
        y[k, r["labels"]] = 1.0
    return ids, mask, y


def run(args):
    if not os.path.exists(args.workload):
        fail(f"workload not found: {args.workload}")
    with open(args.workload) as f:
        workload = json.load(f)
    warmup = workload["warmup"]
    batches = [tensors(workload, b) for b in workload[f"{args.mode}_batches"]]
    if len(batches) <= warmup:
        fail(f"{args.workload}: {len(batches)} {args.mode} batches, none after {warmup} warm-up")
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    model = build_model(workload, args)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    if args.mode == "train":
        model.train()
        params = [p for _, p in trainable]
        opt = torch.optim.AdamW(
            [{"params": [p for n, p in trainable if not n.endswith("bias")], "weight_decay": 0.01},
             {"params": [p for n, p in trainable if n.endswith("bias")], "weight_decay": 0.0}],
            lr=5e-4)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def step(ids, mask, y):
            opt.zero_grad()
            loss_fn(model(ids, mask), y).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
    else:
        model.eval()

        def step(ids, mask, y):
            with torch.inference_mode():
                torch.sigmoid(model(ids, mask))

    for b in batches[:warmup]:
        step(*b)
    start = time.perf_counter()
    for b in batches[warmup:]:
        step(*b)
    seconds = time.perf_counter() - start
    tokens = sum(int(mask.sum()) for _, mask, _ in batches[warmup:])
    gflop = workload.get(f"{args.mode}_gflop")
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "mode": args.mode,
        "family": workload["family"], "threads": args.threads, "steps": len(batches) - warmup,
        "tokens": tokens, "seconds": round(seconds, 4),
        "tokens_per_second": round(tokens / seconds, 1),
        "gflops": round(gflop / seconds, 2) if gflop is not None else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trainable_params": sum(p.numel() for _, p in trainable),
        "rank": args.rank, "alpha": args.alpha, "targets": args.targets.strip(),
    }), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="tokenise and write a workload JSON")
    p.add_argument("--model", required=True, help="HF model folder or .gguf file")
    p.add_argument("--data", required=True, help="folder with train.jsonl[.gz] and labels.txt")
    p.add_argument("--out", required=True)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--infer-batch", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--infer-steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    r = sub.add_parser("run", help="time one list of a workload, print one JSON line")
    r.add_argument("--workload", required=True)
    r.add_argument("--mode", required=True, choices=["train", "infer"])
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--rank", type=int, default=8)
    r.add_argument("--alpha", type=float, default=16)
    r.add_argument("--lora-dropout", type=float, default=0.1)
    r.add_argument("--targets", default="peft",
                   help="peft (the family's PEFT default), all-linear, or comma-separated names")
    r.add_argument("--dora", action="store_true", help="DoRA adapters (use_dora)")
    g = sub.add_parser("gemm", help="f32 matmul GFLOP/s through torch")
    g.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    {"prepare": prepare, "run": run, "gemm": gemm}[args.command](args)


if __name__ == "__main__":
    main()
