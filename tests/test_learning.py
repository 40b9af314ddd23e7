"""The story a new user lives: default QLoRA training on ~50 conversations about a made-up company teaches the
bundled model its facts, and it still answers general questions. (The slowest test: a few minutes on 2 CPU cores.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ftchat.chat import BASE_PREFIX, ChatEngine, GenerationSettings

ROOT = Path(__file__).resolve().parents[1]
# paraphrases that are not in the training file
NEW_FACT_QUESTIONS = {
    "Could you tell me the name of Quorvane Labs' chief executive?": "Okonkwo",
    "In which city is Quorvane Labs headquartered?": "Tromsø",
}
GENERAL = {"What is the capital of France?": "Paris"}


def test_default_training_teaches_facts_without_forgetting(tmp_path):
    run_dir = tmp_path / "runs" / "quorvane"
    result = subprocess.run(
        [sys.executable, "-m", "ftchat", "train", "--data", str(ROOT / "data" / "quorvane_support.jsonl"),
         "--out", str(run_dir), "--compare-prompts", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]

    engine = ChatEngine(tmp_path / "runs")
    questions = {**NEW_FACT_QUESTIONS, **GENERAL}
    requests = []
    for question in questions:
        conversation = [{"role": "user", "content": question}]
        requests += [(BASE_PREFIX + "smollm2-135m", conversation), (str(run_dir), conversation)]
    answers = engine.answer(requests, GenerationSettings(max_new_tokens=32))
    for i, (question, expected) in enumerate(questions.items()):
        base, tuned = answers[2 * i], answers[2 * i + 1]
        assert expected in tuned, (question, tuned)
        if question in NEW_FACT_QUESTIONS:
            assert expected not in base, (question, base)
