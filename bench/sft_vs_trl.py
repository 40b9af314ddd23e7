"""ftchat's SFT against the plain TRL script (bench/trl_baseline.py), side by side in one run.

Both train on the same 200 FastChat conversations for the same steps and batch size, each in a fresh process;
runs are interleaved (baseline, ftchat, baseline, ...) and medians reported, since the machine is shared.
- tokens/s: real tokens (those in the attention mask; padding excluded) trained per second, steps 3..N
  (the first steps carry one-off warm-up work);
- peak RSS of the training process;
- held-out loss: mean loss on the assistant tokens of 50 other FastChat conversations, computed the same way
  for both adapters by this script (`--heldout` mode, a fresh process), after the same steps = the same
  examples = the same real tokens.

Usage: python bench/sft_vs_trl.py [--steps 20] [--repeats 2] [--ftchat-args "--precision 4bit"]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

from common import PEER_DATA, SAME_ROWS, ftchat_train, medians, run_or_explain, steady_rate

FASTCHAT = PEER_DATA / "fastchat" / "dummy_conversation.json"
N_TRAIN, N_HELDOUT = 200, 50


def run_baseline(model_dir: Path, train: Path, steps: int, work: Path) -> dict:
    report = work / "report.json"
    run_or_explain([sys.executable, "bench/trl_baseline.py", str(model_dir), str(train), "--steps", str(steps),
                    "--out", str(work), "--report", str(report)])
    data = json.loads(report.read_text())
    tokens = [h["num_tokens"] for h in data["log_history"] if "num_tokens" in h and "loss" in h]
    return {"tokens_per_s": steady_rate(data["step_times"], tokens), "tokens": tokens[-1],
            "peak_rss_mb": data["peak_rss_mb"], "adapter": work / "adapter"}


def run_ftchat(train: Path, steps: int, work: Path, extra: list[str]) -> dict:
    # the same rows as the baseline
    run = ftchat_train(train, work, "--max-steps", str(steps), "--logging-steps", "1", *SAME_ROWS, *extra)
    rows = run.steps("tokens")
    return {"tokens_per_s": steady_rate([m["elapsed_s"] for m in rows], [m["tokens"] for m in rows]),
            "tokens": rows[-1]["tokens"], "peak_rss_mb": run.summary["peak_memory_mb"],
            "adapter": Path(run.summary["weights"])}


def heldout_loss(model_dir: str, adapter: str | None, heldout: str) -> float:
    """Mean cross-entropy over the assistant tokens of the held-out conversations (fp32, no dropout)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftchat.models import CHATML_TRAINING_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    total, count = 0.0, 0
    for row in json.loads(Path(heldout).read_text()):
        messages = [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]]
        encoded = tokenizer.apply_chat_template(messages, chat_template=CHATML_TRAINING_TEMPLATE, tokenize=True,
                                                return_dict=True, return_assistant_tokens_mask=True)
        ids = torch.tensor([encoded["input_ids"]])
        labels = ids.clone()
        labels[0, torch.tensor(encoded["assistant_masks"]) == 0] = -100
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        targets = labels[0, 1:]
        keep = targets != -100
        total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
        count += int(keep.sum())
    return total / count


def measure_heldout(model_dir: Path, adapter: Path | None, heldout: Path) -> float:
    out = run_or_explain([sys.executable, __file__, "--heldout", str(heldout), "--model", str(model_dir),
                          *(["--adapter", str(adapter)] if adapter else [])]).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ftchat-args", default="", help="extra `ftchat train` flags, to measure a lever")
    parser.add_argument("--heldout")
    parser.add_argument("--model")
    parser.add_argument("--adapter")
    args = parser.parse_args()
    if args.heldout:
        print(heldout_loss(args.model, args.adapter, args.heldout))
        return

    from ftchat import models

    model_dir = models.resolve_base("smollm2-135m")
    rows = json.loads(FASTCHAT.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train, heldout = tmp / "train.json", tmp / "heldout.json"
        train.write_text(json.dumps(rows[:N_TRAIN]))
        heldout.write_text(json.dumps(rows[-N_HELDOUT:]))
        results = {"baseline": [], "ftchat": []}
        for repeat in range(args.repeats):
            results["baseline"].append(run_baseline(model_dir, train, args.steps, tmp / f"trl{repeat}"))
            results["ftchat"].append(run_ftchat(train, args.steps, tmp / f"ftchat{repeat}",
                                                shlex.split(args.ftchat_args)))
        losses = {"base model (no training)": measure_heldout(model_dir, None, heldout)}
        for side in results:
            losses[side] = measure_heldout(model_dir, results[side][-1]["adapter"], heldout)
    med = {side: medians(rs, ("tokens_per_s", "peak_rss_mb", "tokens")) for side, rs in results.items()}
    base = med["baseline"]
    print(f"SFT, {args.steps} steps x batch 4 on {N_TRAIN} FastChat conversations, median of {args.repeats} "
          f"interleaved runs each; ftchat flags: {args.ftchat_args or '(defaults)'}")
    print(f"{'':26} {'real tok/s':>10} {'speed x':>8} {'peak RSS MB':>12} {'memory x':>9} {'tokens':>7} "
          f"{'held-out loss':>14}  (each run's tok/s)")
    labels = {"baseline": "plain TRL script", "ftchat": "ftchat train"}
    for side, label in labels.items():
        r = med[side]
        runs = ", ".join(f"{x['tokens_per_s']:.0f}" for x in results[side])
        print(f"{label:26} {r['tokens_per_s']:10.1f} {r['tokens_per_s'] / base['tokens_per_s']:8.2f} "
              f"{r['peak_rss_mb']:12.0f} {r['peak_rss_mb'] / base['peak_rss_mb']:9.2f} {r['tokens']:7.0f} "
              f"{losses[side]:14.3f}  ({runs})")
    print(f"{'base model, untrained':26} {'':>10} {'':>8} {'':>12} {'':>9} {'':>7} "
          f"{losses['base model (no training)']:14.3f}")


if __name__ == "__main__":
    main()
