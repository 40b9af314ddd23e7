"""The next round: training data from the ratings of a rated model, and the RunConfigs that continue it.

Every kind of round is built here, by one path (`rated_model` → data → `claim_round_name` → configs):
- dpo / kto: one run, WORKSPACE/runs/<model>-r<N>-<method>, its data WORKSPACE/feedback-data/<same name>.jsonl, its
  `parent` the rated run: the adapter continues from the parent's, and the parent is the reference model (TRL keeps
  a frozen copy of the parent's adapter, named "ref", next to the one that learns).
- reward-rl: two runs, <round>-rm (a reward model learns the people's preference from every decisive vote and
  written answer) and <round> (GRPO or RLOO trains the rated model further on the prompts it was rated on, against
  that reward model). Lineage stays base → … → model → round; the reward model is named in the round's config.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ftchat import methods, models, runs
from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import ChatError, GenerationSettings
from ftchat.config import ConfigError, RunConfig
from ftchat.feedback import judge
from ftchat.feedback.agreement import flagged_raters, without_raters
from ftchat.feedback.export import SHAPE_OF_KIND, to_dpo, to_kto
from ftchat.feedback.leaderboard import win_rate
from ftchat.feedback.prompt_queue import PromptError, held_out_prompts
from ftchat.feedback.store import FEEDBACK_FILE, FeedbackStore
from ftchat.names import base_choice, base_of_choice, is_base, model_name
from ftchat.runs import lineage  # the one place that follows parent links; re-exported for the Feedback tab
from ftchat.train.preflight import local_base
from ftchat.train.reward_model import check_reward_run
from ftchat.workspace import Workspace

METHODS = ("dpo", "kto")  # one run each; a "reward-rl" round is a reward model and then one of RL_METHODS
RL_METHODS = ("grpo", "rloo")
MIN_DPO_PAIRS = 8  # enough for a held-out pair and a few optimizer steps; below it a round learns noise
MIN_KTO_ROWS = 8
# A written better answer is one person's deliberate correction, a vote a click: a round sees each written answer this
# many times (bench/round_learning.py, correction kind).
EDIT_REPEATS = 4
# What a DPO / KTO round trains with unless told otherwise: the base's SFT learning rate for its technique (x
# ROUND_LR_SCALE) and, for DPO, an SFT term on the chosen reply and a loose pull towards the parent (beta 0.01; the
# trainer's default is 0.1). With votes that disagree, DPO settles where its implied reward gap matches the share of
# votes (~1.2 for 80/20), and the policy moves log(pi/pi_ref) by that gap / beta: at 0.03 too little to overcome the
# parent's end-of-turn, at 0.01 enough. 64 sign-off votes with 20% against: 0 of 10 unseen answers at 0.1 and 0.03,
# 8 and 7 of 10 at 0.01 (two seeds); 32 consistent votes: 7, 9, 10 of 10. KTO from 32 votes and thumbs: 6 of 10 at
# 0.1, 9 at 0.03, 10 and 9 at 0.01; every setting kept the facts the parent scored right (docs/benchmarks.md).
ROUND_DEFAULTS = {"dpo": {"sft_weight": 1.0, "beta": 0.01}, "kto": {"beta": 0.01}}
ROUND_LR_SCALE = 1.0
MIN_PROMPTS = 2  # reward-rl: a few optimizer steps of whole answer groups
# reward-rl: a sample may run as long as the replies people preferred (the 90th percentile of their length in the
# base's tokens, within these bounds): a sample cut at RunConfig's 48 tokens never shows the reward model how a reply
# ends (a sign-off, a closing line). Longer samples alone did not teach a sign-off, though: GRPO reinforces only what
# the policy samples (docs/benchmarks.md, 0 of 10 at 48 and at 112 tokens).
RL_COMPLETION_TOKENS = (48, 256)
# reward-rl: flags that shape the reward model rather than the policy; the rest go to the RL run.
REWARD_MODEL_FLAGS = ("max_length", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "seed")
ROUND_NAME = re.compile(r"^(?P<stem>.+)-r(?P<n>\d+)-(?:dpo|kto|grpo|rloo)(?:-\d+)?$")  # grpo/rloo: reward-rl rounds
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


def leave_out(store: FeedbackStore, exclude_flagged: bool) -> set[str]:
    """The raters whose ratings a round leaves out: those the team's votes flag (ftchat.feedback.agreement), when
    asked."""
    return flagged_raters(store.ratings(kind="vote")) if exclude_flagged else set()


def round_data(store: FeedbackStore, run_name: str, method: str, exclude_flagged: bool = False
               ) -> tuple[list[dict], str, list[int]]:
    """(training rows, their shape, the ids of the ratings they come from) from the live ratings that involve
    `run_name` (without the flagged raters' with `exclude_flagged`); RoundError when too few."""
    rows = without_raters(store.ratings(model=run_name), leave_out(store, exclude_flagged))
    data = training_rows(method, rows)
    needed = min_ratings_needed(method, rows)
    if needed:
        raise RoundError(_need_message(method, run_name, needed, len(data)))
    written = training_rows(method, [r for r in rows if r["kind"] == "edit"])
    return data + written * (EDIT_REPEATS - 1), SHAPE_OF_KIND[method], used_ids(method, rows)


def used_ids(method: str, rows: list[dict]) -> list[int]:
    """The ids of the ratings among `rows` that give at least one training row of `method`."""
    return [r["id"] for r in rows if training_rows(method, [r])]


def lineage_win_rates(store: FeedbackStore, runs_root: str | Path, run: str) -> list[dict]:
    """The chain base → … → run, each step with its win-rate against its parent from the votes so far:
    [{"model", "parent", "win_rate" (None before any vote), "votes", "judged"}]; "judged" is the reward model's
    latest judgement of the step against its parent (ftchat.feedback.judge.write_judgement), None when never judged."""
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
    return base_choice(base)


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
                         reward_model=None, progress=None, feedback_db: str | None = None) -> dict:
    """The reward model's judgement of a run (a name or folder under WORKSPACE/runs) against its parent on a few
    prompts, kept in the run's folder for the lineage to show; returns it. `progress(fraction, text)` hears each
    step; `feedback_db` is where the ratings are (FeedbackStore.for_workspace)."""
    runs_root = Path(workspace) / "runs"
    run_dir = Workspace(workspace).run_dir(run)
    if run_dir is None or not (run_dir / "config.yaml").is_file():
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
    prompts = judge_prompts(FeedbackStore.for_workspace(workspace, feedback_db), run_dir, parent, source, limit)
    judgement = judge.judge_runs(str(run_dir), parent, reward_run, prompts,
                                 settings=GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0),
                                 engine=engine, reward_model=reward_model, progress=progress)
    judgement["prompt_source"] = source
    judge.write_judgement(run_dir, judgement)
    return judgement


def _first_round_name(run_name: str, method: str) -> str:
    if is_base(run_name):
        stem, number = Path(base_of_choice(run_name)).name, 1
    else:
        match = ROUND_NAME.match(run_name)
        stem, number = (match["stem"], int(match["n"]) + 1) if match else (run_name, 1)
    return f"{stem}-r{number}-{method}"


def round_name(run_name: str, method: str, runs_root: Path) -> str:
    """<stem>-r<N>-<method>: N counts the rounds so far; a name already taken gets -2, -3 …"""
    name = _first_round_name(run_name, method)
    candidate, suffix = name, 2
    while (runs_root / candidate).exists():
        candidate, suffix = f"{name}-{suffix}", suffix + 1
    return candidate


def claim_round_name(run_name: str, method: str, runs_root: Path, reward_model: bool = False) -> str:
    """round_name, with its run folder (and <name>-rm for a reward-rl round) made here: two rounds chosen at the same
    time, in two processes, never share a name or a data file (each waits to train before its folder would exist)."""
    name = _first_round_name(run_name, method)
    Path(runs_root).mkdir(parents=True, exist_ok=True)
    for candidate in itertools.chain([name], (f"{name}-{n}" for n in itertools.count(2))):
        made = []
        for folder in [Path(runs_root) / candidate] + ([Path(runs_root) / f"{candidate}-rm"] if reward_model else []):
            try:
                folder.mkdir()  # atomic: exactly one caller makes it
            except FileExistsError:
                break
            made.append(folder)
        else:
            return candidate
        for folder in made:
            folder.rmdir()


def release_round_name(runs_root: Path, name: str) -> None:
    """Give back the folders claim_round_name made for a round that did not start (only while they are empty)."""
    for folder in (Path(runs_root) / name, Path(runs_root) / f"{name}-rm"):
        try:
            folder.rmdir()
        except OSError:  # not made, or training has written into it since
            pass


@dataclass
class RatedModel:
    """The model a round continues: its rating name, its run folder (None for a base) and what the round inherits."""
    name: str
    parent: str | None
    inherited: dict


def offered_base(workspace: str | Path, name: str) -> bool:
    """Whether base:NAME is a base the workspace's chat offers: the bundled model (or another registry name), a
    folder directly in models/, or the base of one of its runs. A name from a rating (imported ones name anything:
    a folder elsewhere, a hub id) is never trained from unless it is one of these."""
    space = Workspace(workspace)
    try:
        return ChatEngine(space.runs_dir, models_root=space.models_dir).resolve_choice(name)[0] == "base"
    except ChatError:
        return False


def round_sources(store: FeedbackStore, workspace: str | Path) -> list[str]:
    """What a round can start from: the finished chat runs of this workspace that have ratings (newest first),
    then the rated bases the workspace offers. A name in a rating never becomes a model to load by itself."""
    rated = set(store.models())
    space = Workspace(workspace)
    out = [run.name for run in runs.list_runs(space.runs_dir)
           if run.state == "done" and run.name in rated and run.config.get("method", "sft") in methods.policy_methods()]
    return out + [name for name in sorted(rated) if is_base(name) and offered_base(space.root, name)]


def rated_model(workspace: str | Path, model: str, kind: str) -> RatedModel:
    """The rated model a round of `kind` (dpo, kto, reward-rl) continues: a finished run of this workspace (its
    folder name or path) or base:NAME of a base the workspace offers; RoundError for anything else."""
    space = Workspace(workspace)
    allowed = methods.get(RL_METHODS[0] if kind == "reward-rl" else kind).adapters
    if is_base(model):
        base = base_of_choice(model)
        if not offered_base(space.root, model):
            raise RoundError(f"{model}: not a base this workspace offers (the bundled model, a folder in its "
                             "models/ or the base of one of its runs).")
        return RatedModel(model, None, {"base": base, "adapter": "lora"})  # a round from a base starts an adapter
    run_dir = space.run_dir(model)
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        raise RoundError(f"{model}: no such run in this workspace.")
    info = runs.load_run(run_dir)
    if info.state != "done":
        raise RoundError(f"{run_dir.name} is not a finished run (state: {info.state}); rate a finished run.")
    if info.config.get("method", "sft") not in methods.policy_methods():
        raise RoundError(f"{run_dir.name} is a {info.config.get('method')} run: it scores replies, it does not chat.")
    adapter = info.config.get("adapter")
    if adapter not in allowed:
        raise RoundError(f"{run_dir.name} was trained with {adapter}; a {kind} round continues "
                         f"{', '.join(allowed)} runs.")
    return RatedModel(run_dir.name, str(run_dir), {k: info.config[k] for k in INHERITED if k in info.config})


def _check_flags(training_flags: dict, own: tuple[str, ...]) -> dict:
    """The training flags that are given (not None); RoundError for one the round sets itself."""
    for key in own:
        if training_flags.get(key) not in (None, [], ""):
            raise RoundError(f"{key}: a round sets its own {key}; leave it out.")
    unknown = sorted(set(training_flags) - {f.name for f in dataclasses.fields(RunConfig)})
    if unknown:
        raise ConfigError(f"unknown training flag(s) {', '.join(unknown)}.")
    return {k: v for k, v in training_flags.items() if v is not None}


def _check_base(base: str) -> None:
    """RoundError when the round's base cannot be had (a folder deleted since the rated run trained), before the
    round marks its ratings as used."""
    try:
        local_base(base)
    except models.ModelError as exc:
        raise RoundError(f"base: {exc}") from None


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def next_round_config(workspace: str | Path, run: str, method: str, exclude_flagged: bool = False,
                      feedback_db: str | None = None, **training_flags) -> RunConfig:
    """Write the round's dataset from the ratings of `run` (a run name or folder, or base:NAME) and return the
    RunConfig that trains it (not started). `training_flags` are RunConfig fields that override the defaults;
    `exclude_flagged` leaves out the ratings of the raters the team's votes flag; `feedback_db` is where the ratings
    are (FeedbackStore.for_workspace)."""
    if method not in METHODS:
        raise RoundError(f"method: a round trains with {' or '.join(METHODS)}, not '{method}'.")
    flags = _check_flags(training_flags, ("data", "out", "parent", "method"))
    workspace = Path(workspace)
    rated = rated_model(workspace, run, method)
    store = FeedbackStore.for_workspace(workspace, feedback_db)
    data, _, ids = round_data(store, rated.name, method, exclude_flagged)
    name = claim_round_name(rated.name, method, workspace / "runs")
    data_file = workspace / "feedback-data" / f"{name}.jsonl"
    try:
        values = {**ROUND_DEFAULTS[method], **rated.inherited, **flags, "method": method, "parent": rated.parent,
                  "out": str(workspace / "runs" / name), "data": [_write_jsonl(data_file, data)]}
        _check_base(values["base"])
        if "lr" not in flags:
            values["lr"] = ROUND_LR_SCALE * RunConfig(base=values["base"],
                                                      adapter=values.get("adapter", "qlora")).learning_rate
        config = RunConfig(**values).validate()
    except BaseException:
        data_file.unlink(missing_ok=True)
        release_round_name(workspace / "runs", name)
        raise
    store.mark_used(name, ids)
    return config


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


def readiness(store: FeedbackStore, run_name: str, exclude_flagged: bool = False) -> tuple[str | None, int, int]:
    """(what is missing or None, reward-model pairs, rated prompts of `run_name`) for a reward-RL round now."""
    flagged = leave_out(store, exclude_flagged)
    pairs = len(to_dpo(without_raters(store.ratings(), flagged)))
    prompts = len(rated_prompts(without_raters(store.ratings(model=run_name), flagged)))
    return shortfall(pairs, prompts, run_name), pairs, prompts


def reward_rl_round(workspace: str | Path, run: str, rl_method: str = "grpo", exclude_flagged: bool = False,
                    feedback_db: str | None = None, **training_flags) -> tuple[RunConfig, RunConfig]:
    """Write the round's data and return (reward-model config, RL config), neither started; the RL config is
    validated only once the reward model is trained (its `reward` names that run). RoundError when the ratings are
    too few: it says how many more are needed. `exclude_flagged` and `feedback_db`: as for next_round_config."""
    if rl_method not in RL_METHODS:
        raise RoundError(f"a reward-RL round trains its policy with {' or '.join(RL_METHODS)}, not '{rl_method}'.")
    flags = _check_flags(training_flags, ("data", "out", "parent", "method", "reward"))
    workspace = Path(workspace)
    rated = rated_model(workspace, run, "reward-rl")
    store = FeedbackStore.for_workspace(workspace, feedback_db)
    flagged = leave_out(store, exclude_flagged)
    everything = without_raters(store.ratings(), flagged)
    pairs = to_dpo(everything)
    own = without_raters(store.ratings(model=rated.name), flagged)
    prompts = rated_prompts(own)
    problem = shortfall(len(pairs), len(prompts), rated.name)
    if problem:
        raise RoundError(problem)
    data_dir, runs_root = workspace / "feedback-data", workspace / "runs"
    name = claim_round_name(rated.name, rl_method, runs_root, reward_model=True)
    try:
        _check_base(rated.inherited["base"])
        rm = RunConfig(
            data=[_write_jsonl(data_dir / f"{name}-rm.jsonl", pairs)], out=str(runs_root / f"{name}-rm"),
            method="reward", base=rated.inherited["base"], adapter="lora", compare_prompts=0,
            **{k: v for k, v in {**rated.inherited, **flags}.items() if k in REWARD_MODEL_FLAGS},
        )
        if "max_completion_length" not in flags:
            flags["max_completion_length"] = completion_budget(pairs, rated.inherited["base"])
        policy = RunConfig(**{
            **rated.inherited, **flags,
            "data": [_write_jsonl(data_dir / f"{name}.jsonl", [{"prompt": p} for p in prompts])],
            "out": str(runs_root / name), "method": rl_method, "parent": rated.parent, "reward": [rm.out],
        })
        rm.validate()
    except BaseException:
        for data_file in (data_dir / f"{name}-rm.jsonl", data_dir / f"{name}.jsonl"):
            data_file.unlink(missing_ok=True)
        release_round_name(runs_root, name)
        raise
    store.mark_used(name, sorted({r["id"] for r in everything if to_dpo([r])} | {r["id"] for r in own}))
    return rm, policy


def completion_budget(pairs: list[dict], base: str) -> int:
    """RL_COMPLETION_TOKENS' rule: tokens enough for nine in ten of the preferred replies, rounded up to 16."""
    low, high = RL_COMPLETION_TOKENS
    tokenizer = models.load_tokenizer(base)
    lengths = sorted(len(tokenizer.encode(pair["chosen"][-1]["content"], add_special_tokens=False)) + 1  # + its end
                     for pair in pairs)
    if not lengths:
        return low
    wanted = lengths[min(len(lengths) - 1, int(0.9 * len(lengths)))]
    return max(low, min(high, -(-wanted // 16) * 16))


def store_win_rates(workspace: str | Path, feedback_db: str | None = None):
    """Each round's win-rate against its parent from the workspace's votes (in `feedback_db` when given), as model
    cards show them (ftchat.export.modelcard.WinRates), or None where nobody rated yet."""
    if not feedback_db and not (Path(workspace) / FEEDBACK_FILE).exists():
        return None
    votes = FeedbackStore.for_workspace(workspace, feedback_db).ratings(kind="vote")
    return lambda child, parent: win_rate(votes, child, parent)
