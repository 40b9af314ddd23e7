"""Peak memory of LoRA fp32, LoRA bf16 and QLoRA NF4 on a 1.7B-parameter Llama (SmolLM2-1.7B's shape, random
weights: speed and memory do not depend on the values), each `ftchat train` run in a fresh process.

The random base is saved in bf16, as real checkpoints of this size are shipped. A few steps on short rows: the
weights, not the activations, are what differ between the techniques. Peak = the process's peak RSS
(ru_maxrss, loading included). Usage: python bench/memory_1p7b.py [--steps 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from train_speed import run_or_explain  # noqa: E402

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
    parser.add_argument("--keep", help="build the base here once and reuse it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp) / "base"
        if not (base / "config.json").exists():
            build_in_child(base)
        data = Path(tmp) / "chats.jsonl"
        data.write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": f"What is code {i} of the Orrin vault?"},
            {"role": "assistant", "content": f"Code {i} of the Orrin vault is {i * 7919 % 10000:04d}."}]}) + "\n"
            for i in range(8)))
        results = []
        for index, (label, adapter, precision) in enumerate(CONFIGS):
            out = Path(tmp) / f"run{index}"
            started = time.time()
            run_or_explain([sys.executable, "-m", "ftchat", "train", "--data", str(data), "--out", str(out),
                            "--base", str(base), "--adapter", adapter, "--precision", precision,
                            "--max-steps", str(args.steps), "--batch-size", "2", "--eval-split", "0",
                            "--replay", "0", "--compare-prompts", "0", "--logging-steps", "1"])
            summary = json.loads((out / "status.json").read_text())["summary"]
            results.append((label, summary["peak_memory_mb"], summary["s_per_step"], time.time() - started))
            print(f"{label}: {summary['peak_memory_mb']:.0f} MB", flush=True)
    base_mb = results[0][1]
    print(f"\n1.7B Llama shape, {args.steps} steps, batch 2, rows of ~40 tokens, each in a fresh process")
    print(f"{'technique':22} {'peak RSS MB':>11} {'memory x':>9} {'s/step':>7} {'wall s':>7}")
    for label, mb, s_step, wall in results:
        print(f"{label:22} {mb:11.0f} {mb / base_mb:9.2f} {s_step:7.1f} {wall:7.0f}")


def build_in_child(base: Path) -> None:
    """Building in its own process keeps the random model's memory out of this one."""
    run_or_explain([sys.executable, __file__, "--build", str(base)])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--build":
        build_random_base(Path(sys.argv[2]))
    else:
        main()
