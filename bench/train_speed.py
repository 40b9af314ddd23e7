"""Training speed and memory of each precision on the bundled model, as ratios to fp32 LoRA measured in this run.

Each configuration trains in a fresh process (peak memory is per process), on data/quorvane_support.jsonl.
Usage: python bench/train_speed.py [--steps 12]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [  # (label, adapter, precision, compute dtype) - the first is the baseline
    ("LoRA fp32 (baseline)", "lora", "fp32", "fp32"),
    ("LoRA bf16 weights", "lora", "bf16", "bf16"),
    ("QLoRA NF4 + bf16 compute", "qlora", "4bit", "bf16"),
    ("QLoRA NF4 + fp32 compute", "qlora", "4bit", "fp32"),
    ("QLoRA default (auto)", "qlora", "auto", ""),
]


def run_or_explain(command: list[str], env: dict | None = None) -> None:
    """Run a training command from the repo root; on failure stop with the end of its stderr, not a bare exit code."""
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def measure(adapter: str, precision: str, compute: str, steps: int, out: Path) -> dict:
    command = [sys.executable, "-m", "ftchat", "train", "--data", str(ROOT / "data" / "quorvane_support.jsonl"),
               "--out", str(out), "--adapter", adapter, "--precision", precision, "--max-steps", str(steps),
               "--eval-split", "0", "--compare-prompts", "0", "--logging-steps", "1"]
    env = dict(os.environ, FTCHAT_COMPUTE_DTYPE=compute) if compute else dict(os.environ)
    env.pop("FTCHAT_COMPUTE_DTYPE", None) if not compute else None
    run_or_explain(command, env)
    status = json.loads((out / "status.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [m for m in metrics if "loss" in m][2:]  # the first steps include warm-up work
    elapsed = steady[-1]["elapsed_s"] - steady[0]["elapsed_s"]
    tokens = steady[-1]["tokens"] - steady[0]["tokens"]
    summary = status["summary"]
    return {"s_per_step": elapsed / (len(steady) - 1), "tokens_per_s": tokens / elapsed,
            "peak_memory_mb": summary["peak_memory_mb"], "final_loss": summary["final_loss"]}


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
