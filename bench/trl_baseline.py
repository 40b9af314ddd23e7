"""The baseline: a plain TRL script as a user would write it from the TRL SFT docs, with no ftchat code in it.

SFTTrainer, LoRA r=16 on all linear layers, max_length 512, TRL's defaults otherwise (activation checkpointing on,
learning rate 2e-5, loss on every token). bf16 is switched off: TRL's default turns on bf16 autocast, which this CPU
only emulates; fp32 is what a user on a CPU ends up with. Writes the trainer's log history and the process's peak
RSS to --report.

Usage: python bench/trl_baseline.py MODEL_DIR TRAIN.json --steps 20 --out DIR --report report.json
"""
import argparse
import json
import resource
import time

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

# On a GPU a user keeps TRL's defaults (bf16 autocast); on this CPU bf16 is only emulated, so fp32.
ON_GPU = torch.cuda.is_available()


def peak_mb() -> float:
    """Peak CUDA memory allocated on a GPU, else the process's peak RSS."""
    if ON_GPU:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepClock(TrainerCallback):
    """Wall time at the end of each step, so the bench can leave the warm-up steps out."""

    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.time())


def plain_settings(out: str, max_length: int, batch_size: int, steps: int) -> dict:
    """What the plain scripts set in TRL's config (SFTConfig, DPOConfig, KTOConfig); TRL's defaults otherwise."""
    return dict(output_dir=out, max_length=max_length, per_device_train_batch_size=batch_size, max_steps=steps,
                logging_steps=1, bf16=ON_GPU, use_cpu=not ON_GPU, report_to="none", save_strategy="no")


def lora() -> LoraConfig:
    """The plain scripts' adapter: LoRA r=16 (alpha 32, dropout 0.05) on all linear layers."""
    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("train")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()

    # FastChat/ShareGPT rows -> the "messages" shape of the TRL docs
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    rows = json.load(open(args.train))
    dataset = Dataset.from_list([
        {"messages": [{"role": roles[turn["from"]], "content": turn["value"]} for turn in row["conversations"]]}
        for row in rows
    ])

    clock = StepClock()
    trainer = SFTTrainer(
        model=args.model,
        train_dataset=dataset,
        args=SFTConfig(**plain_settings(args.out, max_length=512, batch_size=args.batch_size, steps=args.steps)),
        peft_config=lora(),
        callbacks=[clock],
    )
    trainer.train()
    trainer.save_model(args.out + "/adapter")
    json.dump({"log_history": trainer.state.log_history, "step_times": clock.times,
               "peak_rss_mb": peak_mb()},
              open(args.report, "w"))


if __name__ == "__main__":
    main()
