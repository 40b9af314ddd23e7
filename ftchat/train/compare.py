"""After training: the base's and the tuned model's answers to held-out prompts and general prompts, side by side.

Written to RUN/comparison.json so the UI and the shell show over-fitting and forgetting at a glance.
"""
from __future__ import annotations

import json
from pathlib import Path

from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import GenerationSettings
from ftchat.names import base_choice
from ftchat.prompts import GENERAL_PROMPTS


def prompt_of(row: dict) -> list[dict] | None:
    """The conversation up to (not including) the last assistant turn, for any shape that has one."""
    if "messages" in row:
        messages = row["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        return messages[:last] if last else None
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt) if prompt else None


def write_comparison(run_dir: str | Path, base: str, held_out_rows: list[dict], n_held_out: int = 3,
                     n_general: int = 3, max_new_tokens: int = 64) -> list[dict]:
    run_dir = Path(run_dir)
    prompts = []
    for row in held_out_rows:
        conversation = prompt_of(row)
        if conversation and len(prompts) < n_held_out:
            prompts.append(("held-out", conversation))
    prompts += [("general", [{"role": "user", "content": p}]) for p in GENERAL_PROMPTS[:n_general]]
    engine = ChatEngine(runs_root=run_dir.parent)
    requests = []
    for _, conversation in prompts:
        requests += [(base_choice(base), conversation), (str(run_dir), conversation)]
    answers = engine.answer(requests, GenerationSettings(max_new_tokens=max_new_tokens)) if requests else []
    rows = [
        {"prompt": conversation[-1]["content"], "kind": kind, "base": answers[2 * i], "tuned": answers[2 * i + 1]}
        for i, (kind, conversation) in enumerate(prompts)
    ]
    (run_dir / "comparison.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    return rows


def read_comparison(run_dir: str | Path) -> list[dict] | None:
    """The rows write_comparison wrote, or None when the run has none (yet)."""
    try:
        rows = json.loads((Path(run_dir) / "comparison.json").read_text())
    except (OSError, ValueError):
        return None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else None
