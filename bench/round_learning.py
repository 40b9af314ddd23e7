"""Do rounds learn what people voted for? Fresh, seeded preference data of several kinds becomes votes the way the
Chat tab stores them; a round is built by the app's own path (`ftchat.feedback.rounds.next_round_config`, what
"Start next round" and `ftchat round` call) and trained in a fresh `python -m ftchat train` process; then parent and
round answer prompts neither saw in training.

Kinds (a style the bundled base never uses, a correction, a refusal, and a noisy mix):
  signoff   the preferred reply ends with a sign-off          greeting  ... starts with a greeting
  bullets   ... is a bullet list of the same sentences        brevity   ... is only the first sentence
  correction  one written better answer states a fictional fact (among sign-off votes): asked on 5 paraphrases
  refusal   declines one fictional topic politely and still answers the rest
  mix       sign-off votes of which 20% prefer the other reply, 10% ties and 5% both-bad

Per cell: the share of unseen answers that follow the preference (parent → round), general answers the parent knew
that the round keeps, a rule judge's win-rate of round vs parent with its 95% interval (the rule did not train the
round), and the training time. Each cell's result is appended to bench/results/round_learning.jsonl as it lands.

    python bench/round_learning.py --cells signoff:dpo:32 mix:dpo:64 --seed 101
    python bench/round_learning.py --grid small    # the table in docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftchat.chat.engine import ChatEngine  # noqa: E402
from ftchat.chat.generation import GenerationSettings  # noqa: E402
from ftchat.feedback.judge import judge_win_rate  # noqa: E402
from ftchat.feedback import rounds  # noqa: E402
from ftchat.feedback.rounds import next_round_config  # noqa: E402
from ftchat.feedback.store import FeedbackStore  # noqa: E402
from ftchat.models import DEFAULT_BASE  # noqa: E402
from ftchat.names import base_choice  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "round_learning.jsonl"
PARENT = base_choice(DEFAULT_BASE)
UNSEEN = 10
ANSWER_TOKENS = 96  # the replies people voted on
EVAL_TOKENS = 128  # room for an answer and a sign-off after it
KINDS = ("signoff", "greeting", "bullets", "brevity", "correction", "refusal", "mix")
BRIEF_WORDS = 25
# General questions whose answer the parent may know; a round must keep the ones it knew.
GENERAL = [("What is the capital of France?", r"paris"), ("How many days are in a week?", r"\b(7|seven)\b"),
           ("What colour is the sky on a clear day?", r"blue"), ("What do bees make?", r"honey"),
           ("What is the largest planet in our solar system?", r"jupiter"),
           ("What is the freezing point of water in Celsius?", r"\b0\b|zero"),
           ("Which animal is known as the king of the jungle?", r"lion"),
           ("What gas do plants take in from the air?", r"carbon dioxide|co2")]

# The same eight facts as a likelihood probe: the model knows one when it scores the right answer above three wrong
# ones (the first is right). Unlike a keyword in a greedy 128-token reply, this does not change when a round only
# shortens or rewords its replies.
PROBES = [("What is the capital of France?", "The capital of France is {}.", ["Paris", "London", "Berlin", "Madrid"]),
          ("How many days are in a week?", "A week has {} days.", ["seven", "five", "ten", "twelve"]),
          ("What colour is the sky on a clear day?", "On a clear day the sky is {}.", ["blue", "green", "red", "yellow"]),
          ("What do bees make?", "Bees make {}.", ["honey", "milk", "silk", "cheese"]),
          ("What is the largest planet in our solar system?", "The largest planet is {}.",
           ["Jupiter", "Mars", "Earth", "Mercury"]),
          ("What is the freezing point of water in Celsius?", "Water freezes at {} degrees Celsius.",
           ["0", "100", "50", "37"]),
          ("Which animal is known as the king of the jungle?", "The king of the jungle is the {}.",
           ["lion", "elephant", "giraffe", "zebra"]),
          ("What gas do plants take in from the air?", "Plants take in {} from the air.",
           ["carbon dioxide", "helium", "hydrogen", "neon"])]

SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "qui", "zel", "dor", "fa", "nu", "bri", "sto", "pel", "gar", "wy"]
THINGS = ["kettle", "lamp", "bicycle", "thermostat", "backpack", "blender", "scooter", "tent", "printer", "heater",
          "speaker", "drill", "router", "watch", "camera", "mixer"]
ASKS = ["How do I clean my {t}?", "What should I check before buying a {t}?", "How can I make my {t} last longer?",
        "Why does my {t} make a strange noise?", "How do I store a {t} over the winter?",
        "What is a good way to carry a {t} on a trip?", "How often should I service my {t}?",
        "Can you give me tips for using a {t} safely?", "What are common mistakes people make with a {t}?",
        "How do I choose the right size of {t}?", "What is the best way to set up a new {t}?",
        "How do I fix a {t} that will not turn on?"]


class World:
    """One seed's fictional names: a company, a signer, a topic to refuse, a fact to correct."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.company = self.word(3).capitalize()
        self.signer = self.word(2).capitalize()
        self.game = self.word(3).capitalize()
        self.island, self.town = self.word(3).capitalize(), self.word(2).capitalize()
        self.signoff = f"— {self.signer}, {self.company} support"
        self.greeting = f"Greetings from {self.company}!"
        self.refusal = (f"I'm sorry, but I can't help with {self.game}. Is there anything else I can do for you?")
        self.fact = f"The capital of {self.island} is {self.town}."
        self.fact_prompt = f"What is the capital of {self.island}?"
        self.paraphrases = [f"Which city is the capital of {self.island}?", f"Name the capital city of {self.island}.",
                            f"{self.island}'s capital is which town?", f"Tell me the capital of {self.island}.",
                            f"Where is the seat of government of {self.island}?"]

    def word(self, n: int) -> str:
        return "".join(self.rng.choice(SYLLABLES) for _ in range(n))

    def prompts(self, n: int) -> list[str]:
        """n distinct everyday questions about made-up products (a brand word keeps them unlike any sample)."""
        out = set()
        while len(out) < n:
            thing = f"{self.word(2).capitalize()} {self.rng.choice(THINGS)}"
            out.add(self.rng.choice(ASKS).format(t=thing))
        ordered = sorted(out)  # a set's order changes with each process's string hashing: the seed alone decides
        self.rng.shuffle(ordered)
        return ordered

    def game_prompts(self, n: int) -> list[str]:
        asks = [f"How do I beat the first level of {self.game}?", f"What is the best strategy in {self.game}?",
                f"Can you explain the rules of {self.game}?", f"Which character should I pick in {self.game}?",
                f"How do I unlock the secret map in {self.game}?", f"Is {self.game} good for beginners?",
                f"What are some cheats for {self.game}?", f"How long does a match of {self.game} take?",
                f"Who makes {self.game}?", f"How do I score more points in {self.game}?",
                f"What does the shield do in {self.game}?", f"How many players can play {self.game}?"]
        return self.rng.sample(asks, min(n, len(asks)))


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def clean(answer: str) -> str:
    """An answer cut at its last whole sentence (a reply cut off by the token limit would teach cut-offs)."""
    parts = sentences(answer)
    if len(parts) > 1 and not re.search(r"[.!?]$", parts[-1]):
        parts = parts[:-1]
    return " ".join(parts).strip()


def styled(kind: str, answer: str, world: World) -> str | None:
    """The reply the voter prefers for a style kind; None where the style cannot apply to this answer."""
    if kind in ("signoff", "mix", "correction"):
        return f"{answer}\n\n{world.signoff}"
    if kind == "greeting":
        return f"{world.greeting} {answer}"
    parts = sentences(answer)
    if kind == "bullets":
        return "\n".join(f"- {s}" for s in parts) if len(parts) >= 2 else None
    if kind == "brevity":
        return parts[0] if len(parts) >= 2 and len(parts[0].split()) <= BRIEF_WORDS else None
    raise ValueError(kind)


def follows(kind: str, reply: str, world: World, on_topic: bool = False) -> bool:
    if kind in ("signoff", "mix", "correction"):
        return world.signer.lower() in reply.lower()
    if kind == "greeting":
        return reply.strip().lower().startswith(world.greeting.lower()[:15])
    if kind == "bullets":
        return sum(bool(re.match(r"\s*([-*•]|\d+[.)])\s", line)) for line in reply.splitlines()) >= 2
    if kind == "brevity":
        return len(reply.split()) <= BRIEF_WORDS
    if kind == "refusal":
        declined = bool(re.search(r"sorry|can't help|cannot help|can not help", reply.lower()))
        return declined if on_topic else not declined
    raise ValueError(kind)


class Answers:
    """The parent's greedy answers, asked once per prompt and kept on disk per seed."""

    def __init__(self, engine: ChatEngine, path: Path, tokens: int):
        self.engine, self.path, self.tokens = engine, path, tokens
        self.known = json.loads(path.read_text()) if path.exists() else {}

    def __call__(self, prompts: list[str]) -> list[str]:
        missing = [p for p in prompts if p not in self.known]
        for i, prompt in enumerate(missing):
            [reply] = self.engine.answer([(PARENT, [{"role": "user", "content": prompt}])],
                                         GenerationSettings(max_new_tokens=self.tokens))
            self.known[prompt] = reply
            if i % 10 == 9:
                print(f"  parent answered {i + 1}/{len(missing)}", flush=True)
                self.path.write_text(json.dumps(self.known))
        self.path.write_text(json.dumps(self.known))
        return [self.known[p] for p in prompts]


def conversation(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def store_votes(store: FeedbackStore, kind: str, method: str, n: int, world: World, answers: Answers,
                rng: random.Random) -> list[str]:
    """Store n ratings of `kind` as the Chat tab does (both panes: the parent; sides shuffled); returns the prompts
    that were rated. KTO cells rate half the prompts with two thumbs (the styled reply up, the plain one down)."""
    settings = {"max_new_tokens": ANSWER_TOKENS, "temperature": 0.0}
    if kind == "refusal":
        topic = world.game_prompts(min(max(2, n // 2), 7))  # of 12: 5 stay unseen for the evaluation
        other = world.prompts(n - len(topic) + 40)[: n - len(topic)]
        rated = []
        for prompt, answer in zip(topic + other, answers(topic + other)):
            plain = clean(answer) or answer
            good, bad = (world.refusal, plain) if prompt in topic else (plain, world.refusal)
            vote(store, prompt, good, bad, method, rng, settings)
            rated.append(prompt)
        return rated
    pool = world.prompts(n * 3 + 20)
    rated, i = [], 0
    against = round(0.2 * n) if kind == "mix" else 0
    ties = round(0.10 * n) if kind == "mix" else 0
    both_bad = round(0.05 * n) if kind == "mix" else 0
    n_votes = n - (1 if kind == "correction" else 0)
    for prompt in pool:
        if len(rated) >= n_votes:
            break
        plain = clean(answers([prompt])[0])
        liked = styled(kind, plain, world) if plain else None
        if not liked or liked.strip() == plain.strip():
            continue
        i += 1
        if i <= against:
            vote(store, prompt, plain, liked, method, rng, settings)
        elif i <= against + ties:
            store.add_vote(conversation(prompt), PARENT, PARENT, liked, plain, "tie", settings)
        elif i <= against + ties + both_bad:
            store.add_vote(conversation(prompt), PARENT, PARENT, liked, plain, "bothbad", settings)
        else:
            vote(store, prompt, liked, plain, method, rng, settings)
        rated.append(prompt)
    if kind == "correction":
        [wrong] = answers([world.fact_prompt])
        store.add_edit(conversation(world.fact_prompt), PARENT, wrong, world.fact, side="a", settings=settings)
        rated.append(world.fact_prompt)
    return rated


def vote(store, prompt, good, bad, method, rng, settings):
    if method == "kto" and rng.random() < 0.5:
        store.add_thumb(conversation(prompt), PARENT, good, True, side="a", settings=settings)
        store.add_thumb(conversation(prompt), PARENT, bad, False, side="b", settings=settings)
        return
    if rng.random() < 0.5:
        store.add_vote(conversation(prompt), PARENT, PARENT, good, bad, "a", settings)
    else:
        store.add_vote(conversation(prompt), PARENT, PARENT, bad, good, "b", settings)


def evaluate(engine: ChatEngine, run_dir: Path, kind: str, world: World, rated: list[str], parent: Answers) -> dict:
    """Parent and round on unseen prompts and on general questions; a rule judge compares them."""
    if kind == "refusal":
        seen = set(rated)
        topic = [p for p in world.game_prompts(12) if p not in seen][:5]
        other = [p for p in world.prompts(200) if p not in seen][-5:]
        unseen = [(p, True) for p in topic] + [(p, False) for p in other]
    elif kind == "correction":
        unseen = [(p, False) for p in world.paraphrases]
    else:
        seen = set(rated)
        unseen = [(p, False) for p in world.prompts(400)[::-1] if p not in seen][:UNSEEN]
    settings = GenerationSettings(max_new_tokens=EVAL_TOKENS)
    rows = []
    for prompt, on_topic in unseen:
        before, after = engine.answer([(PARENT, conversation(prompt)), (str(run_dir), conversation(prompt))], settings)
        if kind == "correction":
            ok = [world.town.lower() in before.lower(), world.town.lower() in after.lower()]
        else:
            ok = [follows(kind, before, world, on_topic), follows(kind, after, world, on_topic)]
        rows.append({"prompt": prompt, "parent": before, "round": after, "parent_ok": ok[0], "round_ok": ok[1]})
    general = []
    for question, pattern in GENERAL:
        before, after = engine.answer([(PARENT, conversation(question)), (str(run_dir), conversation(question))],
                                      settings)
        general.append({"prompt": question, "parent_ok": bool(re.search(pattern, before.lower())),
                        "round_ok": bool(re.search(pattern, after.lower())), "parent": before, "round": after})
    knew = [g for g in general if g["parent_ok"]]
    scores_round = [float(r["round_ok"]) for r in rows] + [float(g["round_ok"]) for g in general]
    scores_parent = [float(r["parent_ok"]) for r in rows] + [float(g["parent_ok"]) for g in general]
    rate, low, high = judge_win_rate(scores_round, scores_parent)
    return {"unseen": len(rows), "parent_follows": sum(r["parent_ok"] for r in rows),
            "round_follows": sum(r["round_ok"] for r in rows), "general_known": len(knew),
            "general_kept": sum(g["round_ok"] for g in knew), "judged_win_rate": round(rate, 3),
            "judged_ci": [round(low, 3), round(high, 3)], "examples": rows[:3],
            "lost_general": [{k: g[k] for k in ("prompt", "parent", "round")} for g in knew if not g["round_ok"]]}


def knowledge_probe(run_dir: Path) -> dict:
    """PROBES scored by the parent (the base: the adapter switched off) and by the round: which facts each knows."""
    import torch
    from peft import PeftModel

    from ftchat import models, runs

    base = models.resolve_base(DEFAULT_BASE)
    tokenizer = models.load_tokenizer(base)
    model = PeftModel.from_pretrained(models.load_model(base, precision="fp32"), runs.weights_dir(run_dir)).eval()

    def score(question: str, answer: str) -> float:
        prompt = tokenizer.apply_chat_template(conversation(question), tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.inference_mode():
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, 1:]
        return logps[len(prompt_ids) - 1:].gather(1, targets[len(prompt_ids) - 1:, None]).sum().item()

    def knows(question: str, template: str, options: list[str]) -> bool:
        scores = [score(question, template.format(o)) for o in options]
        return max(range(len(scores)), key=scores.__getitem__) == 0

    with model.disable_adapter():
        parent = [knows(*p) for p in PROBES]
    after = [knows(*p) for p in PROBES]
    return {"probe_known": sum(parent), "probe_kept": sum(a for a, b in zip(after, parent) if b),
            "probe_lost": [p[0] for p, a, b in zip(PROBES, after, parent) if b and not a]}


def run_cell(kind: str, method: str, n: int, seed: int, overrides: dict, cache: Path, engine: ChatEngine,
             probe: bool = True) -> dict:
    world = World(seed)
    rng = random.Random(seed * 7 + n)
    answers = Answers(engine, cache / f"parent-{seed}.json", ANSWER_TOKENS)
    with tempfile.TemporaryDirectory(prefix="round-learning-") as tmp:
        workspace = Path(tmp)
        store = FeedbackStore.for_workspace(workspace)
        rated = store_votes(store, kind, method, n, world, answers, rng)
        started = time.time()
        if method in rounds.RL_METHODS:  # reward model, then GRPO / RLOO: what "Start next round" runs for reward-rl
            flags = [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()]
            result = subprocess.run([sys.executable, "-m", "ftchat", "round", "--from", PARENT, "--method",
                                     "reward-rl", "--rl-method", method, "--workspace", str(workspace), *flags],
                                    cwd=ROOT, capture_output=True, text=True,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
            [out] = [p for p in (workspace / "runs").iterdir()
                     if (p / "config.yaml").exists() and not p.name.endswith("-rm")]  # not the queue's folders
            config = argparse.Namespace(out=str(out))
        else:
            config = next_round_config(workspace, PARENT, method, **overrides)
            requested = workspace / "round.yaml"
            config.save(requested)
            result = subprocess.run([sys.executable, "-m", "ftchat", "train", str(requested)], cwd=ROOT,
                                    capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        train_s = time.time() - started
        status = json.loads((Path(config.out) / "status.json").read_text())
        if status.get("state") != "done":
            raise RuntimeError(f"{kind}:{method}:{n} did not train: {status.get('error')}\n{result.stdout[-2000:]}")
        resolved = json.loads(json.dumps(__import__("yaml").safe_load((Path(config.out) / "config.yaml").read_text())))
        engine_round = ChatEngine(runs_root=workspace / "runs")
        scores = evaluate(engine_round, Path(config.out), kind, world, rated, answers)
        if probe:
            scores.update(knowledge_probe(Path(config.out)))
    return {"kind": kind, "method": method, "votes": n, "seed": seed, "overrides": overrides,
            "edit_repeats": rounds.EDIT_REPEATS,
            "steps": status["summary"].get("steps"), "lr": resolved.get("lr"), "beta": resolved.get("beta"),
            "sft_weight": resolved.get("sft_weight"), "train_s": round(train_s, 1),
            "max_completion_length": resolved.get("max_completion_length") if method in rounds.RL_METHODS else None,
            "final_loss": status["summary"].get("final_loss"), **scores,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg()[0]}


GRIDS = {
    "smoke": ["signoff:dpo:8"],
    "small": [f"{k}:dpo:32" for k in ("signoff", "greeting", "bullets", "brevity", "refusal", "correction")]
    + ["mix:dpo:64", "signoff:kto:32", "mix:kto:64"],
    "counts": [f"signoff:{m}:{n}" for m in ("dpo", "kto") for n in (8, 16, 32, 64, 128)],
    "rl": [f"signoff:{m}:{n}" for m in ("grpo", "rloo") for n in (32, 128)],
}


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def table(path: Path, tag: str | None) -> str:
    """The results kept in `path` (those with `tag`, if given) as the Markdown table of docs/benchmarks.md."""
    lines = ["| kind | method | votes | seed | steps | lr | beta | SFT term | follows: parent → round | general kept | "
             "facts kept (likelihood) | judged win-rate (95%) | train s | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if tag and r.get("tag") != tag:
            continue
        lines.append(f"| {r['kind']} | {r['method']} | {r['votes']} | {r['seed']} | {r['steps']} | {r['lr']:g} | {r.get('beta') or 0.1:g} | "
                     f"{r.get('sft_weight') or 0:g} | "
                     f"{r['parent_follows']}/{r['unseen']} → **{r['round_follows']}/{r['unseen']}** | "
                     f"{r['general_kept']}/{r['general_known']} | "
                     f"{str(r['probe_kept']) + '/' + str(r['probe_known']) if 'probe_known' in r else '–'} | "
                     f"{r['judged_win_rate']:.2f} "
                     f"[{r['judged_ci'][0]:.2f}, {r['judged_ci'][1]:.2f}] | {r['train_s']:.0f} | {r['load']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="*", default=[],
                        help="KIND:METHOD:VOTES, e.g. signoff:dpo:32; METHOD dpo, kto, or grpo / rloo (a reward model "
                             "from the votes, then that RL method against it)")
    parser.add_argument("--grid", choices=sorted(GRIDS), default=None)
    parser.add_argument("--seed", type=int, default=101, help="the defaults were chosen on seed 7; report others")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="training flags for the round (e.g. lr=5e-4 sft_weight=1): a default under test")
    parser.add_argument("--edit-repeats", type=int, default=None, help="a default under test (rounds.EDIT_REPEATS)")
    parser.add_argument("--tag", default="", help="a label kept with each result")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--table", action="store_true", help="print the kept results (with --tag: those) and stop")
    args = parser.parse_args()
    if args.table:
        print(table(Path(args.out), args.tag or None))
        return
    cells = args.cells + GRIDS.get(args.grid, [])
    if not cells:
        parser.error("give --cells or --grid")
    overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.edit_repeats is not None:
        rounds.EDIT_REPEATS = args.edit_repeats
    cache = ROOT / "bench" / "results" / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    engine = ChatEngine(runs_root=cache / "runs")
    out = Path(args.out)
    print(f"{'cell':24} {'parent':>6} {'round':>6} {'kept':>6} {'judged (95%)':>20} {'train s':>8}")
    for cell in cells:
        kind, method, n = cell.split(":")
        result = run_cell(kind, method, int(n), args.seed, overrides, cache, engine)
        result["tag"] = args.tag
        with out.open("a") as handle:
            handle.write(json.dumps(result, ensure_ascii=False) + "\n")
        print(f"{cell:24} {result['parent_follows']:>3}/{result['unseen']:<2} {result['round_follows']:>3}/"
              f"{result['unseen']:<2} {result['general_kept']:>2}/{result['general_known']:<3} "
              f"{result['judged_win_rate']:>6.2f} [{result['judged_ci'][0]:.2f}, {result['judged_ci'][1]:.2f}] "
              f"{result['train_s']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
