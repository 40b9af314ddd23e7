"""Side-by-side chat: one base serving two LoRA runs in one batched generate, against the baseline of two separate
model copies answered one after the other, measured in this run.

Memory is the bytes of distinct weight tensors held (RSS misses memory-mapped safetensors); time is the median
of 3 rounds. Usage: python bench/chat_memory.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from common import SAME_ROWS, SUPPORT_DATA, ftchat_train, median_seconds

QUESTION = [{"role": "user", "content": "Tell me about Quorvane Labs."}]


def weight_bytes(*modules) -> int:
    seen, total = set(), 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
    return total


def train_run(out: Path, lr: str) -> None:
    ftchat_train(SUPPORT_DATA, out, "--adapter", "lora", "--max-steps", "3", "--lr", lr, *SAME_ROWS)


def main() -> None:
    from peft import PeftModel

    from ftchat import models
    from ftchat.chat.generation import GenerationSettings, generate_batch

    settings = GenerationSettings(max_new_tokens=48, repetition_penalty=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        runs_root = Path(tmp)
        train_run(runs_root / "a", "1e-3")
        train_run(runs_root / "b", "3e-3")
        tokenizer = models.load_tokenizer()

        copies = [PeftModel.from_pretrained(models.load_model(precision="fp32"), runs_root / n / "adapter").eval()
                  for n in ("a", "b")]
        copies_mb = weight_bytes(*copies) / 2**20
        # the copies bound as a default: `del copies` below drops them before the shared model loads
        copies_s = median_seconds(lambda two=copies: [generate_batch(m, tokenizer, [QUESTION], settings) for m in two])
        del copies

        shared = PeftModel.from_pretrained(models.load_model(precision="fp32"), runs_root / "a" / "adapter",
                                           adapter_name="a")
        shared.load_adapter(runs_root / "b" / "adapter", adapter_name="b")
        shared.eval()
        shared_mb = weight_bytes(shared) / 2**20
        shared_s = median_seconds(
            lambda: generate_batch(shared, tokenizer, [QUESTION, QUESTION], settings, adapter_names=["a", "b"]))

    print(f"{'two panes, up to 48 new tokens':34} {'weights MB':>10} {'seconds':>8} {'memory x':>9} {'speed x':>8}")
    print(f"{'two model copies, sequential':34} {copies_mb:10.0f} {copies_s:8.2f} {1:9.2f} {1:8.2f}")
    print(f"{'one base + 2 adapters, one batch':34} {shared_mb:10.0f} {shared_s:8.2f} "
          f"{shared_mb / copies_mb:9.2f} {copies_s / shared_s:8.2f}")


if __name__ == "__main__":
    main()
