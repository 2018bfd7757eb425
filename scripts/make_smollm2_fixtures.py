#!/usr/bin/env python3
"""Reference outputs of transformers loading SmolLM2-135M-Instruct from its llama.cpp GGUF
(`from_pretrained(dir, gguf_file=...)`, which dequantises to float32 and undoes llama.cpp's
q/k row permutation):

- tests/fixtures/smollm2_tokens.json: token ids of the GGUF-built tokenizer on 24 strings;
- tests/fixtures/smollm2_reference.safetensors: final hidden states (after the last norm)
  for 4 prompts in one right-padded batch, and greedy next-token ids for 20 steps for two
  prompts (each run alone, no padding).

Needs models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-models.sh smollm2).
Run: python scripts/make_smollm2_fixtures.py   (torch, transformers, gguf)
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = os.path.join(ROOT, "models")
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = os.path.join(ROOT, "tests", "fixtures")

STRINGS = [
    "",
    "Hello world",
    "Hello 12345 world 2026-11-29",
    "3.14159 and 1,000,000",
    "  leading spaces",
    "trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nruns",
    "multiple     internal      spaces",
    "café naïve résumé Ångström",
    "日本語のテキスト",
    "中文分词测试",
    "emoji 😀🎉👍🏽 and 🇫🇷",
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "<|im_start|>user\nWhat is Debian?<|im_end|>",
    "<|endoftext|> special in text",
    "def f(x):\n    return x ** 2  # square",
    "URL https://www.debian.org/packages?q=libxml2&arch=amd64",
    "Library for parsing XML documents, with bindings for Python and Perl",
    "Real-time strategy game of ancient warfare with 3D graphics",
    "don't won't it's we're they've I'm you'll he'd",
    "ÀÉÎÕÜ àéîõü ß ø",
    "Ελληνικά и русский",
    "a\u00a0non\u2009breaking\u200bzero-width",
    "!!!???...---",
]

PROMPTS = [
    "<|im_start|>user\nClassify this Debian package: a library for parsing XML.<|im_end|>\n",
    "The capital of France is",
    "Debian is",
    "def fibonacci(n):",
]


def main():
    tok = AutoTokenizer.from_pretrained(MODELS, gguf_file=GGUF)
    tokens = [{"text": s, "ids": tok(s, add_special_tokens=True)["input_ids"]} for s in STRINGS]
    with open(os.path.join(OUT, "smollm2_tokens.json"), "w") as f:
        json.dump({"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                   "eos_token_id": tok.eos_token_id, "tokens": tokens}, f, ensure_ascii=False,
                  indent=1)

    model = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=GGUF, dtype=torch.float32).eval()
    tok.padding_side = "right"
    batch = tok(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.model(input_ids=batch["input_ids"],
                             attention_mask=batch["attention_mask"]).last_hidden_state
    tensors = {"input_ids": batch["input_ids"].contiguous(),
               "attention_mask": batch["attention_mask"].contiguous(),
               "last_hidden_state": hidden.contiguous()}
    for i, prompt in enumerate(PROMPTS[1:3]):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=20, do_sample=False, num_beams=1,
                                 eos_token_id=None, pad_token_id=tok.pad_token_id)
        tensors[f"greedy_{i}_prompt"] = ids[0].contiguous()
        tensors[f"greedy_{i}_new"] = out[0, ids.shape[1]:].contiguous()
        print(prompt, "->", repr(tok.decode(out[0, ids.shape[1]:])))
    save_file(tensors, os.path.join(OUT, "smollm2_reference.safetensors"))


if __name__ == "__main__":
    main()
