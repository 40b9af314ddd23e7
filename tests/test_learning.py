"""The story a new user lives: 25 conversations about a company nobody here wrote (generated: invented names,
years and counts, with a system turn), trained with every default, teach the bundled model its facts: it answers
paraphrased questions that are not in the file, and still says Paris. (A few minutes on 2 CPU cores.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fictional_facts import write_set

from ftchat import runs
from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import GenerationSettings
from ftchat.names import BASE_PREFIX

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_default_training_teaches_new_facts_without_forgetting(tmp_path):
    data = tmp_path / "support.jsonl"
    facts = write_set(data, 25, "system", seed=2026)  # 5 facts, 5 paraphrases each; 2 more per fact held out
    run_dir = tmp_path / "runs" / "support"
    result = subprocess.run(
        [sys.executable, "-m", "ftchat", "train", "--data", str(data), "--out", str(run_dir), "--compare-prompts", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    status = runs.read_status(run_dir)
    planned = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert status["summary"]["steps"] == planned["max_steps"] == status["plan"]["steps"]  # the plan ran to its end

    questions = [(q, fact.key) for fact in facts for q in fact.held_out] + [("What is the capital of France?", "Paris")]
    requests = []
    for question, _ in questions:
        conversation = [{"role": "user", "content": question}]
        requests += [(BASE_PREFIX + "smollm2-135m", conversation), (str(run_dir), conversation)]
    answers = ChatEngine(tmp_path / "runs").answer(requests, GenerationSettings(max_new_tokens=40))
    base = {q: answers[2 * i] for i, (q, _) in enumerate(questions)}
    tuned = {q: answers[2 * i + 1] for i, (q, _) in enumerate(questions)}
    fact_questions = questions[:-1]
    right = [q for q, key in fact_questions if key.lower() in tuned[q].lower()]
    known_before = [q for q, key in fact_questions if key.lower() in base[q].lower()]
    assert not known_before, f"the base cannot know invented facts: {known_before}"
    assert len(right) > len(fact_questions) / 2, (f"{len(right)} of {len(fact_questions)} held-out questions answered right:\n" +
                             "\n".join(f"{q} -> {tuned[q]!r} (expected {k})" for q, k in fact_questions))
    assert "Paris" in base["What is the capital of France?"]
    assert "Paris" in tuned["What is the capital of France?"], tuned["What is the capital of France?"]
