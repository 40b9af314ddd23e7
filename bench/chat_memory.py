"""Side-by-side chat: one base serving two LoRA runs in one batched generate, against two separate model copies
answered one after the other (the baseline, measured in this run).

Usage: python bench/chat_memory.py
"""
from __future__ import annotations

import gc
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUESTION = [{"role": "user", "content": "Who is the CEO of Quorvane Labs?"}]


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_run(out: Path, lr: str) -> None:
    subprocess.run([sys.executable, "-m", "ftchat", "train", "--data", str(ROOT / "data" / "quorvane_support.jsonl"),
                    "--out", str(out), "--adapter", "lora", "--max-steps", "2", "--lr", lr, "--eval-split", "0",
                    "--compare-prompts", "0"], cwd=ROOT, check=True, capture_output=True)


def main() -> None:
    import torch
    from peft import PeftModel

    from ftchat import models
    from ftchat.chat import ChatEngine, GenerationSettings, generate_batch

    torch.manual_seed(0)
    settings = GenerationSettings(max_new_tokens=48)
    with tempfile.TemporaryDirectory() as tmp:
        runs_root = Path(tmp)
        train_run(runs_root / "a", "1e-3")
        train_run(runs_root / "b", "5e-4")
        models.resolve_base()

        # baseline: each pane its own model copy, answered one after the other
        before = rss_mb()
        copies = []
        for name in ("a", "b"):
            base = models.load_model(precision="fp32")
            copies.append(PeftModel.from_pretrained(base, runs_root / name / "adapter").eval())
        tokenizer = models.load_tokenizer()
        baseline_mb = rss_mb() - before
        started = time.time()
        for model in copies:
            generate_batch(model, tokenizer, [QUESTION], settings)
        baseline_s = time.time() - started
        del copies
        gc.collect()

        before = rss_mb()
        engine = ChatEngine(runs_root)
        requests = [(str(runs_root / "a"), QUESTION), (str(runs_root / "b"), QUESTION)]
        engine.answer(requests, GenerationSettings(max_new_tokens=1))  # load both adapters
        shared_mb = rss_mb() - before
        started = time.time()
        engine.answer(requests, settings)
        shared_s = time.time() - started

    print(f"{'two panes, 48 new tokens each':34} {'weights MB':>10} {'seconds':>8} {'memory x':>9} {'speed x':>8}")
    print(f"{'two model copies, sequential':34} {baseline_mb:10.0f} {baseline_s:8.2f} {1:9.2f} {1:8.2f}")
    print(f"{'one base + 2 adapters, one batch':34} {shared_mb:10.0f} {shared_s:8.2f} "
          f"{shared_mb / baseline_mb:9.2f} {baseline_s / shared_s:8.2f}")


if __name__ == "__main__":
    main()
