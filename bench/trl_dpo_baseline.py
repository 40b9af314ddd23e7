"""The DPO baseline: a plain TRL script as a user would write it from the TRL DPO docs, with no ftchat code in it.

DPOTrainer on TRL's conversational preference rows (prompt / chosen / rejected), LoRA r=16 on all linear layers, no
ref_model (TRL then uses the base with the adapter switched off), TRL's defaults otherwise (activation checkpointing
on, reference log-probs computed at each step). bf16 is switched off: TRL's default turns on bf16 autocast, which
this CPU only emulates; fp32 is what a user on a CPU ends up with. Writes the trainer's log history, the wall time
at the end of each step, train()'s wall time and the process's peak RSS to --report.

Usage: python bench/trl_dpo_baseline.py MODEL_DIR PAIRS.jsonl --steps 10 --batch-size 4 --max-length 512
       --out DIR --report report.json
"""
import argparse
import json
import resource
import time

import torch
from datasets import load_dataset
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer

# On a GPU a user keeps TRL's defaults (bf16 autocast); on this CPU bf16 is only emulated, so fp32.
ON_GPU = torch.cuda.is_available()


def peak_mb() -> float:
    """Peak CUDA memory allocated on a GPU, else the process's peak RSS."""
    if ON_GPU:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

from trl_baseline import StepClock


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("train")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()

    clock = StepClock()
    trainer = DPOTrainer(
        model=args.model,
        train_dataset=load_dataset("json", data_files=args.train, split="train"),
        args=DPOConfig(
            output_dir=args.out,
            max_length=args.max_length,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps,
            logging_steps=1,
            bf16=ON_GPU,
            use_cpu=not ON_GPU,
            report_to="none",
            save_strategy="no",
        ),
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                               task_type="CAUSAL_LM"),
        callbacks=[clock],
    )
    started = time.time()
    trainer.train()
    json.dump({"log_history": trainer.state.log_history, "step_times": clock.times,
               "train_runtime_s": time.time() - started,
               "peak_rss_mb": peak_mb()},
              open(args.report, "w"))


if __name__ == "__main__":
    main()
