"""Two rounds of LoRA on the tiny base, shared by the export and serve tests: round `a` learns the Zumo lamp facts,
round `b` continues from `a` (its parent) and learns to talk about bananas."""
from __future__ import annotations

from pathlib import Path

import pytest


def make_two_rounds(workspace: Path, base: Path) -> Path:
    from conftest import FACT_CHATS, write_jsonl

    from ftchat.config import RunConfig
    from ftchat.train.run import run_training

    facts = write_jsonl(workspace / "facts.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACT_CHATS])
    bananas = write_jsonl(workspace / "bananas.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "Bananas are yellow."}]}
        for q, _ in FACT_CHATS])
    runs = workspace / "runs"
    for name, data, parent in [("a", facts, None), ("b", bananas, runs / "a")]:
        run_training(RunConfig(data=[str(data)], out=str(runs / name), base=str(base), adapter="lora",
                               parent=str(parent) if parent else None, max_steps=8, lr=2e-2, compare_prompts=0,
                               eval_split=0, replay=0))
    return workspace


@pytest.fixture(scope="session")
def two_rounds(tmp_path_factory, tiny_model_dir):
    return make_two_rounds(tmp_path_factory.mktemp("workspace"), tiny_model_dir)
