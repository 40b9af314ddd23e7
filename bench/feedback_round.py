"""One feedback round on the bundled model, timed: a quick SFT run, ~20 votes base vs SFT, a DPO round from them,
and the round's win-rate against its parent on prompts that were not voted on.

The votes are cast by a rule instead of a person (the reply that repeats more of the reference answer's words
wins; neither close: both bad), so the figures are the machine's share of a rating, not a person's reading time.
Training runs as `python -m ftchat train` / `python -m ftchat round` subprocesses, as the app starts them.
Usage: python bench/feedback_round.py [--votes 20] [--sft-steps 20] [--workspace DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import SUPPORT_DATA, ftchat_train, read_status, run_or_explain, utc_stamp, write_json

WORD = re.compile(r"[a-z0-9ø]+")
STOP = {"the", "a", "an", "is", "of", "in", "and", "to", "for", "it", "on", "at", "by", "with", "are", "be", "your"}


def words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOP}


def judge(reply_a: str, reply_b: str, reference: str) -> str:
    """The rule that stands in for a person: the share of the reference's words each reply says."""
    ref = words(reference) or {""}
    score_a, score_b = len(words(reply_a) & ref) / len(ref), len(words(reply_b) & ref) / len(ref)
    if max(score_a, score_b) < 0.25:
        return "bothbad"
    if abs(score_a - score_b) < 0.1:
        return "tie"
    return "a" if score_a > score_b else "b"


def rate(engine, store, workspace, rows, left: str, right: str, settings, rng, anonymous: bool) -> list[float]:
    """Both models answer each row's prompt (sides shuffled), the rule votes; returns wall seconds per rating."""
    from ftchat.names import model_name
    from ftchat.runs import weights_hash

    seconds = []
    for row in rows:
        conversation, reference = row["messages"][:-1], row["messages"][-1]["content"]
        a, b = (left, right) if rng.random() < 0.5 else (right, left)
        started = time.time()
        reply_a, reply_b = engine.answer([(a, conversation), (b, conversation)], settings)
        store.add_vote(conversation, model_name(a), model_name(b), reply_a, reply_b, judge(reply_a, reply_b, reference),
                       settings=settings.__dict__, rater="bench-rule", anonymous=anonymous,
                       hash_a=weights_hash(a, workspace), hash_b=weights_hash(b, workspace))
        seconds.append(time.time() - started)
    return seconds


def _outcomes(votes, run: str) -> dict[str, int]:
    """won / lost / tie / both bad, from `run`'s side."""
    counts = {"won": 0, "lost": 0, "tie": 0, "bothbad": 0}
    for v in votes:
        side = "a" if v["model_a"] == run else "b"
        counts["tie" if v["winner"] == "tie" else "bothbad" if v["winner"] == "bothbad"
               else "won" if v["winner"] == side else "lost"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--votes", type=int, default=20)
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--workspace", default=None, help="default: a temporary folder")
    parser.add_argument("--round-lrs", default="default",
                        help="comma-separated learning rates for the DPO round, one round each ('default': the method's)")
    parser.add_argument("--round-beta", type=float, default=None, help="DPO beta (default: the method's)")
    args = parser.parse_args()
    workspace = Path(args.workspace or tempfile.mkdtemp(prefix="ftchat-feedback-bench-"))
    runs_root = workspace / "runs"
    rows = [json.loads(line) for line in SUPPORT_DATA.read_text().splitlines() if line.strip()]
    voted, held_out = rows[: args.votes], rows[args.votes: 2 * args.votes]

    load_before = os.getloadavg()[1]
    sft = runs_root / "quorvane-sft"
    first_votes = workspace.parent / f"{workspace.name}-first-votes"
    from ftchat.chat.engine import ChatEngine
    from ftchat.chat.generation import GenerationSettings
    from ftchat.feedback import FeedbackStore
    from ftchat.feedback.leaderboard import bradley_terry, win_rate
    from ftchat.models import DEFAULT_BASE
    from ftchat.names import base_choice

    settings = GenerationSettings(max_new_tokens=48)
    rng = random.Random(0)
    base = base_choice(DEFAULT_BASE)
    figures = {"date": utc_stamp(), "rounds": []}
    if first_votes.exists():  # a rerun: the SFT run and its votes are kept from the first time
        figures.update(json.loads((first_votes / "bench-first-votes.json").read_text()))
    else:
        # wall and CPU seconds of each training process: on a shared machine the CPU time is the steadier figure
        trained = ftchat_train(SUPPORT_DATA, sft, "--max-steps", str(args.sft_steps), "--compare-prompts", "0")
        sft_s, sft_cpu = trained.wall_s, trained.cpu_s
        store = FeedbackStore.for_workspace(workspace)
        engine = ChatEngine(runs_root=runs_root)
        cpu = time.process_time()
        per_rating = rate(engine, store, workspace, voted, base, str(sft), settings, rng, anonymous=True)
        rating_cpu = (time.process_time() - cpu) / len(voted)
        votes = store.ratings(kind="vote")
        first = {
            "sft_steps": args.sft_steps, "sft_wall_s": round(sft_s, 1), "sft_cpu_s": round(sft_cpu, 1),
            "votes": len(voted), "s_per_rating_median": round(sorted(per_rating)[len(per_rating) // 2], 2),
            "cpu_s_per_rating": round(rating_cpu, 2),
            "vote_outcomes": {w: sum(v["winner"] == w for v in votes) for w in ("a", "b", "tie", "bothbad")},
            "sft_win_rate_vs_base": win_rate(votes, sft.name, base),
        }
        figures.update(first)
        del engine
        # no writer is open now: a plain copy is whole
        shutil.copytree(workspace, first_votes)
        (first_votes / "bench-first-votes.json").write_text(json.dumps(first))
    all_votes = FeedbackStore.for_workspace(first_votes).ratings(kind="vote")
    for lr in args.round_lrs.split(","):
        flags = [] if lr == "default" else ["--lr", lr]
        if args.round_beta is not None:
            flags += ["--beta", str(args.round_beta)]
        # each round in its own copy of the workspace as it was after the first votes: every round trains on the
        # same pairs, not on the votes about the rounds before it
        copy = workspace.parent / f"{workspace.name}-lr-{lr}"
        round_wall = round_cpu = None
        if not any(p.name != sft.name and (p / "adapter").exists() for p in (copy / "runs").glob("*")):
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(first_votes, copy)
            ran = run_or_explain([sys.executable, "-m", "ftchat", "round", "--from", sft.name, "--method", "dpo",
                                  "--workspace", str(copy), "--compare-prompts", "0", *flags])
            round_wall, round_cpu = ran.wall_s, ran.cpu_s
        round_dir = next(p for p in (copy / "runs").iterdir() if p.name != sft.name)
        summary = read_status(round_dir)["summary"]
        store = FeedbackStore.for_workspace(copy)
        already = {v["id"] for v in store.ratings(kind="vote")}
        engine = ChatEngine(runs_root=copy / "runs")
        rate(engine, store, copy, held_out, str(copy / "runs" / sft.name), str(round_dir), settings, rng,
             anonymous=True)
        del engine
        new_votes = [v for v in store.ratings(kind="vote") if v["id"] not in already]
        all_votes += new_votes
        figures["rounds"].append({
            "run": round_dir.name, "lr": summary.get("lr", lr), "beta": args.round_beta,
            "round_pairs": summary["examples"] + summary["eval_examples"], "round_steps": summary["steps"],
            "round_training_s": summary["runtime_s"], "round_s_per_step": summary["s_per_step"],
            "round_wall_s": round_wall and round(round_wall, 1), "round_cpu_s": round_cpu and round(round_cpu, 1),
            "round_peak_memory_mb": summary["peak_memory_mb"],
            "final_loss": summary.get("final_loss"),
            "round_win_rate_vs_parent": win_rate(new_votes, round_dir.name, sft.name),
            "outcomes_vs_parent": _outcomes(new_votes, round_dir.name),
        })
        print(json.dumps(figures["rounds"][-1]), flush=True)
    figures["leaderboard"] = [r.to_dict() for r in bradley_terry(all_votes)]
    figures["load_average_5min"] = [round(load_before, 1), round(os.getloadavg()[1], 1)]
    figures["workspace"] = str(workspace)
    write_json(workspace / "bench-feedback.json", figures)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
