"""GGUF export of the bundled model: file size per quant, max logit difference and greedy answers against the
safetensors model, after transformers reads the GGUF back (`gguf_file=`, which dequantizes).

    .venv/bin/python bench/gguf_roundtrip.py [--quants f16 q8_0 q4_0] [--out /tmp/ftchat-gguf]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common  # noqa: F401  (puts the repo root on sys.path, for ftchat)

PROMPTS = ["What is the capital of France?", "Give me three tips for sleeping better.",
           "Write a haiku about the sea.", "What is 12 times 7?", "Explain what a noun is in one sentence."]


def answers(model, tokenizer, max_new_tokens=16):
    import torch

    out, logits = [], []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            logits.append(model(**ids).logits[0, -1].float())
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return out, logits


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quants", nargs="+", default=["f16", "q8_0", "q4_0"])
    parser.add_argument("--out", default="/tmp/ftchat-gguf")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftchat.export.gguf import write_gguf
    from ftchat.models import resolve_base

    folder = resolve_base()
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ref_answers, ref_logits = answers(reference, tokenizer)
    rows = []
    for quant in args.quants:
        target = Path(args.out) / f"smollm2-135m.{quant}.gguf"
        started = time.time()
        write_gguf(folder, target, quant)
        write_s = time.time() - started
        back = AutoModelForCausalLM.from_pretrained(target.parent, gguf_file=target.name, dtype=torch.float32).eval()
        back_tok = AutoTokenizer.from_pretrained(target.parent, gguf_file=target.name)
        got, logits = answers(back, back_tok)
        rows.append({"quant": quant, "size_mb": round(target.stat().st_size / 1e6, 1), "write_s": round(write_s, 1),
                     "max_logit_diff": round(max((a - b).abs().max().item() for a, b in zip(logits, ref_logits)), 4),
                     "same_greedy_answers": sum(a == b for a, b in zip(got, ref_answers)), "prompts": len(PROMPTS),
                     "differing": [(p, a, b) for p, a, b in zip(PROMPTS, ref_answers, got) if a != b]})
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
