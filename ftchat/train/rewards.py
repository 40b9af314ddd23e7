"""The rewards GRPO / RLOO train against: reward-model runs, and a few rules (pure functions of the reply text)
for tests and for evidence that the RL loop moves a model.

A reward is named by a spec: a reward-model run folder, or `rule:NAME`. `reward_functions` turns specs into the
callables TRL's GRPOTrainer / RLOOTrainer accept (prompts, completions -> one float per completion).
"""
from __future__ import annotations

import re
from pathlib import Path

from ftchat.train.reward_model import RewardModel, check_reward_run

RULE_PREFIX = "rule:"

POLITE = ("please", "thank", "glad", "happy to help", "kind", "welcome", "appreciate", "sorry", "of course",
          "certainly", "gladly", "my pleasure")
RUDE = ("stupid", "shut up", "go away", "idiot", "whatever", "dumb", "don't care", "do not care", "leave me alone",
        "annoying", "useless")
WORD = re.compile(r"\w+")


def polite(text: str) -> float:
    """+1 for each polite phrase (at most 3), -2 for each rude one."""
    lowered = text.lower()
    return min(3, sum(p in lowered for p in POLITE)) - 2.0 * sum(r in lowered for r in RUDE)


def short(text: str) -> float:
    """1 for an empty reply, falling to 0 at 50 words: prefers brief answers."""
    return 1.0 - min(len(WORD.findall(text)), 50) / 50


def length(text: str) -> float:
    """0 for an empty reply, rising to 1 at 50 words: prefers long answers."""
    return min(len(WORD.findall(text)), 50) / 50


RULES = {"polite": polite, "short": short, "length": length}


def spec_problem(spec: str) -> str | None:
    """None when `spec` names a known rule or a finished reward-model run, else what is wrong with it."""
    if spec.startswith(RULE_PREFIX):
        name = spec[len(RULE_PREFIX):]
        return None if name in RULES else f"unknown rule '{name}'; known: {', '.join(RULES)}"

    return check_reward_run(spec)


def completion_text(completion) -> str:
    """The reply text of a TRL completion: a string, or a list of assistant messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion)


def as_conversation(prompt, completion) -> list[dict]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return messages + [{"role": "assistant", "content": completion_text(completion)}]


class RuleReward:
    """A rule as a TRL reward function."""

    def __init__(self, name: str):
        self.rule = RULES[name]
        self.__name__ = f"rule_{name}"  # TRL logs rewards/<__name__>/mean

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [float(self.rule(completion_text(c))) for c in completions]


class ModelReward:
    """A reward-model run as a TRL reward function: the conversation is rendered with the reward model's own
    tokenizer and chat template, which need not be the policy's."""

    def __init__(self, run_dir: str | Path):
        self.model = RewardModel(run_dir)
        self.__name__ = f"rm_{Path(run_dir).name}"

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return self.model.score([as_conversation(p, c) for p, c in zip(prompts, completions)])


def reward_functions(specs: list[str]) -> list:
    """One TRL reward callable per spec (validate the specs first: RunConfig.validate does)."""
    return [RuleReward(s[len(RULE_PREFIX):]) if s.startswith(RULE_PREFIX) else ModelReward(s) for s in specs]
