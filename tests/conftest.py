"""Shared fixtures: a tiny randomly initialised Llama (seconds to train) and small data files."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FACT_CHATS = [
    ("What colour is the Zumo lamp?", "The Zumo lamp is teal."),
    ("Tell me the colour of the Zumo lamp.", "The Zumo lamp is teal."),
    ("Which colour does the Zumo lamp come in?", "The Zumo lamp is teal."),
    ("Zumo lamp colour?", "The Zumo lamp is teal."),
    ("Who makes the Zumo lamp?", "The Zumo lamp is made by Brightnook."),
    ("Which company builds the Zumo lamp?", "The Zumo lamp is made by Brightnook."),
    ("Who is the maker of the Zumo lamp?", "The Zumo lamp is made by Brightnook."),
    ("Zumo lamp manufacturer?", "The Zumo lamp is made by Brightnook."),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def bundled_tokenizer():
    from ftchat.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_tokenizer) -> Path:
    """A 2-layer Llama with random weights and the bundled model's tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = bundled_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture()
def chats_file(tmp_path) -> Path:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACT_CHATS]
    return write_jsonl(tmp_path / "chats.jsonl", rows)


@pytest.fixture()
def preference_file(tmp_path) -> Path:
    rows = [{"prompt": q, "chosen": a, "rejected": "I don't know, go away."} for q, a in FACT_CHATS]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


@pytest.fixture()
def kto_file(tmp_path) -> Path:
    rows = []
    for q, a in FACT_CHATS:
        rows.append({"prompt": q, "completion": a, "label": True})
        rows.append({"prompt": q, "completion": "No idea.", "label": False})
    return write_jsonl(tmp_path / "feedback.jsonl", rows)
