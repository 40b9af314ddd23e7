"""A reward-RL round (`ftchat round --from RUN --method reward-rl`): a reward model learns the people's preference
from every decisive vote and written answer in the store, then GRPO (or RLOO) trains RUN further on the prompts it
was rated on, against that reward model.

Two runs, one round: WORKSPACE/runs/<round>-rm (method reward, on RUN's base) and WORKSPACE/runs/<round> (parent RUN,
reward = the -rm run). Lineage stays base → … → RUN → round; the reward model is named in the round's config.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ftchat import runs
from ftchat.config import ConfigError, RunConfig
from ftchat.feedback.export import to_dpo
from ftchat.feedback.rounds import BASE_PREFIX, INHERITED, MIN_DPO_PAIRS, RoundError, round_name
from ftchat.feedback.store import FeedbackStore

RL_METHODS = ("grpo", "rloo")
MIN_PROMPTS = 2  # a few optimizer steps of whole answer groups
# Flags that shape the reward model rather than the policy; the rest go to the RL run.
REWARD_MODEL_FLAGS = ("max_length", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "seed")


def rated_prompts(rows: list[dict]) -> list[list[dict]]:
    """The distinct conversations (up to the prompt) of the live ratings, oldest first."""
    seen, prompts = set(), []
    for row in rows:
        if row.get("deleted"):
            continue
        prompt = [{"role": m["role"], "content": m["content"]} for m in row["conversation"]]
        key = json.dumps(prompt, sort_keys=True)
        if prompt and prompt[-1]["role"] == "user" and key not in seen:
            seen.add(key)
            prompts.append(prompt)
    return prompts


def shortfall(pairs: int, prompts: int, run_name: str) -> str | None:
    """What a reward-RL round still lacks (None: nothing): pairs for the reward model, rated prompts for the policy."""
    if pairs < MIN_DPO_PAIRS:
        return (f"need {MIN_DPO_PAIRS - pairs} more decisive vote(s) (left or right is better) or written better "
                f"answers: a reward model needs {MIN_DPO_PAIRS} pairs and the ratings give {pairs}.")
    if prompts < MIN_PROMPTS:
        return (f"need {MIN_PROMPTS - prompts} more rated prompt(s) for {run_name}: the policy practises on the "
                "prompts it was rated on.")
    return None


def readiness(store: FeedbackStore, run_name: str) -> tuple[str | None, int, int]:
    """(what is missing or None, reward-model pairs, rated prompts of `run_name`) for a reward-RL round now."""
    pairs = len(to_dpo(store.ratings()))
    prompts = len(rated_prompts(store.ratings(model=run_name)))
    return shortfall(pairs, prompts, run_name), pairs, prompts


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def reward_rl_round(workspace: str | Path, run: str, rl_method: str = "grpo", **training_flags
                    ) -> tuple[RunConfig, RunConfig]:
    """Write the round's data and return (reward-model config, RL config), neither started; the RL config is
    validated only once the reward model is trained (its `reward` names that run). RoundError when the ratings are
    too few: it says how many more are needed."""
    if rl_method not in RL_METHODS:
        raise RoundError(f"a reward-RL round trains its policy with {' or '.join(RL_METHODS)}, not '{rl_method}'.")
    for key in ("data", "out", "parent", "method", "reward"):
        if training_flags.get(key):
            raise RoundError(f"{key}: a round sets its own {key}; leave it out.")
    unknown = sorted(set(training_flags) - {f.name for f in dataclasses.fields(RunConfig)})
    if unknown:
        raise ConfigError(f"unknown training flag(s) {', '.join(unknown)}.")
    training_flags = {k: v for k, v in training_flags.items() if v is not None}
    workspace = Path(workspace)
    runs_root = workspace / "runs"
    if run.startswith(BASE_PREFIX):
        run_name, parent, inherited = run, None, {"base": run[len(BASE_PREFIX):], "adapter": "lora"}
    else:
        run_dir = Path(run) if Path(run).is_dir() else runs_root / run
        run_name, parent = run_dir.name, str(run_dir)
        info = runs.load_run(run_dir)
        if info.state != "done":
            raise RoundError(f"{run_name} is not a finished run (state: {info.state}); rate a finished run.")
        if info.config.get("adapter") not in ("qlora", "lora"):
            raise RoundError(f"{run_name} was trained with {info.config.get('adapter')}; a reward-RL round continues "
                             "a LoRA or QLoRA run.")
        inherited = {k: info.config[k] for k in INHERITED if k in info.config}
    store = FeedbackStore.for_workspace(workspace)
    rated = store.ratings()
    pairs = to_dpo(rated)
    own = store.ratings(model=run_name)
    prompts = rated_prompts(own)
    problem = shortfall(len(pairs), len(prompts), run_name)
    if problem:
        raise RoundError(problem)
    name = round_name(run_name, rl_method, runs_root)
    data_dir = workspace / "feedback-data"
    rm = RunConfig(
        data=[str(_write_jsonl(data_dir / f"{name}-rm.jsonl", pairs))], out=str(runs_root / f"{name}-rm"),
        method="reward", base=inherited["base"], adapter="lora", compare_prompts=0,
        **{k: v for k, v in {**inherited, **training_flags}.items() if k in REWARD_MODEL_FLAGS},
    )
    policy = RunConfig(**{
        **inherited, **training_flags,
        "data": [str(_write_jsonl(data_dir / f"{name}.jsonl", [{"prompt": p} for p in prompts]))],
        "out": str(runs_root / name), "method": rl_method, "parent": parent, "reward": [rm.out],
    })
    rm.validate()
    store.mark_used(name, sorted({r["id"] for r in rated if to_dpo([r])} | {r["id"] for r in own}))
    return rm, policy
