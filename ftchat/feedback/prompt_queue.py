"""Prompts to rate quickly: loaded from a run's held-out data, a file or typed text, then stepped through one by one.

A prompt is a conversation (a list of {"role", "content"} messages) that ends with the user's turn; both chat panes
answer it and the person votes before the next one. A queue can be ordered by a reward model's uncertainty: both
models answer each prompt briefly, the reward model scores the two replies, and the prompts where it is least sure
which is better (smallest |margin|) come first, since a person's vote there teaches the most.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ftchat import runs
from ftchat.chat.generation import GenerationSettings
from ftchat.config import RunConfig
from ftchat.data import load_file
from ftchat.export.check import N_PROMPTS, CheckPrompts, general_prompts
from ftchat.feedback.judge import answer_both, closest_first, margins
from ftchat.models import load_tokenizer
from ftchat.train.compare import prompt_of
from ftchat.train.run import load_training_data

# prompts a queue holds at most: a day of rating, while 1,000,000 typed prompts pinned 234 MB per session
MAX_QUEUE_PROMPTS = 10_000
RANK_PROMPTS = 24  # prompts a reward model ranks at most (both models answer each one first)
RANK_TOKENS = 24  # short greedy replies: enough for the reward model to tell them apart
# A reward model trained on pairs gives P(first better) = sigmoid(margin); |margin| < 0.4 is under 60 / 40.
UNSURE_MARGIN = 0.4


class PromptError(ValueError):
    """No prompts could be read; the message names the source and what would fix it."""


def _too_many(source: str) -> PromptError:
    return PromptError(f"{source}: has more than {MAX_QUEUE_PROMPTS:,} prompts, more than a queue holds; "
                       "split it into smaller files and load them one after another.")


def prompts_from_text(text: str, source: str = "the typed prompts") -> list[list[dict]]:
    """One prompt per non-blank line; PromptError past MAX_QUEUE_PROMPTS."""
    prompts = []
    for line in (text or "").splitlines():
        if line.strip():
            if len(prompts) == MAX_QUEUE_PROMPTS:
                raise _too_many(source)
            prompts.append([{"role": "user", "content": line.strip()}])
    return prompts


def prompts_from_rows(rows: list[dict]) -> list[list[dict]]:
    """The prompt of each normalized data row (any shape that has one: messages, prompt/…); the rest is skipped."""
    prompts = []
    for row in rows:
        conversation = prompt_of(row)
        if conversation and conversation[-1].get("role") == "user":
            prompts.append([{"role": m["role"], "content": m["content"]} for m in conversation])
    return prompts


def prompts_from_file(path: str | Path, name: str | None = None) -> list[list[dict]]:
    """A .txt file: one prompt per line; any data file ftchat reads: the prompt of each row."""

    path = Path(path)
    name = name or path.name
    if path.suffix.lower() in (".txt", ".md", ""):
        prompts = prompts_from_text(path.read_text(encoding="utf-8", errors="replace"), name)
    else:
        loaded = load_file(path)
        if loaded.error:
            raise PromptError(loaded.error.replace(path.name, name))
        prompts = prompts_from_rows(loaded.rows)
        if len(prompts) > MAX_QUEUE_PROMPTS:
            raise _too_many(name)
        if not prompts:
            raise PromptError(f"{name}: its {loaded.shape} rows have no prompts (a user turn to answer); "
                              "use conversations, prompt/completion or preference data, or a .txt file "
                              "with one prompt per line.")
    if not prompts:
        raise PromptError(f"{name}: has no prompts; write one prompt per line.")
    return prompts


def held_out_prompts(run_dir: str | Path) -> list[list[dict]]:
    """The prompts of the rows a run held out for its eval loss (the same split its training made).

    A run without an eval split gives the prompts of its training data instead."""
    held_out, training = _split_prompts(run_dir)
    prompts = held_out or training
    if not prompts:
        raise PromptError(f"{Path(run_dir).name}: its data has no prompts to ask (documents have no user turns).")
    return prompts


def check_prompts(run_dir: str | Path, limit: int = N_PROMPTS) -> CheckPrompts:
    """Up to `limit` prompts for the llama.cpp check of the run's GGUF export: its held-out prompts, topped up with
    general prompts (all general where it held none out or its data is gone)."""
    try:
        held = _split_prompts(run_dir)[0][:limit]
    except Exception:  # noqa: BLE001 - data moved or unreadable: the check still runs, on general prompts
        held = []
    general = general_prompts(limit - len(held)).conversations
    if not held:
        return CheckPrompts(general, "general prompts: the run held none out")
    if not general:
        return CheckPrompts(held, "the run's held-out prompts")
    return CheckPrompts(held + general, f"{len(held)} held-out, {len(general)} general")


def _split_prompts(run_dir: str | Path) -> tuple[list[list[dict]], list[list[dict]]]:
    """(the prompts of the rows the run held out, the prompts of its training rows), split as its training did."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise PromptError(f"{run_dir.name}: has no config.yaml, so its data is unknown.")
    config = RunConfig.load(config_path)
    missing = [p for p in config.data if not Path(p).is_file()]
    if missing:
        raise PromptError(f"{run_dir.name}: its training data {', '.join(missing)} is no longer there.")
    weights = runs.weights_dir(run_dir)
    # a whole model's folder has its own tokenizer; an adapter folder's tokenizer files need the base's config
    own = (weights / "tokenizer_config.json").is_file() and (weights / "config.json").is_file()
    tokenizer = load_tokenizer(weights if own else config.base)
    # replay off: the split comes before replay rows are added, so it is the run's own held-out part
    train_ds, eval_ds, *_ = load_training_data(dataclasses.replace(config, replay=0), tokenizer)
    return prompts_from_rows(list(eval_ds) if eval_ds is not None else []), prompts_from_rows(list(train_ds))


@dataclass
class PromptQueue:
    """Prompts and the position of the one being rated (-1: none asked yet)."""

    prompts: list[list[dict]] = field(default_factory=list)
    position: int = -1
    source: str = ""
    margins: list[float] | None = None  # the reward model's margin (left minus right) per prompt, when ranked

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def current(self) -> list[dict] | None:
        return self.prompts[self.position] if 0 <= self.position < len(self.prompts) else None

    @property
    def finished(self) -> bool:
        return self.position >= len(self.prompts) - 1

    def advance(self) -> list[dict] | None:
        """Step to the next prompt and return it; None when every prompt has been asked."""
        if self.position < len(self.prompts):
            self.position += 1
        return self.current

    def progress(self) -> str:
        """'prompt 3 of 20', as the Chat tab shows it."""
        if not self.prompts:
            return "no prompts loaded"
        if self.position < 0:
            loaded = f"{len(self.prompts)} prompt{'s' if len(self.prompts) != 1 else ''} loaded"
            return f"{loaded} from {self.source}" if self.source else loaded
        if self.current is None:
            return f"all {len(self.prompts)} prompts done"
        text = f"prompt {self.position + 1} of {len(self.prompts)}"
        if self.margins is not None:
            text += " · " + margin_note(self.margins[self.position])
        return text


def margin_note(margin: float) -> str:
    """'RM margin 0.03 — unsure': how far apart the reward model scores the two replies, without saying which side
    it prefers (that would sway the vote)."""
    return f"RM margin {abs(margin):.2f} — {'unsure' if abs(margin) < UNSURE_MARGIN else 'fairly sure'}"


def rank_by_uncertainty(queue: PromptQueue, left: str, right: str, engine, reward_model,
                        max_new_tokens: int = RANK_TOKENS, limit: int = RANK_PROMPTS, progress=None
                        ) -> tuple[PromptQueue, list[dict]]:
    """A new queue of (at most `limit` of) the prompts, where the reward model is least sure first: `left` and
    `right` (chat choices) answer each prompt greedily in `max_new_tokens`, `reward_model` scores both replies.
    Also returns, in queue order, what it measured: [{"prompt", "reply_left", "reply_right", "margin"}]."""

    prompts = queue.prompts[:limit]
    if not prompts:
        raise PromptError("Load prompts first.")
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)
    replies_left, replies_right = answer_both(engine, left, right, prompts, settings, progress)
    if progress is not None:
        progress(0.95, f"the reward model scores {2 * len(prompts)} replies")
    gaps = margins(prompts, replies_left, replies_right, reward_model)
    order = closest_first(gaps)
    source = queue.source + (f", {len(prompts)} of {len(queue.prompts)}" if len(prompts) < len(queue.prompts) else "")
    ranked = PromptQueue([prompts[i] for i in order], source=f"{source}, least sure first",
                         margins=[gaps[i] for i in order])
    measured = [{"prompt": prompts[i][-1]["content"], "reply_left": replies_left[i],
                 "reply_right": replies_right[i], "margin": gaps[i]} for i in order]
    return ranked, measured


def split_prompt(conversation: list[dict]) -> tuple[str, list[dict], str]:
    """(system prompt, earlier turns, the last user message) of a prompt, as the Chat tab's boxes take them."""
    system = "\n".join(m["content"] for m in conversation if m["role"] == "system")
    turns = [m for m in conversation if m["role"] != "system"]
    return system, turns[:-1], turns[-1]["content"] if turns else ""
