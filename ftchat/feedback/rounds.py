"""The next round: training data from the ratings that involve a run, and the RunConfig that continues it.

A round's run folder is WORKSPACE/runs/<run>-r<N>-<method>, its data WORKSPACE/feedback-data/<same name>.jsonl, and
its `parent` the rated run: the adapter continues from the parent's, and the parent is the reference model of
DPO / KTO (TRL keeps a frozen copy of the parent's adapter, named "ref", next to the one that learns).
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from ftchat import judge, runs
from ftchat.config import ConfigError, RunConfig
from ftchat.feedback.export import SHAPE_OF_KIND, to_dpo, to_kto
from ftchat.feedback.leaderboard import win_rate
from ftchat.feedback.store import FeedbackStore
from ftchat.runs import lineage  # the one place that follows parent links; re-exported for the Feedback tab

METHODS = ("dpo", "kto")
MIN_DPO_PAIRS = 8  # enough for a held-out pair and a few optimizer steps; below it a round learns noise
MIN_KTO_ROWS = 8
ROUND_NAME = re.compile(r"^(?P<stem>.+)-r(?P<n>\d+)-(?:dpo|kto|grpo|rloo)(?:-\d+)?$")  # rloo/grpo: reward_round
BASE_PREFIX = "base:"
# What the rated run passes on to the round: the same base, technique and shapes of the weights.
INHERITED = ("base", "adapter", "precision", "max_length", "lora_r", "lora_alpha", "lora_dropout", "lora_targets",
             "train_layers", "chunk_tokens")
# The judge between a round and its parent: a few prompts, short replies (both models answer each one on a CPU).
JUDGE_PROMPTS = 12
JUDGE_TOKENS = 32
FEW_JUDGED = 8  # below this many prompts the bootstrap interval is too rough to read (3 wins of 3: [100%, 100%])
JUDGE_SOURCES = {"held_out": "the run's held-out prompts", "ratings": "the prompts it and its parent were rated on"}


class RoundError(ValueError):
    """A round cannot start as asked; the message says what is missing (e.g. how many more ratings)."""


def training_rows(method: str, rows: list[dict]) -> list[dict]:
    if method not in METHODS:
        raise RoundError(f"method: a round trains with {' or '.join(METHODS)}, not '{method}'.")
    return to_dpo(rows) if method == "dpo" else to_kto(rows)


def min_ratings_needed(method: str, rows: list[dict]) -> int:
    """How many more ratings a round of `method` needs from these store rows (0: enough). For DPO each decisive
    vote or written answer adds a pair; for KTO each thumb adds a row and a decisive vote two, and both good and bad
    examples must be there."""
    data = training_rows(method, rows)
    if method == "dpo":
        return max(0, MIN_DPO_PAIRS - len(data))
    good = sum(bool(r["label"]) for r in data)
    bad = len(data) - good
    return max(MIN_KTO_ROWS - len(data), 0 if good else 1, 0 if bad else 1)


def _need_message(method: str, run_name: str, needed: int, have: int) -> str:
    if method == "dpo":
        return (f"need {needed} more decisive vote(s) (left or right is better) or written better answers for "
                f"{run_name}: a DPO round needs {MIN_DPO_PAIRS} pairs and the ratings give {have}.")
    return (f"need {needed} more thumbs or decisive votes for {run_name}: a KTO round needs {MIN_KTO_ROWS} rows, "
            f"good and bad ones, and the ratings give {have}.")


def round_data(store: FeedbackStore, run_name: str, method: str) -> tuple[list[dict], str, list[int]]:
    """(training rows, their shape, the ids of the ratings they come from) from the live ratings that involve
    `run_name`; RoundError when too few."""
    rows = store.ratings(model=run_name)
    data = training_rows(method, rows)
    needed = min_ratings_needed(method, rows)
    if needed:
        raise RoundError(_need_message(method, run_name, needed, len(data)))
    return data, SHAPE_OF_KIND[method], used_ids(method, rows)


def used_ids(method: str, rows: list[dict]) -> list[int]:
    """The ids of the ratings among `rows` that give at least one training row of `method`."""
    return [r["id"] for r in rows if training_rows(method, [r])]


def lineage_win_rates(store: FeedbackStore, runs_root: str | Path, run: str) -> list[dict]:
    """The chain base → … → run, each step with its win-rate against its parent from the votes so far:
    [{"model", "parent", "win_rate" (None before any vote), "votes", "judged"}]; "judged" is the reward model's
    latest judgement of the step against its parent (ftchat.judge.write_judgement), None when never judged."""
    chain = lineage(runs_root, run)
    votes = store.ratings(kind="vote")
    steps = []
    for i, name in enumerate(chain):
        parent = chain[i - 1] if i else None
        rate, n = win_rate(votes, name, parent) if parent else (None, 0)
        run_dir = Path(runs_root) / name
        judged = judge.judgement_against(run_dir, parent) if parent and run_dir.is_dir() else None
        steps.append({"model": name, "parent": parent, "win_rate": rate, "votes": n, "judged": judged})
    return steps


def parent_choice(runs_root: str | Path, run_dir: str | Path) -> str:
    """What a run continued from, as the chat engine names it: its parent's folder, else base:<its base>."""
    parent = runs.parent_dir(run_dir, runs_root)
    if parent is not None:
        return str(parent)
    base = runs.load_run(run_dir).config.get("base")
    if not base:
        raise RoundError(f"{Path(run_dir).name}: its config names neither a parent nor a base to judge it against.")
    return BASE_PREFIX + base


def trained_against(run_dir: str | Path, reward_run: str | Path) -> bool:
    """Whether a run was trained (GRPO / RLOO) to please this reward model."""
    return Path(reward_run).name in {Path(r).name for r in runs.load_run(run_dir).config.get("reward") or []}


def fair_judge(run_dir: str | Path, reward_runs: list[Path]) -> Path | None:
    """The reward model to judge a run with: the newest one it was not trained against (a policy trained to please
    a reward model wins that one's judgement whatever people think), else the newest; None when there is none."""
    fair = [r for r in reward_runs if not trained_against(run_dir, r)]
    return (fair or list(reward_runs) or [None])[0]


def judge_prompts(store: FeedbackStore, run_dir: str | Path, parent: str, source: str = "held_out",
                  limit: int = JUDGE_PROMPTS) -> list[list[dict]]:
    """Up to `limit` prompts to judge a run against its parent on: its held-out prompts ("held_out"), or the
    prompts it and its parent were rated on ("ratings")."""
    from ftchat.feedback.prompt_queue import PromptError, held_out_prompts
    from ftchat.feedback.reward_round import rated_prompts
    from ftchat.feedback.store import model_name

    run_dir = Path(run_dir)
    if source == "held_out":
        try:
            prompts = held_out_prompts(run_dir)
        except PromptError as exc:
            raise RoundError(str(exc)) from None
    elif source == "ratings":
        prompts = rated_prompts(store.ratings(model=run_dir.name) + store.ratings(model=model_name(parent)))
        if not prompts:
            raise RoundError(f"neither {run_dir.name} nor its parent has been rated yet; judge on its held-out "
                             "prompts instead.")
    else:
        raise RoundError(f"prompt source: '{source}' is not one of {', '.join(JUDGE_SOURCES)}.")
    if limit < 1:
        raise RoundError(f"prompts: judge on at least 1 prompt, not {limit}.")
    return prompts[:limit]


def judge_against_parent(workspace: str | Path, run: str, reward_run: str | Path, source: str = "held_out",
                         limit: int = JUDGE_PROMPTS, max_new_tokens: int = JUDGE_TOKENS, engine=None,
                         reward_model=None, progress=None) -> dict:
    """The reward model's judgement of a run (a name or folder under WORKSPACE/runs) against its parent on a few
    prompts, kept in the run's folder for the lineage to show; returns it. `progress(fraction, text)` hears each
    step."""
    from ftchat import methods
    from ftchat.chat import GenerationSettings
    from ftchat.reward_model import check_reward_run

    runs_root = Path(workspace) / "runs"
    run_dir = Path(run) if Path(run).is_dir() else runs_root / run
    if not (run_dir / "config.yaml").is_file():
        raise RoundError(f"{run}: no such run in this workspace.")
    info = runs.load_run(run_dir)
    method = info.config.get("method") or "sft"
    if method in methods.METHODS and methods.get(method).produces != "policy":
        raise RoundError(f"{run_dir.name} is a {method} run: it judges replies, it does not chat; pick a chat "
                         "model's run to judge.")
    if info.state != "done":
        raise RoundError(f"{run_dir.name} is not finished (state: {info.state}); judge it once it is done.")
    problem = check_reward_run(reward_run)
    if problem:
        raise RoundError(problem + ".")
    parent = parent_choice(runs_root, run_dir)
    prompts = judge_prompts(FeedbackStore.for_workspace(workspace), run_dir, parent, source, limit)
    judgement = judge.judge_runs(str(run_dir), parent, reward_run, prompts,
                                 settings=GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0),
                                 engine=engine, reward_model=reward_model, progress=progress)
    judgement["prompt_source"] = source
    judge.write_judgement(run_dir, judgement)
    return judgement


def round_name(run_name: str, method: str, runs_root: Path) -> str:
    """<stem>-r<N>-<method>: N counts the rounds so far; a name already taken gets -2, -3 …"""
    if run_name.startswith(BASE_PREFIX):
        stem, number = Path(run_name[len(BASE_PREFIX):]).name, 1
    else:
        match = ROUND_NAME.match(run_name)
        stem, number = (match["stem"], int(match["n"]) + 1) if match else (run_name, 1)
    name = f"{stem}-r{number}-{method}"
    candidate, suffix = name, 2
    while (runs_root / candidate).exists():
        candidate, suffix = f"{name}-{suffix}", suffix + 1
    return candidate


def next_round_config(workspace: str | Path, run: str, method: str, **training_flags) -> RunConfig:
    """Write the round's dataset from the ratings of `run` (a run name or folder, or base:NAME) and return the
    RunConfig that trains it (not started). `training_flags` are RunConfig fields that override the defaults."""
    workspace = Path(workspace)
    runs_root = workspace / "runs"
    store = FeedbackStore.for_workspace(workspace)
    inherited: dict = {}
    if run.startswith(BASE_PREFIX):
        run_name, parent = run, None
        inherited["base"] = run[len(BASE_PREFIX):]
    else:
        run_dir = Path(run) if Path(run).is_dir() else runs_root / run
        run_name = run_dir.name
        info = runs.load_run(run_dir)
        if info.state != "done":
            raise RoundError(f"{run_name} is not a finished run (state: {info.state}); rate a finished run.")
        if info.config.get("adapter") == "prompt":
            raise RoundError(f"{run_name} was trained with prompt tuning; DPO and KTO rounds continue LoRA, QLoRA, "
                             "full or layer-wise runs.")
        inherited = {k: info.config[k] for k in INHERITED if k in info.config}
        parent = str(run_dir)
    if method not in METHODS:
        raise RoundError(f"method: a round trains with {' or '.join(METHODS)}, not '{method}'.")
    data, _, ids = round_data(store, run_name, method)
    name = round_name(run_name, method, runs_root)
    data_file = workspace / "feedback-data" / f"{name}.jsonl"
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    values = {**inherited, "data": [str(data_file)], "out": str(runs_root / name), "method": method, "parent": parent}
    if inherited.get("adapter") is None and parent is None:
        values["adapter"] = "lora"  # a round from a base starts a fresh adapter
    for key in ("data", "out", "parent", "method"):
        if training_flags.get(key) is not None:
            raise RoundError(f"{key}: a round sets its own {key}; leave it out.")
    unknown = sorted(set(training_flags) - {f.name for f in dataclasses.fields(RunConfig)})
    if unknown:
        raise ConfigError(f"unknown training flag(s) {', '.join(unknown)}.")
    values.update({k: v for k, v in training_flags.items() if v is not None})
    config = RunConfig(**values).validate()
    store.mark_used(name, ids)
    return config
