"""The automatic judge: a reward model scores the replies of two models to the same prompts, and estimates how
often the first would win a human vote - before anyone votes. Also orders prompts by where the reward model is
least sure which reply is better, so that a person's vote there teaches the most.

judge_win_rate and uncertainty_order are pure over scores / a scorer; judge_runs does the generating and scoring.
"""
from __future__ import annotations

import json
from pathlib import Path

N_BOOTSTRAP = 1000


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
    """score(A's reply) - score(B's reply) per prompt; `rm` is a ftchat.reward_model.RewardModel."""
    conversations = [as_conversation(p) for p in prompts]
    scores = rm.score_replies(conversations + conversations, list(replies_a) + list(replies_b))
    n = len(conversations)
    return [a - b for a, b in zip(scores[:n], scores[n:])]


def uncertainty_order(prompts: list, replies_a: list[str], replies_b: list[str], rm) -> list:
    """The prompts, those whose two replies the reward model finds closest (smallest |margin|) first."""
    gaps = margins(prompts, replies_a, replies_b, rm)
    order = sorted(range(len(prompts)), key=lambda i: abs(gaps[i]))
    return [prompts[i] for i in order]


def read_prompts(path: str | Path) -> list[list[dict]]:
    """Prompts from a file: a .txt file holds one prompt per line; any training file (JSONL, JSON, CSV) gives the
    conversation up to its last assistant turn (or its prompt) for each row."""
    from ftchat.compare import prompt_of
    from ftchat.data import DataError, load_file

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
               reward_model=None) -> dict:
    """Both models answer every prompt, the reward model scores both replies. `run_a` / `run_b` are run folders or
    base:NAME. Returns the win rate of A with its interval and one row per prompt."""
    from ftchat.chat import ChatEngine, GenerationSettings
    from ftchat.reward_model import RewardModel

    conversations = [as_conversation(p) for p in prompts]
    engine = engine or ChatEngine(runs_root=Path(run_a).parent if not run_a.startswith("base:") else "runs")
    settings = settings or GenerationSettings(max_new_tokens=64)
    replies = engine.answer([(run_a, c) for c in conversations] + [(run_b, c) for c in conversations], settings)
    n = len(conversations)
    replies_a, replies_b = replies[:n], replies[n:]
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
        "rows": [{"prompt": c[-1]["content"], "reply_a": ra, "reply_b": rb, "score_a": sa, "score_b": sb}
                 for c, ra, rb, sa, sb in zip(conversations, replies_a, replies_b, scores_a, scores_b)],
    }


def write_judgement(run_dir: str | Path, judgement: dict) -> Path:
    """Keep a judgement in the judged run's folder (judge.json, one entry per opponent, the latest wins), for the
    Feedback tab to show beside the votes."""
    path = Path(run_dir) / "judge.json"
    kept = read_judgements(run_dir)
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
