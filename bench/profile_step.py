"""Where an SFT step's time goes on this CPU, and what the fused AdamW, torch.compile and thread counts give.

Each variant trains the bundled model with `ftchat train`'s own code (ftchat.train.run.run_training, the shipped
defaults: LoRA, bf16 matmuls where the CPU has them) in a fresh process, on two kinds of rows:
- chat: 200 FastChat conversations from ../shared/peer-data (short rows, batch 4);
- long: the same conversations' text as one document, cut into 512-token rows (batch 4).
It reports real tokens/s from step 3 on, the model FLOPs that implies (4·N a token: the frozen weights' forward and
the activations' backward; LoRA's own work is under 1% of it), that rate against this CPU's bf16 and fp32 matmul
ceilings measured in the same process (2048² matmuls), and, for the default variant, the profiler's self-CPU time by
kind of op (matmuls, attention, the LM head's loss, the optimizer, the rest).

Usage: python bench/profile_step.py [--steps 8] [--variants default fused compile threads1] [--rows chat long]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import PEER_DATA, ROOT, machine, run_or_explain, steady_rate, utc_stamp, write_json

FASTCHAT = PEER_DATA / "fastchat" / "dummy_conversation.json"
RESULTS = ROOT / "bench" / "results" / "profile_step.json"
VARIANTS = {
    "default": {},
    "unfused": {"optim": "adamw_torch"},  # transformers 5 defaults to the fused AdamW
    "compile": {"torch_compile": True},
    "threads1": {"threads": 1},
    "nodropout": {"config": {"lora_dropout": 0.0}},
    # attention over the padding-free row's block-diagonal mask, as transformers' SDPA runs it (before
    # ftchat.train.attention)
    "blockmask": {"packed_attention": False},
}
KINDS = {
    "mm": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::_weight_int"),
    "attention": ("scaled_dot_product", "attention"),
    "loss": ("cross_entropy", "log_softmax", "nll_loss"),
    "optimizer": ("Optimizer.step", "_foreach", "adam", "_fused_adam"),
}


def matmul_ceiling(dtype_name: str, size: int = 2048, rounds: int = 5) -> float:
    """GFLOP/s of a size² matmul in `dtype_name` with torch's threads, best of `rounds`."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e9


def write_data(kind: str, folder: Path) -> Path:
    conversations = json.loads(FASTCHAT.read_text())[:200]
    if kind == "chat":
        path = folder / "chat.json"
        path.write_text(json.dumps(conversations))
        return path
    path = folder / "long.txt"
    path.write_text("\n\n".join(turn["value"] for row in conversations for turn in row["conversations"]))
    return path


def child(args) -> None:
    """One variant in this process: train, profile the steps after warm-up, write the figures to args.report."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ftchat.config import RunConfig
    from ftchat.train import common
    from ftchat.train.run import run_training

    variant = VARIANTS[args.variant]
    if "threads" in variant:
        torch.set_num_threads(variant["threads"])
    if variant.get("packed_attention") is False:
        from ftchat.train import sft

        sft.use_packed_attention = lambda model: False
    extra = {k: v for k, v in variant.items() if k not in ("threads", "config", "packed_attention")}
    if extra:
        original = common.trainer_arguments
        common.trainer_arguments = lambda config, has_eval: {**original(config, has_eval), **extra}
    ceilings = {"bf16": matmul_ceiling("bfloat16"), "fp32": matmul_ceiling("float32")}
    config = RunConfig(data=[args.data], out=args.out, max_steps=args.steps, logging_steps=1, eval_split=0,
                       replay=0, compare_prompts=0, batch_size=4, chunk_tokens=512, **variant.get("config", {}))
    prof = None
    if args.profile:  # record the steps after warm-up only: the step boundary is the end of a training_step
        from torch.profiler import schedule
        from transformers import Trainer

        prof = profile(activities=[ProfilerActivity.CPU],
                       schedule=schedule(wait=2, warmup=1, active=max(1, args.steps - 3), repeat=1))
        training_step = Trainer.training_step

        def stepped(self, *a, **k):
            loss = training_step(self, *a, **k)
            prof.step()
            return loss

        Trainer.training_step = stepped
        prof.start()
    run_training(config)
    if prof is not None:
        prof.stop()
    rows = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "tokens" in r]
    tokens_per_s = steady_rate([r["elapsed_s"] for r in steps], [r["tokens"] for r in steps])
    from ftchat import models

    n_params = sum(p.numel() for p in models.load_model(models.DEFAULT_BASE, precision="fp32").parameters())
    shares = {}
    if args.profile:
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        for event in events:
            kind = next((k for k, names in KINDS.items() if any(n.lower() in event.key.lower() for n in names)),
                        "other")
            shares[kind] = shares.get(kind, 0) + event.self_cpu_time_total / total
        shares["top"] = [(e.key, round(e.self_cpu_time_total / total, 3))
                         for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]]
    write_json(args.report, {"tokens_per_s": tokens_per_s, "gflops": 4 * n_params * tokens_per_s / 1e9,
                             "ceilings": ceilings, "threads": torch.get_num_threads(),
                             "tokens_per_step": steps[-1]["tokens"] / len(steps), "shares": shares})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--variants", nargs="*", default=["blockmask", "default", "threads1"], choices=sorted(VARIANTS))
    parser.add_argument("--rows", nargs="*", default=["chat", "long"], choices=["chat", "long"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = {"date": utc_stamp(), "machine": machine(), "steps": args.steps, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="profile-step-") as tmp:
        folder = Path(tmp)
        for rows in args.rows:
            data = write_data(rows, folder)
            for variant in args.variants:
                report = folder / f"{rows}-{variant}.json"
                command = [sys.executable, "bench/profile_step.py", "--child", "--variant", variant, "--data",
                           str(data), "--steps", str(args.steps)]
                run_or_explain(command + ["--out", str(folder / f"run-{rows}-{variant}"), "--report", str(report)])
                got = json.loads(report.read_text())
                if variant == "default":  # the profiler slows the steps: its shares come from a run of their own
                    profiled = folder / f"{rows}-{variant}-profiled.json"
                    run_or_explain(command + ["--out", str(folder / f"run-{rows}-profiled"), "--report",
                                              str(profiled), "--profile"])
                    got["shares"] = json.loads(profiled.read_text())["shares"]
                results["rows"].setdefault(rows, {})[variant] = got
                print(f"{rows:5} {variant:9} {got['tokens_per_s']:7.1f} tok/s  {got['gflops']:6.1f} GFLOP/s = "
                      f"{got['gflops'] / got['ceilings']['bf16']:.0%} of bf16 {got['ceilings']['bf16']:.0f}, "
                      f"{got['gflops'] / got['ceilings']['fp32']:.0%} of fp32 {got['ceilings']['fp32']:.0f}; "
                      f"{got['tokens_per_step']:.0f} tokens a step", flush=True)
                if got["shares"]:
                    print("      " + ", ".join(f"{k} {v:.0%}" for k, v in got["shares"].items() if k != "top"))
                    print("      top: " + "; ".join(f"{k} {v:.0%}" for k, v in got["shares"]["top"]))
    write_json(RESULTS, results)
    print(f"kept in {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
