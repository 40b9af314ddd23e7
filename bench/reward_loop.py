"""The reward loop on the bundled model: does a reward model learn a preference from ~50 pairs, and does GRPO against
it raise the reward? Not a test (minutes of CPU); its figures go in the README.

1. Generates fictional shop questions with a polite and a rude answer carrying the same fact (chosen: polite).
2. Trains a reward model (`--method reward`) on 50 pairs; measures pairwise accuracy on 20 held-out pairs whose
   shops, items and phrasings it never saw.
3. Runs GRPO from the base against that reward model on other questions; reports the mean reward of the first and
   the last steps, s/step, and the reward-model score and polite-phrase count of the greedy answers to held-out
   questions before (the base) and after (the GRPO run), plus the judged win rate of the GRPO run over the base.

Usage: python bench/reward_loop.py [--rm-steps 12] [--rl-steps 8] [--rl-batch 4] [--generations 2]
       [--completion-tokens 32] [--out DIR] [--reward rule:polite]
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from common import ftchat_train, read_metrics, write_json, write_jsonl

SHOPS = ["Velmora Bakery", "Quillfern Teas", "Brantle Hardware", "Zopple Kitchen", "Marrowind Cafe", "Tessik Lamps",
         "Oakhollow Books", "Pindle Market", "Gellow Pier Shop", "Drommel Ferries", "Hobbin Pottery", "Sorrel Garden",
         "Fenwick Tailors", "Arbel Jams", "Larkfen Boats", "Quibble Bikes"]
ITEMS = ["rye loaf", "green tea", "brass hinge", "copper kettle", "oat latte", "desk lamp", "atlas", "pear basket",
         "fishing rod", "day ticket", "blue mug", "fern seeds", "wool coat", "plum jam", "canoe paddle", "bike bell"]
QUESTIONS = ["Where can I find the {item} at {shop}?", "Does {shop} still sell the {item}?",
             "How much is the {item} at {shop}?", "Can I order the {item} from {shop} online?",
             "When will {shop} have the {item} again?"]
FACTS = ["The {item} is on the second shelf by the window.", "Yes, {shop} sells the {item} every weekday.",
         "The {item} costs eleven crowns at {shop}.", "You can order the {item} on the {shop} website.",
         "{shop} expects the {item} back on Thursday."]
POLITE = [("Thank you for asking! ", " I hope that helps, have a lovely day."),
          ("Of course, I am glad to help. ", " Please let me know if you need anything else."),
          ("Certainly! ", " Thanks so much for your patience."),
          ("Happy to help. ", " You are very welcome to ask again anytime.")]
RUDE = [("Ugh, whatever. ", " Now go away."), ("That is a stupid question. ", " Figure it out yourself next time."),
        ("I don't care, but fine. ", " Stop bothering me."), ("Seriously? ", " Don't be so dumb.")]


def pairs(shops, polite, rude, n, rng):
    rows = []
    for _ in range(n):
        shop, item, k = rng.choice(shops), rng.choice(ITEMS), rng.randrange(len(QUESTIONS))
        fact = FACTS[k].format(shop=shop, item=item)
        (p1, p2), (r1, r2) = rng.choice(polite), rng.choice(rude)
        rows.append({"prompt": QUESTIONS[k].format(shop=shop, item=item),
                     "chosen": p1 + fact + p2, "rejected": r1 + fact + r2})
    return rows


def train(data: Path, out: Path, *flags: str) -> dict:
    run = ftchat_train(data, out, *flags)
    return {**run.summary, "wall_s": round(run.wall_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rm-steps", type=int, default=12)
    parser.add_argument("--rl-steps", type=int, default=8)
    parser.add_argument("--rl-batch", type=int, default=4, help="answers per step (prompts x generations)")
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--completion-tokens", type=int, default=32)
    parser.add_argument("--reward", default=None, help="GRPO's reward (default: the reward model trained here)")
    parser.add_argument("--out", default="/tmp/ftchat-reward-loop")
    parser.add_argument("--rl-lr", default=None, help="GRPO learning rate (default: the method's)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    train_pairs = pairs(SHOPS[:12], POLITE[:3], RUDE[:3], 50, rng)
    held_out = pairs(SHOPS[12:], POLITE[3:], RUDE[3:], 20, rng)  # unseen shops and unseen phrasings
    write_jsonl(out / "pairs.jsonl", train_pairs)
    write_jsonl(out / "held_out.jsonl", held_out)
    report = {}

    rm_dir = out / "rm"
    if not (rm_dir / "adapter").exists():
        report["reward_model"] = train(out / "pairs.jsonl", rm_dir, "--method", "reward", "--max-steps",
                                       str(args.rm_steps), "--batch-size", "4", "--eval-split", "0.1",
                                       "--early-stopping", "0")
    from ftchat.train.reward_model import RewardModel

    rm = RewardModel(rm_dir)
    report["held_out"] = rm.score_pairs([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                          "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                          "rejected": [{"role": "assistant", "content": r["rejected"]}]}
                                         for r in held_out])
    print(json.dumps({"reward_model": report.get("reward_model"), "held_out": report["held_out"]}), flush=True)

    rl_prompts = [q.format(shop=s, item=i) for s in SHOPS[:12] for q, i in zip(QUESTIONS, rng.sample(ITEMS, 5))]
    rng.shuffle(rl_prompts)
    write_jsonl(out / "prompts.jsonl", [{"prompt": p} for p in rl_prompts[:48]])
    rl_dir = out / ("grpo" + (f"-lr{args.rl_lr}" if args.rl_lr else ""))
    reward = args.reward or str(rm_dir)
    report["grpo"] = train(out / "prompts.jsonl", rl_dir, "--method", "grpo", "--reward", reward, "--max-steps",
                           str(args.rl_steps), "--batch-size", str(args.rl_batch), "--num-generations",
                           str(args.generations), "--max-completion-length", str(args.completion_tokens),
                           "--eval-split", "0", "--compare-prompts", "0", *(["--lr", args.rl_lr] if args.rl_lr else []))
    metrics = read_metrics(rl_dir)
    report["grpo_steps"] = [{k: m.get(k) for k in ("step", "reward", "kl", "completions_mean_length", "elapsed_s")}
                            for m in metrics if "reward" in m]

    from ftchat.chat.generation import GenerationSettings
    from ftchat.feedback.judge import judge_runs
    from ftchat.models import DEFAULT_BASE
    from ftchat.names import base_choice
    from ftchat.train.rewards import polite

    questions = [q.format(shop=s, item=i) for s, i, q in zip(SHOPS[12:], ITEMS[:4], QUESTIONS)]
    questions += [q.format(shop=s, item=i) for s, i, q in zip(SHOPS[12:], ITEMS[8:12], reversed(QUESTIONS))]
    judged = judge_runs(str(rl_dir), base_choice(DEFAULT_BASE), rm_dir, questions,
                        settings=GenerationSettings(max_new_tokens=48), reward_model=rm)
    rows = judged.pop("rows")
    report["judge"] = judged
    report["before_after"] = {
        "rm_score_base": sum(r["score_b"] for r in rows) / len(rows),
        "rm_score_grpo": sum(r["score_a"] for r in rows) / len(rows),
        "polite_phrases_base": sum(polite(r["reply_b"]) for r in rows) / len(rows),
        "polite_phrases_grpo": sum(polite(r["reply_a"]) for r in rows) / len(rows),
        "examples": rows[:3],
    }
    write_json(out / "report.json", report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
