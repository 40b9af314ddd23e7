"""Rating tasks: an admin's list of prompts shared out among a team of raters, for two models (or, arena-style, a
pair of several models drawn per prompt).

Each prompt goes to one rater, and a share of them (the overlap, 20% unless told) to two, so that the team's
agreement can be measured on those. `assign` is pure and seeded: the same prompts, raters, models, overlap and seed
give the same items. It balances the work (no rater has more than one item more than another), gives an overlap
prompt to two different people with the same two models, puts each model on the left in half of each rater's items
(so a rater's left-pane habit does not pass for a preference), and shuffles each rater's order.

The store keeps a task and its items (FeedbackStore.add_task); a vote cast on an item is linked to it, and the item
is then done. `progress` and `task_report` read those rows back; nothing here touches the database.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import ChatError
from ftchat.feedback import agreement
from ftchat.feedback.store import FeedbackError, FeedbackStore, prompt_text
from ftchat.names import base_choice, is_base, model_name
from ftchat.workspace import Workspace

DEFAULT_OVERLAP = 0.2


class TaskError(ValueError):
    """A task cannot be made as asked; the message lists every problem and what would fix it."""


@dataclass(frozen=True)
class Assignment:
    prompt_index: int  # the prompt's place in the task's list
    rater: str
    position: int  # the rater's order of work, from 0
    model_left: str
    model_right: str
    shared: bool  # an overlap prompt: another rater has it too

    def to_dict(self) -> dict:
        return asdict(self)


def shared_count(n_prompts: int, overlap: float) -> int:
    """How many prompts go to two raters: overlap × prompts, rounded half up."""
    return min(n_prompts, math.floor(overlap * n_prompts + 0.5))


def check(prompts: list, raters: list[str], models: list[str], overlap: float) -> None:
    """TaskError listing everything wrong with these arguments, or nothing."""
    problems = []
    if not prompts:
        problems.append("prompts: the list is empty; give at least one prompt")
    if not raters:
        problems.append("raters: name at least one rater")
    elif len(set(raters)) != len(raters):
        problems.append(f"raters: {', '.join(sorted({r for r in raters if raters.count(r) > 1}))} named twice")
    if len(models) < 2:
        problems.append(f"models: a task compares two or more models, {len(models)} given")
    elif len(set(models)) != len(models):
        problems.append("models: a model is named twice; name each once")
    if not 0.0 <= overlap <= 1.0:
        problems.append(f"overlap: {overlap} is not a share between 0 and 1 (0.2: a fifth of the prompts)")
    elif overlap > 0 and len(set(raters)) == 1 and shared_count(len(prompts), overlap) > 0:
        problems.append("overlap: one rater cannot share prompts with another; name two or more raters, or set the "
                        "overlap to 0")
    if problems:
        raise TaskError("; ".join(problems) + ".")


def model_pairs(n_prompts: int, models: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """A pair of models per prompt: the two models every time, or for more, every pair in turn (each cycle in a new
    random order), so that each pair is rated about as often."""
    pairs = list(combinations(models, 2))
    out: list[tuple[str, str]] = []
    while len(out) < n_prompts:
        cycle = pairs[:]
        rng.shuffle(cycle)
        out += cycle
    return out[:n_prompts]


def assign(prompts: list, raters: list[str], models: list[str], overlap: float = DEFAULT_OVERLAP,
           seed: int = 0) -> list[Assignment]:
    """The items of a task: every prompt to one rater, `overlap` of them (rounded) to two different raters; ordered
    by rater and position."""
    raters, models = list(raters), list(models)
    check(prompts, raters, models, overlap)
    rng = random.Random(seed)
    n = len(prompts)
    shared = set(rng.sample(range(n), shared_count(n, overlap)))
    pairs = model_pairs(n, models, rng)
    tiebreak = {name: rng.random() for name in raters}  # equal loads: a seeded order, not the order given
    load = {name: 0 for name in raters}
    together = {(a, b): 0 for a in raters for b in raters}  # overlap prompts each two raters share
    owners: dict[int, list[str]] = {}
    # overlap prompts first: a pair of the least loaded raters fits them while the loads are still even
    for index in sorted(range(n), key=lambda i: (i not in shared, rng.random())):
        first = min(raters, key=lambda r: (load[r], tiebreak[r]))
        chosen = [first]
        if index in shared:
            chosen.append(min((r for r in raters if r != first),
                              key=lambda r: (load[r], together[first, r], tiebreak[r])))
            together[chosen[0], chosen[1]] += 1
            together[chosen[1], chosen[0]] += 1
        for name in chosen:
            load[name] += 1
        owners[index] = chosen

    items = []
    for name in raters:
        mine = [index for index in range(n) if name in owners[index]]
        rng.shuffle(mine)
        flips = [k % 2 == 1 for k in range(len(mine))]  # the pair's first model on the left in half of them
        rng.shuffle(flips)
        for position, (index, flip) in enumerate(zip(mine, flips)):
            left, right = pairs[index][::-1] if flip else pairs[index]
            items.append(Assignment(index, name, position, left, right, index in shared))
    return items


# -- what the store's rows say ----------------------------------------------------------------------------------

def progress(items: list[dict]) -> dict[str, tuple[int, int]]:
    """{rater: (items done, items)} from a task's item rows (FeedbackStore.task_items)."""
    out: dict[str, list[int]] = {}
    for item in items:
        counts = out.setdefault(item["rater"], [0, 0])
        counts[0] += bool(item["done"])
        counts[1] += 1
    return {name: (done, total) for name, (done, total) in out.items()}


def progress_text(task_name: str, done: int, total: int) -> str:
    """'Task **greetings**: 12 of 40 done', or that the rater's part is finished."""
    if total and done >= total:
        return f"Task **{task_name}**: all done, {done} of {total} done. Thank you!"
    return f"Task **{task_name}**: {done} of {total} done"


def matches(item: dict | None, conversation: list[dict], model_a: str, model_b: str) -> bool:
    """Whether an exchange answers a task item: the item's prompt, asked of the item's two models (either pane)."""
    if not item:
        return False
    wanted = {model_name(item["model_left"]), model_name(item["model_right"])}
    return prompt_text(conversation) == prompt_text(item["conversation"]) and \
        {model_name(model_a), model_name(model_b)} == wanted


def keyed_by_prompt(votes: list[dict]) -> list[dict]:
    """A task's votes with the conversation replaced by the task's prompt, so two raters' votes on one overlap
    prompt are one item for ftchat.feedback.agreement whatever system prompt each typed."""
    return [{**v, "conversation": f"task prompt {v['prompt_index']}"} for v in votes]


def task_report(task: dict, items: list[dict], votes: list[dict]) -> dict:
    """Per rater: items done of assigned, votes, left-pane share and flags; and the agreement of the raters on the
    overlap prompts (Cohen's kappa per pair, Fleiss' for the team). `items`: FeedbackStore.task_items,
    `votes`: FeedbackStore.task_votes."""
    team = agreement.team_agreement(keyed_by_prompt(votes))
    stats = {r.rater: r for r in team.raters}
    done = progress(items)
    raters = []
    for name in sorted(done):
        rater = stats.get(name)
        raters.append({"rater": name, "done": done[name][0], "assigned": done[name][1],
                       "overlap_items": sum(i["shared"] for i in items if i["rater"] == name),
                       "votes": rater.votes if rater else 0, "left_share": rater.left_share if rater else None,
                       "agreement_with_others": rater.agreement_with_others if rater else None,
                       "kappa_with_others": rater.kappa_with_others if rater else None,
                       "flags": list(rater.flags) if rater else []})
    prompts = {i["prompt_index"] for i in items}
    return {"task": task["name"], "id": task["id"], "models": task["models"], "overlap": task["overlap"],
            "prompts": len(prompts), "items": len(items), "done": sum(bool(i["done"]) for i in items),
            "raters": raters, "pairs": [{**p.__dict__, "agreement": p.agreement} for p in team.pairs],
            "overlap_prompts": len({i["prompt_index"] for i in items if i["shared"]}),
            "overlap_voted": team.items_shared, "fleiss_kappa": team.fleiss_kappa,
            "flagged": [r["rater"] for r in raters if r["flags"]]}


def describe_task(report: dict) -> str:
    """The task report as Markdown for the Feedback tab and the shell."""
    def number(value, form="{:.2f}"):
        return "—" if value is None else form.format(value)

    lines = [f"**{report['task']}**: {report['done']} of {report['items']} items done · {report['prompts']} prompts, "
             f"{report['overlap_prompts']} of them given to two raters · models: "
             f"{', '.join(model_name(m) for m in report['models'])}",
             f"Agreement on the overlap prompts: {report['overlap_voted']} voted on by both raters, Fleiss' kappa "
             f"**{number(report['fleiss_kappa'])}**"]
    lines += [f"- {p['rater_a']} / {p['rater_b']}: {p['agreed']} of {p['shared']} agree, Cohen's kappa "
              f"{number(p['kappa'])}" for p in report["pairs"]]
    if report["flagged"]:
        lines.append(f"⚠ Check: {', '.join(report['flagged'])}")
    return "\n\n".join(lines[:2]) + ("\n\n" + "\n".join(lines[2:]) if lines[2:] else "")


# -- making a task from names a person typed ----------------------------------------------------------------------

def task_models(workspace: str | Path, names: list[str]) -> list[str]:
    """The chat choices of models named as a person types them: base:NAME, a run's folder name or path, or a folder
    in the workspace's models/; TaskError naming every one the workspace does not offer."""
    space = Workspace(workspace)
    engine = ChatEngine(space.runs_dir, models_root=space.models_dir)
    out, unknown = [], []
    for name in names:
        candidates = [name] if is_base(name) else [str(space.runs_dir / name), name,
                                                    base_choice(str(space.models_dir / name))]
        for candidate in candidates:
            try:
                engine.resolve_choice(candidate)
            except ChatError:
                continue
            out.append(candidate)
            break
        else:
            unknown.append(name)
    if unknown:
        raise TaskError(f"models: {', '.join(unknown)} not offered by this workspace's chat (give a run's folder name, "
                        "base:NAME, or a folder in models/).")
    return out


def task_raters(named: list[str] | None, team: dict[str, dict], users_file="the users file",
                users_option: str = "") -> list[str]:
    """The raters of a new task: those named, each a user of `team` ({name: {"role"}}) when there is a team; none
    named: every user whose role is rater. `users_option` points `python -m ftchat users` at the team (Users.option)."""
    add = " ".join(filter(None, ["python -m ftchat users add NAME --role rater", users_option]))
    if named:
        unknown = [name for name in named if team and name not in team]
        if unknown:
            raise TaskError(f"raters: {', '.join(unknown)} not in {users_file} (users: {', '.join(sorted(team))}); "
                            f"add them with `{add}`.")
        return list(named)
    raters = sorted(name for name, entry in team.items() if entry.get("role") == "rater")
    if not raters:
        raise TaskError(f"raters: {users_file} names no rater; add some with `{add}`, or name the raters.")
    return raters


def next_for(store: FeedbackStore, rater: str) -> tuple[dict | None, str]:
    """(the rater's next item, or None when they have none left; their progress line in that task, or in their
    latest task once all are done, or '' when no task names them)."""
    item = store.next_task_item(rater)
    if item is not None:
        task = store.task(item["task"])
    else:
        mine = [t for t in store.tasks() if store.task_items(t["id"], rater=rater)]
        if not mine:
            return None, ""
        task = mine[-1]
    done, total = progress(store.task_items(task["id"], rater=rater))[rater]
    return item, progress_text(task["name"], done, total)


def create_task(store: FeedbackStore, name: str, prompts: list[list[dict]], models: list[str], raters: list[str],
                overlap: float = DEFAULT_OVERLAP, seed: int = 0, created_by: str | None = None) -> dict:
    """Assign the prompts and store the task; returns the stored task."""
    items = assign(prompts, raters, models, overlap, seed)
    rows = [{**a.to_dict(), "conversation": prompts[a.prompt_index]} for a in items]
    try:
        task_id = store.add_task(name, models, overlap, seed, rows, created_by)
    except FeedbackError as exc:
        raise TaskError(str(exc)) from None
    return store.task(task_id)
