"""Shared fixtures: a tiny randomly initialised Llama (seconds to train), finished runs on it that many tests read
(trained once per session: tests/trained_runs.py), small data files, and the command line called in-process."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread, in this process and in every trainer, app and command the tests start (they inherit it). The tiny
# model's kernels are too small to share between two threads, and while another job holds the second core (the
# benchmark this machine runs, or the trainer an app test started) two threads wait on each other at every kernel:
# with a benchmark on the other core an 8-step tiny run took 5 s on two threads and 1 s on one, and a step of the
# bundled model 7.2 s on two and 2.7 s on one (2026-12-06). ftchat's chat decodes on one thread for the same reason
# (ftchat/chat/engine.py). On an idle machine the bundled-model learning tests would train faster on every core:
# `OMP_NUM_THREADS=2 make test`.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No nice for the suite's trainers: a run trained in a test's own process (trained_runs.train_tiny) would leave that
# pytest worker at nice 10 for the rest of the session, starved by the other worker. tests/test_core_sharing.py sets
# the default policy for the trainer it checks.
os.environ.setdefault("FTCHAT_CORE_SHARING", "threads")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fictional_facts import FACT_CHATS  # noqa: E402,F401  (tests import it from here)


# The longest tests (minutes each on the bundled model) start first, each on a worker of its own: `make test` spreads
# the suite over the cores (pytest-xdist, `--maxschedchunk 1`: each worker is first sent two tests, then one at a
# time), and a long test that starts late finishes alone after everything else. So each long test is followed by one
# short test, and the next long test is the next worker's first.
LONGEST_FIRST = ("test_round_learning.py", "test_learning.py")


def pytest_collection_modifyitems(config, items):
    longest = sorted((i for i in items if i.path.name in LONGEST_FIRST), key=lambda i: LONGEST_FIRST.index(i.path.name))
    rest = [i for i in items if i.path.name not in LONGEST_FIRST]
    ordered = []
    for item in longest:
        ordered += [item] + rest[:1]
        rest = rest[1:]
    items[:] = ordered + rest


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def ftchat_main(*args) -> tuple[int, str, str]:
    """`python -m ftchat ARGS` called in this process, as ftchat/__main__.py calls it: (exit code, stdout, stderr).
    For tests of what a command does; a test of the process itself (a signal, what a user sees on a failure, a
    launcher) starts `python -m ftchat` for real."""
    from ftchat.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


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


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished LoRA SFT run on the tiny base (trained_runs.SFT_RUN), its data beside runs/: read it, or copy it
    with trained_runs.copy_run where a test changes it."""
    from trained_runs import make_sft_run

    return make_sft_run(tmp_path_factory.mktemp("sft-run"), tiny_model_dir)


@pytest.fixture(scope="session")
def two_rounds(tmp_path_factory, tiny_model_dir) -> Path:
    """A workspace with runs/a (the Zumo lamp facts) and runs/b (bananas, continued from a): trained_runs."""
    from trained_runs import make_two_rounds

    return make_two_rounds(tmp_path_factory.mktemp("workspace"), tiny_model_dir)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of this test session (tests/pg.py), stopped at its end."""
    from pg import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture()
def postgres_db(postgres):
    """The URL of a new, empty database on the session's server, dropped after the test."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def feedback_db(request):
    """Where a test's ratings go, as `--feedback-db` takes it: None (the workspace's feedback.sqlite) or the URL of a
    fresh PostgreSQL database. A test that takes it runs once on each."""
    return request.getfixturevalue("postgres_db") if request.param == "postgresql" else None
