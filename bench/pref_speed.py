"""DPO and KTO steps: `ftchat train --method dpo|kto` against the plain TRL script (bench/trl_pref_baseline.py
--method dpo|kto), side by side in one run. Issue 10, target 4: no slower (s/step ratio <= 1.0).

Both sides train the bundled model on the same rows, with the same batch size, max_length and number of steps, each
in a fresh process; runs are interleaved (plain, ftchat, then ftchat, plain, ...) and medians reported, since the
machine is shared. The rows: real preference pairs from ../shared/peer-data (Anthropic HH-RLHF harmless-base, 40
pairs of 53-399 tokens), normalized once by ftchat.data to TRL's conversational format and written to one JSONL file
that both sides read; KTO rows are the same pairs unpaired (chosen -> label true, rejected -> false) unless
--kto-data names a KTO-shaped file. Rows over --max-length are dropped for both sides (ftchat skips them, TRL would
truncate them).
- s/step: median wall time of steps 3..N (the first steps carry one-off warm-up work), from ftchat's metrics.jsonl
  and from a step clock in the plain script;
- rows/s: batch size / s/step (a row is a pair for DPO, a rated answer for KTO);
- train s: the whole trainer.train() call (reference log-probs precomputed before the first step would show here);
- peak RSS of the training process.

Usage: python bench/pref_speed.py [--steps 10] [--batch 4] [--repeats 2] [--max-length 512] [--kto-data FILE]
       [--methods dpo kto] [--ftchat-args "--gradient-checkpointing"] [--json bench/results/pref_speed.json]
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    PEER_DATA,
    ROOT,
    SAME_ROWS,
    WARMUP_STEPS,
    ftchat_train,
    medians,
    run_or_explain,
    step_seconds,
    write_json,
    write_jsonl,
)

DPO_DATA = PEER_DATA / "anthropic" / "hh-rlhf_harmless-base_test.first40.jsonl"
BASELINE = "bench/trl_pref_baseline.py"
ROW = {"dpo": "pairs", "kto": "rated answers"}


def normalized_rows(path: Path, tokenizer, max_length: int) -> tuple[list[dict], str, int]:
    """The file's rows in TRL's shape as ftchat.data reads them, without those over max_length: (rows, shape,
    rows dropped)."""
    from ftchat.data import load_dataset

    dataset, shape, reports = load_dataset([str(path)], tokenizer=tokenizer, max_tokens=max_length)
    return dataset.to_list(), shape, sum(len(r.skipped) for r in reports)


def unpaired(pairs: list[dict]) -> list[dict]:
    """KTO rows from preference pairs: the chosen answer rated good, the rejected one bad."""
    return [row for pair in pairs for row in ({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
                                              {"prompt": pair["prompt"], "completion": pair["rejected"],
                                               "label": False})]


def summarize(ends: list[float], batch: int, train_s: float, peak_mb: float, losses: list[float]) -> dict:
    steps = step_seconds(ends)
    s_per_step = statistics.median(steps)
    return {"s_per_step": s_per_step, "rows_per_s": batch / s_per_step, "train_s": train_s, "peak_rss_mb": peak_mb,
            "step_s": [round(s, 3) for s in steps], "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None}


def run_plain(method: str, model_dir: Path, data: Path, args, work: Path) -> dict:
    report = work / "report.json"
    run_or_explain([sys.executable, BASELINE, "--method", method, str(model_dir), str(data), "--steps",
                    str(args.steps), "--batch-size", str(args.batch), "--max-length", str(args.max_length),
                    "--out", str(work), "--report", str(report)])
    data = json.loads(report.read_text())
    losses = [h["loss"] for h in data["log_history"] if "loss" in h and "train_loss" not in h]
    return summarize(data["step_times"], args.batch, data["train_runtime_s"], data["peak_rss_mb"], losses)


def run_ftchat(method: str, data: Path, args, work: Path) -> dict:
    # the same rows as the plain script
    run = ftchat_train(data, work, "--method", method, "--max-steps", str(args.steps), "--batch-size", str(args.batch),
                       "--max-length", str(args.max_length), "--logging-steps", "1", *SAME_ROWS,
                       *shlex.split(args.ftchat_args))
    logged = run.steps()
    return summarize([r["elapsed_s"] for r in logged], args.batch, run.summary["runtime_s"],
                     run.summary["peak_memory_mb"], [r["loss"] for r in logged])


def median_of(runs: list[dict]) -> dict:
    return medians(runs, ("s_per_step", "rows_per_s", "train_s", "peak_rss_mb"))


def print_table(args, results: dict, datasets: dict) -> None:
    print(f"\nDPO / KTO, {args.steps} steps x batch {args.batch}, max_length {args.max_length}, bundled model, "
          f"median of {args.repeats} interleaved runs each (s/step: median of steps {WARMUP_STEPS + 1}..{args.steps}); "
          f"ftchat flags: {args.ftchat_args or '(defaults)'}")
    for method, info in datasets.items():
        print(f"  {method}: {info['rows']} {ROW[method]} from {info['source']}"
              + (f" ({info['dropped']} over max_length dropped)" if info["dropped"] else ""))
    print("\n| method | side | s/step | rows/s | train s | peak RSS MB | s/step x | memory x | each run's s/step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for method, sides in results.items():
        plain = median_of(sides["plain"])
        for side, label in (("plain", "plain TRL script"), ("ftchat", "ftchat train")):
            m = median_of(sides[side])
            runs = ", ".join(f"{r['s_per_step']:.2f}" for r in sides[side])
            print(f"| {method.upper()} | {label} | {m['s_per_step']:.2f} | {m['rows_per_s']:.3f} | "
                  f"{m['train_s']:.0f} | {m['peak_rss_mb']:.0f} | {m['s_per_step'] / plain['s_per_step']:.2f} | "
                  f"{m['peak_rss_mb'] / plain['peak_rss_mb']:.2f} | {runs} |")
    print("\ns/step x = ftchat / plain (target: <= 1.00, no slower); rows = pairs for DPO, rated answers for KTO.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--dpo-data", default=str(DPO_DATA), help="a preference file (any format ftchat reads)")
    parser.add_argument("--kto-data", help="a KTO-shaped file; default: the DPO pairs unpaired")
    parser.add_argument("--methods", nargs="+", default=["dpo", "kto"], choices=["dpo", "kto"])
    parser.add_argument("--ftchat-args", default="", help="extra `ftchat train` flags, to measure a lever")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "pref_speed.json"))
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be more than the {WARMUP_STEPS} warm-up steps")

    from ftchat import models

    model_dir = models.resolve_base(models.DEFAULT_BASE)
    tokenizer = models.load_tokenizer(models.DEFAULT_BASE)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs, shape, dropped = normalized_rows(Path(args.dpo_data), tokenizer, args.max_length)
        if shape != "preference":
            raise SystemExit(f"--dpo-data {args.dpo_data}: holds {shape} rows, not preference pairs")
        files = {"dpo": write_jsonl(tmp / "pairs.jsonl", pairs)}
        datasets = {"dpo": {"source": Path(args.dpo_data).name, "rows": len(pairs), "dropped": dropped}}
        if args.kto_data:
            rows, shape, dropped = normalized_rows(Path(args.kto_data), tokenizer, args.max_length)
            if shape != "unpaired_preference":
                raise SystemExit(f"--kto-data {args.kto_data}: holds {shape} rows, not prompt/completion/label")
            datasets["kto"] = {"source": Path(args.kto_data).name, "rows": len(rows), "dropped": dropped}
        else:
            rows = unpaired(pairs)
            datasets["kto"] = {"source": f"{Path(args.dpo_data).name}, each pair unpaired", "rows": len(rows),
                               "dropped": 2 * datasets["dpo"]["dropped"]}
        files["kto"] = write_jsonl(tmp / "kto.jsonl", rows)
        datasets = {m: datasets[m] for m in args.methods}
        results = {m: {"plain": [], "ftchat": []} for m in args.methods}
        for repeat in range(args.repeats):
            for method in args.methods:
                # alternate which side goes first, so a slow stretch of a shared machine hits both
                order = ("plain", "ftchat") if repeat % 2 == 0 else ("ftchat", "plain")
                for side in order:
                    work = tmp / f"{method}-{side}-{repeat}"
                    started = time.time()
                    if side == "plain":
                        r = run_plain(method, model_dir, files[method], args, work)
                    else:
                        r = run_ftchat(method, files[method], args, work)
                    results[method][side].append(r)
                    print(f"{method} {side} run {repeat + 1}: {r['s_per_step']:.2f} s/step, "
                          f"{r['peak_rss_mb']:.0f} MB ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    print_table(args, results, datasets)
    out = write_json(args.json, {
        "date": time.strftime("%Y-%m-%d %H:%M"), "steps": args.steps, "batch": args.batch,
        "max_length": args.max_length, "repeats": args.repeats, "ftchat_args": args.ftchat_args,
        "warmup_steps_left_out": WARMUP_STEPS, "data": datasets,
        "results": {m: {side: {"median": median_of(runs), "runs": runs} for side, runs in sides.items()}
                    for m, sides in results.items()},
        "ratio_s_per_step": {m: median_of(s["ftchat"])["s_per_step"] / median_of(s["plain"])["s_per_step"]
                             for m, s in results.items()},
    })
    print(f"written: {out}")


if __name__ == "__main__":
    main()
