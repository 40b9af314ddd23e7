"""A trained reward model (a `--method reward` run): load it with transformers + peft and score conversations.

The run folder holds a plain PEFT adapter (task SEQ_CLS) whose `modules_to_save` carry the score head; the base is
the run's base. A score is the head's output on the last token of the whole conversation, rendered with the reward
model's own tokenizer and chat template, exactly as TRL's RewardTrainer rendered the training pairs.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from ftchat import methods, models, runs


class RewardModelError(ValueError):
    """A run cannot be used as a reward model; the message says why."""


def check_reward_run(run_dir: str | Path) -> str | None:
    """None when `run_dir` is a finished reward-model run, else the reason it is not."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return f"{run_dir} is not a run folder"
    run = runs.load_run(run_dir)
    method = run.config.get("method")
    if method not in methods.METHODS or methods.get(method).produces != "reward":
        return f"{run_dir} is a {method or 'unknown'} run, not a reward model (train one with --method reward)"
    if run.state != "done":
        return f"{run_dir} is not finished (state: {run.state})"
    if not (runs.adapter_dir(run_dir) / "adapter_config.json").exists():
        return f"{run_dir} has no adapter/ folder"
    return None


def reward_runs(runs_root: str | Path) -> list[Path]:
    """The finished reward-model runs under runs_root, newest first: what can judge and rank replies."""
    return [run.path for run in runs.list_runs(runs_root) if check_reward_run(run.path) is None]


def load_reward_model(base: str, adapter: str | Path | None = None, precision: str = "auto"):
    """(model, tokenizer): the base as a one-label sequence classifier, with the run's adapter and score head."""
    tokenizer = models.load_tokenizer(base)  # the run trained with its base's tokenizer and chat template
    model = models.load_model(base, precision=precision, task="reward")
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last token that is not padding
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer


def score_conversations(model, tokenizer, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
    """One scalar per conversation (higher: preferred). Identical conversations get identical scores."""
    import torch

    unique = list(dict.fromkeys(json.dumps(c, ensure_ascii=False, sort_keys=True) for c in conversations))
    scores: dict[str, float] = {}
    for start in range(0, len(unique), batch_size):
        chunk = unique[start:start + batch_size]
        ids = [tokenizer.apply_chat_template(json.loads(c), tokenize=True, return_dict=True)["input_ids"]
               for c in chunk]
        width = max(len(i) for i in ids)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([i + [pad] * (width - len(i)) for i in ids])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
        device = next(model.parameters()).device
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        scores.update(zip(chunk, logits[:, 0].float().tolist()))
    return [scores[json.dumps(c, ensure_ascii=False, sort_keys=True)] for c in conversations]


def pair_metrics(chosen_scores: list[float], rejected_scores: list[float]) -> dict:
    """Pairwise accuracy (chosen scored above rejected; a tie counts half) and mean margin over pairs."""
    n = len(chosen_scores)
    if n == 0 or n != len(rejected_scores):
        raise ValueError(f"need as many chosen as rejected scores, at least one; got {n} and {len(rejected_scores)}")
    wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen_scores, rejected_scores))
    margin = sum(c - r for c, r in zip(chosen_scores, rejected_scores)) / n
    return {"accuracy": wins / n, "margin": margin, "n": n}


class RewardModel:
    """A reward-model run, loaded once; `score` is safe to call from several threads."""

    def __init__(self, run_dir: str | Path, precision: str = "auto"):
        problem = check_reward_run(run_dir)
        if problem:
            raise RewardModelError(problem + ".")
        self.run_dir = Path(run_dir)
        self.base = runs.load_run(self.run_dir).config.get("base") or models.DEFAULT_BASE
        self.model, self.tokenizer = load_reward_model(self.base, runs.adapter_dir(self.run_dir), precision)
        self._lock = threading.Lock()

    def score(self, conversations: list[list[dict]]) -> list[float]:
        with self._lock:
            return score_conversations(self.model, self.tokenizer, conversations)

    def score_replies(self, prompts: list[list[dict]], replies: list[str]) -> list[float]:
        """The score of each reply as the answer to its prompt (a conversation ending with a user turn)."""
        return self.score([list(p) + [{"role": "assistant", "content": r}] for p, r in zip(prompts, replies)])

    def score_pairs(self, rows: list[dict]) -> dict:
        """{"accuracy", "margin", "n"} on preference rows (prompt / chosen / rejected, as ftchat.data loads them)."""
        chosen = self.score([r["prompt"] + r["chosen"] for r in rows])
        rejected = self.score([r["prompt"] + r["rejected"] for r in rows])
        return pair_metrics(chosen, rejected)
