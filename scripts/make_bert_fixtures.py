#!/usr/bin/env python3
"""Reference fixtures for the BERT-family backbones, made with PyTorch + transformers + PEFT.

Needs models/all-MiniLM-L6-v2 (scripts/fetch-models.sh). Writes under tests/fixtures/:
  minilm_reference.safetensors  padded batch of 8 sentences: input_ids, attention_mask,
                                token_type_ids, last_hidden_state, pooler_output (BertModel, eval)
  minilm_tokens.json            ids from transformers' tokenizer for >= 20 strings (max_len 128)
  minilm_peft_counts.json       PEFT trainable-parameter counts for r=8 on query,value
  tiny-bert/, tiny-roberta/ (sharded), tiny-distilbert/: random checkpoints made by
                                transformers (config.json + safetensors) and reference.safetensors

Run: python scripts/make_bert_fixtures.py
"""
import json
import os

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel,
                          DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures")
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")

SENTENCES = [
    "Hello world.",
    "A tiny command-line tool to convert images between formats.",
    "Library for parsing XML documents, with bindings for Python and Perl; supports XPath and XSLT.",
    "GNOME desktop",
    "This package provides the development headers for the audio codec library, which is used by "
    "media players and editors to decode and encode compressed sound files on Debian systems.",
    "Ünïcödé façade — naïve café",
    "网络 工具",
    "x",
]

TOKEN_STRINGS = SENTENCES + [
    "", " ", "   leading and trailing   ", "UPPER lower MiXeD", "e-mail: someone@example.org",
    "numbers 1234567890 and 3.14159", "emoji 🎉🚀 here", "日本語のテキスト", "Ελληνικά κείμενο",
    "supercalifragilisticexpialidocious antidisestablishmentarianism", "tab\tand\nnewline",
    "[CLS] [SEP] [MASK] special tokens as text", "accents: àéîõü ÀÉÎÕÜ ñ ç",
    "long " * 200,
]


def minilm():
    tok = AutoTokenizer.from_pretrained(MINILM)
    model = BertModel.from_pretrained(MINILM).eval()
    enc = tok(SENTENCES, padding="longest", truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    save_file({
        "input_ids": enc["input_ids"].to(torch.int64).contiguous(),
        "attention_mask": enc["attention_mask"].to(torch.int64).contiguous(),
        "token_type_ids": enc["token_type_ids"].to(torch.int64).contiguous(),
        "last_hidden_state": out.last_hidden_state.contiguous(),
        "pooler_output": out.pooler_output.contiguous(),
    }, os.path.join(OUT, "minilm_reference.safetensors"))
    tokens = [{"text": s, "ids": tok(s, truncation=True, max_length=128)["input_ids"]}
              for s in TOKEN_STRINGS]
    pair = tok("first segment", "second one", truncation=True, max_length=128)
    with open(os.path.join(OUT, "minilm_tokens.json"), "w") as f:
        json.dump({"max_len": 128, "strings": tokens,
                   "pair": {"a": "first segment", "b": "second one", "ids": pair["input_ids"],
                            "type_ids": pair["token_type_ids"]}}, f, ensure_ascii=False, indent=0)

    counts = {}
    lora_only = get_peft_model(BertModel.from_pretrained(MINILM),
                               LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]))
    counts["bert_model_lora_only"] = lora_only.get_nb_trainable_parameters()[0]
    clf = BertForSequenceClassification.from_pretrained(MINILM, num_labels=71)
    seq = get_peft_model(clf, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16,
                                         target_modules=["query", "value"],
                                         modules_to_save=["classifier"]))
    counts["seq_cls_71_labels_with_classifier"] = seq.get_nb_trainable_parameters()[0]
    with open(os.path.join(OUT, "minilm_peft_counts.json"), "w") as f:
        json.dump(counts, f, indent=1)


def tiny(name, model, pad_id, shard=None):
    torch.manual_seed(0)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    model = model.eval()
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(d, **kwargs)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.int64)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids = ids.masked_fill(mask == 0, pad_id)
    inputs = {"input_ids": ids, "attention_mask": mask}
    tensors = {"input_ids": ids.contiguous(), "attention_mask": mask.contiguous()}
    if getattr(model.config, "type_vocab_size", 0) > 1:
        tt = torch.zeros(3, 7, dtype=torch.int64)
        tt[0, 4:] = 1
        inputs["token_type_ids"] = tt
        tensors["token_type_ids"] = tt.contiguous()
    with torch.no_grad():
        out = model(**inputs)
    tensors["last_hidden_state"] = out.last_hidden_state.contiguous()
    if getattr(out, "pooler_output", None) is not None:
        tensors["pooler_output"] = out.pooler_output.contiguous()
    save_file(tensors, os.path.join(d, "reference.safetensors"))


def tiny_models():
    common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64)
    torch.manual_seed(0)
    tiny("tiny-bert", BertModel(BertConfig(**common, type_vocab_size=2, pad_token_id=0)), 0)
    torch.manual_seed(0)
    tiny("tiny-roberta", RobertaModel(RobertaConfig(**common, type_vocab_size=1, pad_token_id=1,
                                                    layer_norm_eps=1e-5)), 1, shard="40KB")
    torch.manual_seed(0)
    tiny("tiny-distilbert", DistilBertModel(DistilBertConfig(
        vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64,
        pad_token_id=0)), 0)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    tiny_models()
    minilm()
    print("fixtures written to", os.path.abspath(OUT))
