"""A round answers the way people voted: the smallest case of bench/round_learning.py. Eight votes, each preferring
the parent's own reply with a sign-off the parent never writes (invented names, a seed no default was chosen on),
become a DPO round through next_round_config and a fresh `python -m ftchat train`; the round then signs off on
prompts it never saw, and still knows what its parent knew. (A few minutes on 2 CPU cores.)"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.slow
def test_eight_votes_for_a_sign_off_teach_it_on_unseen_prompts(tmp_path, monkeypatch):
    import round_learning as bench

    from ftchat.chat.engine import ChatEngine

    monkeypatch.setattr(bench, "UNSEEN", 6)
    monkeypatch.setattr(bench, "ANSWER_TOKENS", 48)  # short replies: the round trains in half the time
    monkeypatch.setattr(bench, "EVAL_TOKENS", 96)
    # general questions whose answer is the point of the reply, not a word it may or may not pass on the way
    monkeypatch.setattr(bench, "GENERAL", [bench.GENERAL[i] for i in (0, 1, 4, 6)])
    result = bench.run_cell("signoff", "dpo", 8, seed=4242, overrides={}, cache=tmp_path,
                            engine=ChatEngine(runs_root=tmp_path / "runs"), probe=False)
    assert result["unseen"] == 6 and result["parent_follows"] == 0, result["examples"]
    assert result["round_follows"] >= 2, result["examples"]
    assert result["general_known"] >= 2 and result["general_kept"] >= result["general_known"] - 1, \
        result["lost_general"]
