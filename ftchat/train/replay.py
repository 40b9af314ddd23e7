"""Replay data against forgetting: the base model's own answers to general prompts, generated once and cached.

Mixing a few of these into SFT keeps the tuned model close to the base on everything the user's data does not cover.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from ftchat import models
from ftchat.chat.generation import generate_batch
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


def in_context(rows: list[dict], dataset, seed: int = 0) -> list[dict]:
    """Every other replay row asked after a conversation from the user's data, so the tuned model answers general
    questions as the base did also in the middle of a chat about the user's subject. (Seen in the browser: after five
    questions about an invented company, a model trained with replay rows on their own answered "What is the capital
    of France?" with the company's headquarters, though it said Paris in a new chat.)"""
    if not len(dataset):
        return rows
    rng = random.Random(seed)
    out = []
    for i, row in enumerate(rows):
        if i % 2:
            before = dataset[rng.randrange(len(dataset))]["messages"]
            before = [{"role": m["role"], "content": m["content"]} for m in before]
            system = [m for m in before if m["role"] == "system"]
            rest = [m for m in before if m["role"] != "system"]
            if rest and rest[-1]["role"] == "assistant":
                row = {"messages": system + rest + [m for m in row["messages"] if m["role"] != "system"]}
        out.append(row)
    return out
