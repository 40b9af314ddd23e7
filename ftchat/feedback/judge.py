"""The automatic judge: a reward model scores the replies of two models to the same prompts, and estimates how
often the first would win a human vote - before anyone votes. Also orders prompts by where the reward model is
least sure which reply is better, so that a person's vote there teaches the most.

judge_win_rate and uncertainty_order are pure over scores / a scorer; judge_runs does the generating and scoring.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import GenerationSettings
from ftchat.data import DataError, load_file
from ftchat.names import base_of_choice, is_base
from ftchat.train.compare import prompt_of
from ftchat.train.reward_model import RewardModel

N_BOOTSTRAP = 1000
CHUNK = 4  # prompts answered per step when progress is reported


def outcomes(scores_a: list[float], scores_b: list[float]) -> list[float]:
    """Per prompt: 1 when A's reply scores higher, 0 when lower, 0.5 for a tie."""
    if len(scores_a) != len(scores_b):
        raise ValueError(f"scores_a and scores_b differ in length ({len(scores_a)} vs {len(scores_b)})")
    return [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(scores_a, scores_b)]


def judge_win_rate(scores_a: list[float], scores_b: list[float], n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """(win rate of A over B, low, high): ties count half; the interval is the percentile bootstrap over prompts."""
    import numpy as np

    wins = np.asarray(outcomes(scores_a, scores_b))
    if wins.size == 0:
        raise ValueError("no scores to judge: give at least one prompt")
    rng = np.random.default_rng(seed)
    resampled = wins[rng.integers(0, wins.size, size=(n_bootstrap, wins.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return float(wins.mean()), float(low), float(high)


def as_conversation(prompt) -> list[dict]:
    """A prompt as a conversation ending with a user turn: a string becomes one user message."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def margins(prompts: list, replies_a: list[str], replies_b: list[str], rm) -> list[float]:
    """score(A's reply) - score(B's reply) per prompt; `rm` is a ftchat.train.reward_model.RewardModel."""
    conversations = [as_conversation(p) for p in prompts]
    scores = rm.score_replies(conversations + conversations, list(replies_a) + list(replies_b))
    n = len(conversations)
    return [a - b for a, b in zip(scores[:n], scores[n:])]


def closest_first(gaps: list[float]) -> list[int]:
    """Indices of the margins, smallest |margin| first (the order of equal ones is kept)."""
    return sorted(range(len(gaps)), key=lambda i: abs(gaps[i]))


def uncertainty_ranking(prompts: list, replies_a: list[str], replies_b: list[str], rm) -> list[tuple[object, float]]:
    """(prompt, margin) pairs, those whose two replies the reward model finds closest (smallest |margin|) first."""
    gaps = margins(prompts, replies_a, replies_b, rm)
    return [(prompts[i], gaps[i]) for i in closest_first(gaps)]


def uncertainty_order(prompts: list, replies_a: list[str], replies_b: list[str], rm) -> list:
    """The prompts, those whose two replies the reward model finds closest (smallest |margin|) first."""
    return [prompt for prompt, _ in uncertainty_ranking(prompts, replies_a, replies_b, rm)]


def answer_both(engine, model_a: str, model_b: str, conversations: list[list[dict]], settings,
                progress=None) -> tuple[list[str], list[str]]:
    """Both models' replies to every conversation. With `progress(fraction, text)` the prompts are answered a few
    at a time and each step is reported; without it, in one batch."""
    n = len(conversations)
    chunk = CHUNK if progress is not None else max(n, 1)
    replies_a, replies_b = [], []
    for start in range(0, n, chunk):
        part = conversations[start:start + chunk]
        if progress is not None:
            progress(start / n, f"both models answer prompts {start + 1}–{start + len(part)} of {n}")
        replies = engine.answer([(model_a, c) for c in part] + [(model_b, c) for c in part], settings)
        replies_a += replies[:len(part)]
        replies_b += replies[len(part):]
    return replies_a, replies_b


def read_prompts(path: str | Path) -> list[list[dict]]:
    """Prompts from a file: a .txt file holds one prompt per line; any training file (JSONL, JSON, CSV) gives the
    conversation up to its last assistant turn (or its prompt) for each row."""

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    if path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        prompts = [as_conversation(line) for line in lines if line]
    else:
        report = load_file(path)
        if report.error:
            raise DataError(report.error)
        prompts = [p for p in (prompt_of(row) for row in report.rows) if p]
    if not prompts:
        raise DataError(f"{path}: holds no prompts.")
    return prompts


def judge_runs(run_a: str, run_b: str, reward_run: str | Path, prompts: list, settings=None, engine=None,
               reward_model=None, progress=None) -> dict:
    """Both models answer every prompt, the reward model scores both replies. `run_a` / `run_b` are run folders or
    base:NAME. Returns the win rate of A with its interval and one row per prompt. `progress(fraction, text)`, when
    given, hears each step."""

    conversations = [as_conversation(p) for p in prompts]
    if not conversations:
        raise ValueError("no prompts to judge on: give at least one prompt")
    engine = engine or ChatEngine(runs_root=Path(run_a).parent if not is_base(run_a) else "runs")
    settings = settings or GenerationSettings(max_new_tokens=64)
    n = len(conversations)
    replies_a, replies_b = answer_both(engine, run_a, run_b, conversations, settings, progress)
    if progress is not None:
        progress(0.95, f"the reward model scores {2 * n} replies")
    rm = reward_model or RewardModel(reward_run)
    scores = rm.score_replies(conversations + conversations, replies_a + replies_b)
    scores_a, scores_b = scores[:n], scores[n:]
    rate, low, high = judge_win_rate(scores_a, scores_b)
    result = outcomes(scores_a, scores_b)
    return {
        "run": run_a, "against": run_b, "reward": str(reward_run), "n": n,
        "win_rate": rate, "ci_low": low, "ci_high": high,
        "wins": result.count(1.0), "ties": result.count(0.5), "losses": result.count(0.0),
        "mean_margin": sum(a - b for a, b in zip(scores_a, scores_b)) / n,
        "max_new_tokens": settings.max_new_tokens, "time": time.time(),
        "rows": [{"prompt": c[-1]["content"], "reply_a": ra, "reply_b": rb, "score_a": sa, "score_b": sb}
                 for c, ra, rb, sa, sb in zip(conversations, replies_a, replies_b, scores_a, scores_b)],
    }


def write_judgement(run_dir: str | Path, judgement: dict) -> Path:
    """Keep a judgement in the judged run's folder (judge.json, one entry per opponent, the latest wins), for the
    Feedback tab to show beside the votes."""
    path = Path(run_dir) / "judge.json"
    kept = {key: value for key, value in read_judgements(run_dir).items()
            if not same_model(key, judgement["against"])}  # one entry per opponent, however it was spelled
    kept[judgement["against"]] = judgement
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(kept, indent=1, ensure_ascii=False))
    tmp.replace(path)
    return path


def read_judgements(run_dir: str | Path) -> dict:
    """{opponent: judgement} kept by write_judgement; {} when the run was never judged."""
    try:
        return json.loads((Path(run_dir) / "judge.json").read_text())
    except (OSError, ValueError):
        return {}


def same_model(a: str, b: str) -> bool:
    """Whether two model names (a run folder, a run name, base:NAME) mean the same model: runs by folder name (they
    live in one runs folder), bases by name or by the folder they point to."""
    if is_base(a) != is_base(b):
        return False
    if a == b:
        return True
    if not is_base(a):
        return Path(a).name == Path(b).name
    folder_a, folder_b = Path(base_of_choice(a)), Path(base_of_choice(b))
    return folder_a.exists() and folder_b.exists() and folder_a.resolve() == folder_b.resolve()


def judgement_against(run_dir: str | Path, opponent: str) -> dict | None:
    """The latest judgement of the run against `opponent` (a run folder or name, or base:NAME); None if never."""
    found = [j for key, j in read_judgements(run_dir).items() if same_model(key, opponent)]
    return max(found, key=lambda j: j.get("time", 0)) if found else None
