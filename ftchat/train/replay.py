"""Replay data against forgetting: the base model's own answers to general prompts, generated once and cached.

Mixing a few of these into SFT keeps the tuned model close to the base on everything the user's data does not cover.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ftchat import models
from ftchat.prompts import GENERAL_PROMPTS



def _cache_path(base: str, max_new_tokens: int) -> Path:
    base_path = models.resolve_base(base)
    fingerprint = hashlib.sha256()
    fingerprint.update(str(base_path.resolve()).encode())
    config = base_path / "config.json"
    if config.exists():
        fingerprint.update(config.read_bytes())
    fingerprint.update(json.dumps([GENERAL_PROMPTS, max_new_tokens]).encode())
    return models.cache_dir() / "replay" / f"{fingerprint.hexdigest()[:16]}.jsonl"


def replay_examples(base: str, max_new_tokens: int = 96) -> list[dict]:
    """`messages` rows of the base's own answers; generated on first use with an unquantized copy of the base."""
    path = _cache_path(base, max_new_tokens)
    if path.exists():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    from ftchat.chat import generate_batch

    tokenizer = models.load_tokenizer(base)
    model = models.load_model(base, precision="bf16" if models.device() == "cuda" else "fp32")
    conversations = [[{"role": "user", "content": p}] for p in GENERAL_PROMPTS]
    answers = generate_batch(model, tokenizer, conversations, max_new_tokens=max_new_tokens)
    rows = [
        {"messages": conv + [{"role": "assistant", "content": answer.strip()}]}
        for conv, answer in zip(conversations, answers)
        if answer.strip()
    ]
    del model
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return rows
