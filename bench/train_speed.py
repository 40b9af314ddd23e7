"""Training speed and memory of each precision on the bundled model, as ratios to fp32 LoRA measured in this run.
"bf16 autocast" keeps fp32 weights and runs the matmuls in bf16 (models.autocast_bf16, the default where the CPU
computes bf16 natively); "bf16 weights" stores the base in bf16 too.

Each configuration trains in a fresh process (peak memory is per process), on data/quorvane_support.jsonl.
Usage: python bench/train_speed.py [--steps 12]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from common import SUPPORT_DATA, ftchat_train, steady_rate, step_seconds

# steady rates start at the end of step 3 (this bench has always left one step more out than the others)
LEFT_OUT = 3
CONFIGS = [  # (label, adapter, precision, compute dtype) - the first is the baseline
    ("LoRA fp32 (baseline)", "lora", "fp32", "fp32"),
    ("LoRA fp32 + bf16 autocast", "lora", "auto", "bf16"),  # the default where the CPU has native bf16
    ("LoRA bf16 weights", "lora", "bf16", "bf16"),
    ("QLoRA NF4 + bf16 compute", "qlora", "4bit", "bf16"),
    ("QLoRA NF4 + fp32 compute", "qlora", "4bit", "fp32"),
    ("QLoRA default (auto)", "qlora", "auto", ""),
    ("Full fp32", "full", "fp32", "fp32"),
    ("Full fp32 + bf16 autocast", "full", "auto", "bf16"),
]


def measure(adapter: str, precision: str, compute: str, steps: int, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FTCHAT_COMPUTE_DTYPE"}
    if compute:
        env["FTCHAT_COMPUTE_DTYPE"] = compute
    run = ftchat_train(SUPPORT_DATA, out, "--adapter", adapter, "--precision", precision, "--max-steps", str(steps),
                       "--eval-split", "0", "--compare-prompts", "0", "--logging-steps", "1", env=env)
    rows = run.steps()
    times, tokens = [m["elapsed_s"] for m in rows], [m["tokens"] for m in rows]
    return {"s_per_step": statistics.mean(step_seconds(times, LEFT_OUT)),
            "tokens_per_s": steady_rate(times, tokens, LEFT_OUT),
            "peak_memory_mb": run.summary["peak_memory_mb"], "final_loss": run.summary["final_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, adapter, precision, compute) in enumerate(CONFIGS):
            results.append((label, measure(adapter, precision, compute, args.steps, Path(tmp) / str(index))))
    base = results[0][1]
    print(f"{'configuration':28} {'s/step':>7} {'tok/s':>7} {'peak MB':>8} {'speed x':>8} {'memory x':>9}")
    for label, r in results:
        print(f"{label:28} {r['s_per_step']:7.2f} {r['tokens_per_s']:7.1f} {r['peak_memory_mb']:8.0f} "
              f"{base['s_per_step'] / r['s_per_step']:8.2f} {r['peak_memory_mb'] / base['peak_memory_mb']:9.2f}")


if __name__ == "__main__":
    main()
