"""Peak memory of LoRA fp32, LoRA bf16 and QLoRA NF4 on a 1.7B-parameter Llama (SmolLM2-1.7B's shape, random
weights: speed and memory do not depend on the values), each `ftchat train` run in a fresh process.

The random base is saved in bf16, as real checkpoints of this size are shipped. A few steps on short rows: the
weights, not the activations, are what differ between the techniques. Peak = the process's peak RSS
(ru_maxrss, loading included) on a CPU, the peak CUDA memory allocated on a GPU. tokens/s: real tokens trained per
second after the first two steps (needs --steps 3 or more). On a GPU, give it work the size of a real batch:
--batch-size 8 --row-tokens 512.
Usage: python bench/memory_1p7b.py [--steps 2] [--batch-size 2] [--row-tokens 40] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import SAME_ROWS, WARMUP_STEPS, ftchat_train, run_or_explain, steady_rate

SHAPE = dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
             intermediate_size=8192, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)
CONFIGS = [  # (label, adapter, precision) - the first is the baseline
    ("LoRA fp32 (baseline)", "lora", "fp32"),
    ("LoRA bf16", "lora", "bf16"),
    ("QLoRA NF4", "qlora", "4bit"),
]


def build_random_base(target: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftchat import models

    tokenizer = models.load_tokenizer()
    config = LlamaConfig(**SHAPE, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    for param in model.parameters():  # values do not matter, but NaNs from uninitialised memory would
        torch.nn.init.normal_(param, std=0.02)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters", flush=True)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--row-tokens", type=int, default=40, help="about this many tokens per conversation")
    parser.add_argument("--keep", help="build the base here once and reuse it")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp) / "base"
        if not (base / "config.json").exists():
            build_in_child(base)
        data = Path(tmp) / "chats.jsonl"
        data.write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": f"What is code {i} of the Orrin vault?"},
            {"role": "assistant", "content": " ".join(
                [f"Code {i} of the Orrin vault is {i * 7919 % 10000:04d}."] * max(1, (args.row_tokens - 25) // 14))}]})
            + "\n" for i in range(8 * args.batch_size)))
        results = []
        for index, (label, adapter, precision) in enumerate(CONFIGS):
            out = Path(tmp) / f"run{index}"
            started = time.time()
            run = ftchat_train(data, out, "--max-steps", str(args.steps), "--logging-steps", "1", *SAME_ROWS,
                               "--base", str(base), "--adapter", adapter, "--precision", precision,
                               "--batch-size", str(args.batch_size))
            summary, rows = run.summary, run.steps("tokens")
            times, tokens = [m["elapsed_s"] for m in rows], [m["tokens"] for m in rows]
            speed = steady_rate(times, tokens) if args.steps > WARMUP_STEPS else float("nan")
            results.append((label, summary["peak_memory_mb"], summary["s_per_step"], speed, time.time() - started))
            print(f"{label}: {summary['peak_memory_mb']:.0f} MB, {speed:.0f} tokens/s", flush=True)
    base_mb = results[0][1]
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    peak = "peak CUDA MB" if torch.cuda.is_available() else "peak RSS MB"
    print(f"\n1.7B Llama shape on {where}, {args.steps} steps, batch {args.batch_size}, rows of ~{args.row_tokens} "
          "tokens, each in a fresh process")
    print(f"{'technique':22} {peak:>12} {'memory x':>9} {'s/step':>7} {'tokens/s':>9} {'wall s':>7}")
    for label, mb, s_step, speed, wall in results:
        print(f"{label:22} {mb:12.0f} {mb / base_mb:9.2f} {s_step:7.2f} {speed:9.0f} {wall:7.0f}")


def build_in_child(base: Path) -> None:
    """Building in its own process keeps the random model's memory out of this one."""
    run_or_explain([sys.executable, __file__, "--build", str(base)])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--build":
        build_random_base(Path(sys.argv[2]))
    else:
        main()
