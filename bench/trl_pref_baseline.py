"""The DPO and KTO baselines: a plain TRL script as a user would write it from the TRL DPO or KTO docs, with no
ftchat code in it.

--method dpo: DPOTrainer on TRL's conversational preference rows (prompt / chosen / rejected).
--method kto: KTOTrainer on TRL's conversational unpaired preference rows (prompt / completion / label), desirable
and undesirable weights 1.0.
Both: LoRA r=16 on all linear layers, no ref_model (TRL then uses the base with the adapter switched off), TRL's
defaults otherwise (activation checkpointing on, reference log-probs computed at each step). bf16 is switched off:
TRL's default turns on bf16 autocast, which this CPU only emulates; fp32 is what a user on a CPU ends up with. Writes
the trainer's log history, the wall time at the end of each step, train()'s wall time and the process's peak RSS to
--report. The settings shared with the SFT baseline (bench/trl_baseline.py) are imported from it.

Usage: python bench/trl_pref_baseline.py --method dpo|kto MODEL_DIR ROWS.jsonl --steps 10 --batch-size 4
       --max-length 512 --out DIR --report report.json
"""
import argparse
import json
import time

from datasets import load_dataset
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
from trl_baseline import StepClock, lora, peak_mb, plain_settings

TRAINERS = {"dpo": (DPOConfig, DPOTrainer), "kto": (KTOConfig, KTOTrainer)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", required=True, choices=list(TRAINERS))
    parser.add_argument("model")
    parser.add_argument("train")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()

    config, trainer_class = TRAINERS[args.method]
    clock = StepClock()
    trainer = trainer_class(
        model=args.model,
        train_dataset=load_dataset("json", data_files=args.train, split="train"),
        args=config(**plain_settings(args.out, max_length=args.max_length, batch_size=args.batch_size,
                                     steps=args.steps)),
        peft_config=lora(),
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
