"""Three runs started together wait their turn: the wall time from starting all three to the last one done, against
the sum of the three trained alone (and against the three trained at once beside each other, as ftchat did before
the queue).

Each run is `python -m ftchat train` in a fresh process: the bundled model (the default base), LoRA SFT, 8 steps, on
8 short conversations about the Zumo lamp (tests/fictional_facts.py's FACT_CHATS), no eval split, replay or comparison.
The threads are this shell's (OMP_NUM_THREADS if set, else every core for one run: the queue gives a run all the
cores of its slot).
Usage: python bench/queue_speed.py [--runs 3] [--steps 8] [--skip-at-once]
(not bench/queue.py: that name hides the standard library's queue from every script run from bench/)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SAME_ROWS, machine, read_status, use_tests, utc_stamp, write_json, write_jsonl

use_tests()
from fictional_facts import FACT_CHATS  # noqa: E402


def command(data: Path, out: Path, steps: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "ftchat", "train", "--data", str(data), "--out", str(out), "--adapter", "lora",
            "--max-steps", str(steps), *SAME_ROWS, *flags]


def start_together(data: Path, root: Path, runs: int, steps: int, *flags: str) -> tuple[float, list[dict]]:
    """Start `runs` trainers a moment apart (as a person clicks Start) and wait for all; (wall s, their statuses)."""
    started = time.perf_counter()
    processes = []
    for i in range(runs):
        processes.append(subprocess.Popen(command(data, root / f"run-{i}", steps, *flags), cwd=ROOT,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        time.sleep(0.5)
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(process.args)} failed:\n{err[-3000:]}")
    wall = time.perf_counter() - started
    return wall, [read_status(root / f"run-{i}") for i in range(runs)]


def alone(data: Path, root: Path, runs: int, steps: int) -> tuple[float, list[dict]]:
    """Each run by itself, one after another, each in its own workspace; (sum of their wall s, their statuses)."""
    total, statuses = 0.0, []
    for i in range(runs):
        started = time.perf_counter()
        result = subprocess.run(command(data, root / str(i) / "runs" / "run", steps, "--now"), cwd=ROOT,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"training alone failed:\n{result.stderr[-3000:]}")
        total += time.perf_counter() - started
        statuses.append(read_status(root / str(i) / "runs" / "run"))
    return total, statuses


def s_per_step(statuses: list[dict]) -> float:
    return sum(s["summary"]["s_per_step"] for s in statuses) / len(statuses)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip-at-once", action="store_true", help="leave out the runs trained beside each other")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_jsonl(tmp / "chats.jsonl", [{"messages": [{"role": "user", "content": q},
                                                               {"role": "assistant", "content": a}]}
                                                 for q, a in FACT_CHATS])
        wall, statuses = alone(data, tmp / "alone", args.runs, args.steps)
        rows.append(("alone, one after another (sum)", wall, statuses))
        wall, statuses = start_together(data, tmp / "queued" / "runs", args.runs, args.steps)
        ordered = sorted(statuses, key=lambda s: s["started"])
        one_at_a_time = all(b["started"] >= a["ended"] for a, b in zip(ordered, ordered[1:]))
        rows.append((f"started together, queued ({'one at a time' if one_at_a_time else 'OVERLAPPED'})", wall,
                     statuses))
        if not args.skip_at_once:
            wall, statuses = start_together(data, tmp / "at-once" / "runs", args.runs, args.steps, "--now")
            rows.append(("started together, --now (beside each other)", wall, statuses))
    baseline = rows[0][1]
    print(f"{args.runs} runs x {args.steps} steps, bundled model, LoRA SFT; {machine()}, 1-min load {load:.2f} at "
          f"the start, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {utc_stamp()}")
    print(f"{'mode':50} {'wall s':>7} {'x alone':>8} {'s/step':>7}")
    for label, wall, statuses in rows:
        print(f"{label:50} {wall:7.1f} {wall / baseline:8.2f} {s_per_step(statuses):7.2f}")
    write_json(ROOT / "bench" / "results" / "queue.json", {
        "date": utc_stamp(), "machine": machine(), "load_at_start": load, "runs": args.runs, "steps": args.steps,
        "rows": [{"mode": label, "wall_s": round(wall, 1), "x_alone": round(wall / baseline, 3),
                  "s_per_step": round(s_per_step(statuses), 3)} for label, wall, statuses in rows]})


if __name__ == "__main__":
    main()
