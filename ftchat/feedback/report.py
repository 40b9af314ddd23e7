"""Did this round help? The round against its parent and its base from the votes (with intervals, blind votes
counted apart) and from the judge, the prompts it lost and newly won, how many more votes would settle it, and
how trustworthy the votes are (the left pane's share, raters who disagree with the others).

Pure functions over store rows and a judgement; `round_report` gathers them for one run of a workspace.
"""
from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations
from pathlib import Path

from ftchat import runs
from ftchat.feedback import judge
from ftchat.feedback.agreement import sides_varied
from ftchat.feedback.store import FeedbackStore
from ftchat.names import base_choice, base_of_choice, is_base
from ftchat.workspace import Workspace

Z95 = 1.959964
MAX_VOTES_ASKED = 100_000  # past this, "more votes" is no answer a person can act on
FLAG_BELOW = 0.5  # a rater who agrees with the others on fewer than half of the shared votes is flagged
FLAG_MIN_SHARED = 3  # ... on at least this many shared votes
RATE_NEXT = 20  # prompts "Rate these next" loads at most


class ReportError(ValueError):
    """No report for this run; the message says why."""


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a share (ties may count half: `successes` need not be whole)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def votes_to_decide(rate: float, n: int) -> int | None:
    """How many more votes at this win-rate make its 95% interval exclude 50%: 0 when it does already, None when no
    number will (a rate of exactly one half)."""
    if n and not wilson(rate * n, n)[0] <= 0.5 <= wilson(rate * n, n)[1]:
        return 0
    if abs(rate - 0.5) < 1e-9:
        return None
    total = max(n, 1)
    while total <= MAX_VOTES_ASKED:
        low, high = wilson(rate * total, total)
        if high < 0.5 or low > 0.5:
            return total - n
        total = math.ceil(total * 1.1) if total > 100 else total + 1
    return None


def _outcome(row: dict, model: str) -> float | None:
    """1 when `model` won this vote, 0 when it lost, 0.5 for a tie or both bad; None when it was not in it."""
    sides = {"a": row["model_a"], "b": row["model_b"]}
    if model not in sides.values() or sides["a"] == sides["b"]:
        return None
    if row["winner"] in ("tie", "bothbad"):
        return 0.5
    return 1.0 if sides[row["winner"]] == model else 0.0


def head_to_head(votes: list[dict], model: str, other: str) -> dict:
    """`model` against `other` from the live votes between the two: win-rate (ties half), its interval, the number
    of votes and of blind ones, and how many more votes would settle whether it is better."""
    between = [r for r in votes if not r.get("deleted") and {r["model_a"], r["model_b"]} == {model, other}]
    scores = [_outcome(r, model) for r in between]
    n = len(scores)
    if not n:
        return {"against": other, "votes": 0, "blind": 0, "win_rate": None, "ci": None, "wins": 0, "losses": 0,
                "ties": 0, "more_votes": None}
    rate = sum(scores) / n
    low, high = wilson(sum(scores), n)
    return {"against": other, "votes": n, "blind": sum(bool(r.get("anonymous")) for r in between),
            "win_rate": round(rate, 4), "ci": [round(low, 4), round(high, 4)], "wins": scores.count(1.0),
            "losses": scores.count(0.0), "ties": scores.count(0.5), "more_votes": votes_to_decide(rate, n)}


def _reply(row: dict, model: str) -> str:
    return row["reply_a"] if row["model_a"] == model else row["reply_b"]


def changes(votes: list[dict], model: str, parent: str) -> tuple[list[dict], list[dict]]:
    """(regressions: the prompts where `model` lost to its parent, newly won: where it beat it), each with both
    answers, newest first."""
    lost, won = [], []
    for row in sorted(votes, key=lambda r: r["time"], reverse=True):
        outcome = _outcome(row, model) if not row.get("deleted") and parent in (row["model_a"], row["model_b"]) \
            else None
        if outcome in (0.0, 1.0):
            item = {"rating": row["id"], "prompt": row["prompt"], "round": _reply(row, model),
                    "parent": _reply(row, parent), "rater": row.get("rater"), "blind": bool(row.get("anonymous"))}
            (won if outcome == 1.0 else lost).append(item)
    return lost, won


def position_bias(votes: list[dict]) -> dict:
    """The share of decisive votes the left pane won, with its interval, over the votes where the sides could differ
    from the models (agreement.sides_varied): far from one half, people vote by side. `fixed_sides` counts the
    decisive votes left out because each model kept its side."""
    decisive = [r for r in votes if not r.get("deleted") and r["winner"] in ("a", "b")]
    varied = sides_varied(decisive)
    left = sum(r["winner"] == "a" for r in varied)
    if not varied:
        return {"left_share": None, "ci": None, "votes": 0, "fixed_sides": len(decisive)}
    low, high = wilson(left, len(varied))
    return {"left_share": round(left / len(varied), 4), "ci": [round(low, 4), round(high, 4)],
            "votes": len(varied), "fixed_sides": len(decisive) - len(varied)}


def _verdict(row: dict) -> str:
    """A vote as the model it prefers (or tie / bothbad), whatever side that model was on."""
    return row["winner"] if row["winner"] in ("tie", "bothbad") else row["model_" + row["winner"]]


def rater_agreement(votes: list[dict]) -> dict:
    """Where two or more raters voted on the same prompt and pair of models: their agreement per pair of raters and
    overall, each rater's agreement with the others, and the raters flagged for disagreeing with them."""
    by_item: dict[tuple, dict[str, str]] = defaultdict(dict)
    for row in votes:
        if row.get("deleted") or not row.get("rater"):
            continue
        key = (row["prompt"], tuple(sorted((row["model_a"], row["model_b"]))))
        by_item[key][row["rater"]] = _verdict(row)  # a rater's latest vote on an item counts
    pairs: dict[tuple, list[int]] = defaultdict(list)
    for verdicts in by_item.values():
        for a, b in combinations(sorted(verdicts), 2):
            pairs[(a, b)].append(int(verdicts[a] == verdicts[b]))
    per_rater: dict[str, list[int]] = defaultdict(list)
    for (a, b), agreed in pairs.items():
        per_rater[a] += agreed
        per_rater[b] += agreed
    everything = [x for agreed in pairs.values() for x in agreed]
    raters = {name: {"shared": len(agreed), "agreement": round(sum(agreed) / len(agreed), 4)}
              for name, agreed in sorted(per_rater.items())}
    return {
        "shared_votes": len(everything),
        "overall": round(sum(everything) / len(everything), 4) if everything else None,
        "pairs": [{"raters": [a, b], "shared": len(agreed), "agreement": round(sum(agreed) / len(agreed), 4)}
                  for (a, b), agreed in sorted(pairs.items())],
        "raters": raters,
        "flagged": [name for name, r in raters.items() if r["shared"] >= FLAG_MIN_SHARED and r["agreement"] < FLAG_BELOW],
    }


def least_sure(judgement: dict | None, limit: int = RATE_NEXT) -> list[str]:
    """The judged prompts whose two replies the reward model scored closest, closest first."""
    rows = (judgement or {}).get("rows") or []
    return [r["prompt"] for r in sorted(rows, key=lambda r: abs(r["score_a"] - r["score_b"]))][:limit]


def round_report(store: FeedbackStore, workspace: str | Path, run: str) -> dict:
    """Everything "Did this round help?" shows for a run of the workspace (its folder name or path)."""
    space = Workspace(workspace)
    run_dir = space.run_dir(run)
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        raise ReportError(f"{run}: no such run in this workspace.")
    info = runs.load_run(run_dir)
    name = run_dir.name
    parent_dir = runs.parent_dir(run_dir, space.runs_dir)
    base = base_choice(info.config.get("base")) if info.config.get("base") else None
    parent = parent_dir.name if parent_dir is not None else base
    votes = store.ratings(kind="vote")
    involving = [r for r in votes if name in (r["model_a"], r["model_b"])]
    lost, won = changes(votes, name, parent) if parent else ([], [])
    judged = judge.judgement_against(run_dir, str(parent_dir) if parent_dir is not None else parent) \
        if parent else None
    judged_summary = None if judged is None else {
        "win_rate": judged["win_rate"], "ci": [judged["ci_low"], judged["ci_high"]], "prompts": judged["n"],
        "reward": Path(judged["reward"]).name, "prompt_source": judged.get("prompt_source")}
    def label(model: str | None) -> str | None:  # a workspace model folder as base:models/NAME, not its path
        return base_choice(space.base_label(base_of_choice(model))) if model and is_base(model) else model

    rate_next = list(dict.fromkeys([item["prompt"] for item in lost] + least_sure(judged)))[:RATE_NEXT]
    return {
        "run": name, "state": info.state, "parent": parent, "base": base,
        "against_parent": {**head_to_head(votes, name, parent), "label": label(parent)} if parent else None,
        "against_base": {**head_to_head(votes, name, base), "label": label(base)} if base and base != parent else None,
        "judged": judged_summary,
        "regressions": lost, "new_wins": won,
        "position_bias": position_bias(involving),
        "agreement": rater_agreement(involving),
        "rate_next": rate_next,
    }


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _head_line(label: str, h2h: dict | None) -> str:
    if h2h is None:
        return ""
    if not h2h["votes"]:
        return f"- **{label}** ({h2h.get('label') or h2h['against']}): no votes yet"
    blind = f", {h2h['blind']} blind" if h2h["blind"] else ""
    more = h2h["more_votes"]
    settle = ("the interval excludes 50%" if more == 0 else
              f"about {more} more votes at this rate would settle it" if more else "even: no number of votes settles it")
    return (f"- **{label}** ({h2h.get('label') or h2h['against']}): wins **{_percent(h2h['win_rate'])}** (95% interval "
            f"{_percent(h2h['ci'][0])}–{_percent(h2h['ci'][1])}) over {h2h['votes']} votes{blind}: "
            f"{h2h['wins']} won, {h2h['losses']} lost, {h2h['ties']} tied; {settle}")


def describe_report(report: dict) -> str:
    """The report as a person reads it (Markdown; also the CLI's text)."""
    lines = [f"### Did {report['run']} help?"]
    lines += [line for line in (_head_line("vs its parent", report["against_parent"]),
                                _head_line("vs its base", report["against_base"])) if line]
    judged = report["judged"]
    lines.append(f"- **Judged** by {judged['reward']} on {judged['prompts']} prompts: wins "
                 f"**{_percent(judged['win_rate'])}** ({_percent(judged['ci'][0])}–{_percent(judged['ci'][1])})"
                 if judged else "- **Judged**: not yet (pick a reward model under *Judge against its parent*)")
    lost, won = report["regressions"], report["new_wins"]
    lines.append(f"- **Regressions**: {len(lost)} prompt(s) where it lost to its parent; **newly wins** {len(won)}")
    bias = report["position_bias"]
    if bias["votes"]:
        lines.append(f"- **Left pane won** {_percent(bias['left_share'])} of {bias['votes']} decisive votes "
                     f"({_percent(bias['ci'][0])}–{_percent(bias['ci'][1])})"
                     + (" ⚠ people may be voting by side" if bias["ci"][1] < 0.5 or bias["ci"][0] > 0.5 else ""))
    elif bias.get("fixed_sides"):
        lines.append(f"- **Left pane**: not measured: each model kept its side in all {bias['fixed_sides']} decisive "
                     "votes (arena mode shuffles the sides)")
    agreement = report["agreement"]
    if agreement["shared_votes"]:
        lines.append(f"- **Raters agree** on {_percent(agreement['overall'])} of {agreement['shared_votes']} shared "
                     f"votes" + (f"; ⚠ flagged: {', '.join(agreement['flagged'])}" if agreement["flagged"] else ""))
    else:
        lines.append("- **Raters agree**: no prompt was voted on by two raters yet")
    for title, items in (("Lost to its parent", lost), ("Newly wins", won)):
        if items:
            lines.append(f"\n**{title}:**")
            for item in items[:10]:
                lines.append(f"- “{_clip(item['prompt'])}” — round: “{_clip(item['round'])}” · parent: "
                             f"“{_clip(item['parent'])}”")
    return "\n".join(lines)


def _clip(text: str, limit: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
