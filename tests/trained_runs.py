"""Finished runs on the tiny base, each trained once per session (the fixtures in conftest.py) and read by many tests.
A test that changes a run works on a copy (copy_run); one that checks how training goes trains its own.

- sft_run: one LoRA SFT run on the Zumo lamp facts, with tests/test_train.py's settings (8 steps, lr 1e-2, one
  held-out row, one comparison prompt).
- two_rounds: round `a` learns the Zumo lamp facts, round `b` continues from `a` (its parent) and learns to talk
  about bananas; shared by the export, serve and chat tests.
"""
from __future__ import annotations

import shutil
import signal
from pathlib import Path


def chats_rows(answer: str | None = None) -> list[dict]:
    from conftest import FACT_CHATS

    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer or a}]}
            for q, a in FACT_CHATS]


def train_tiny(**values) -> dict:
    """run_training on a RunConfig of `values`; the run must finish, and SIGTERM means cancel only while it trains."""
    from ftchat.config import RunConfig
    from ftchat.train.run import run_training

    handler = signal.getsignal(signal.SIGTERM)
    status = run_training(RunConfig(**values))
    assert status["state"] == "done", status
    assert signal.getsignal(signal.SIGTERM) is handler, "SIGTERM means cancel only while training"
    return status


# tests/test_train.py's train() settings, with LoRA at lr 1e-2
SFT_RUN = dict(max_steps=8, eval_steps=4, batch_size=4, compare_prompts=1, early_stopping=0,
               eval_split=0.1,  # the plan holds none out of 8
               replay=0, adapter="lora", lr=1e-2)


def make_sft_run(root: Path, base: Path) -> Path:
    from conftest import write_jsonl

    data = write_jsonl(root / "chats.jsonl", chats_rows())
    run_dir = root / "runs" / "sft"
    train_tiny(data=[str(data)], out=str(run_dir), base=str(base), **SFT_RUN)
    return run_dir


def make_two_rounds(workspace: Path, base: Path) -> Path:
    from conftest import write_jsonl

    facts = write_jsonl(workspace / "facts.jsonl", chats_rows())
    bananas = write_jsonl(workspace / "bananas.jsonl", chats_rows("Bananas are yellow."))
    runs = workspace / "runs"
    for name, data, parent in [("a", facts, None), ("b", bananas, runs / "a")]:
        train_tiny(data=[str(data)], out=str(runs / name), base=str(base), adapter="lora",
                   parent=str(parent) if parent else None, max_steps=8, lr=2e-2, compare_prompts=0, eval_split=0,
                   replay=0)
    return workspace


def copy_run(run_dir: Path, to: Path) -> Path:
    """A copy of a finished run folder at `to` (a new folder; its parents are made), for a test that changes it."""
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run_dir, to)
    return to
