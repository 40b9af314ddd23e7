"""The training budget: how many optimizer steps (and evals, warmup, eval rows) a run gets, from its data.

A fixed epoch count fails both ways: 3 epochs of 25 rows are ~20 LoRA updates, too few to state new facts; 3 epochs
of 5,000 rows are hours of CPU time. So the plan counts updates and passes:

- every run on conversations or documents gets at least MIN_STEPS updates (small sets are repeated until it does),
  but no row is seen more than MAX_EPOCHS times;
- larger sets get FLOOR_EPOCHS passes, up to MAX_STEPS updates in all; past that, one pass (every row seen once);
- below EVAL_MIN_ROWS rows nothing is held out for the eval loss (each row is a fact the model should learn), and
  early stopping only runs when the eval split has at least EARLY_STOP_MIN_ROWS rows: a loss over two rows is noise
  that would stop (and roll back) a run before its facts are learned.

A value the user gave (max_steps, epochs, eval_split, eval_steps, early_stopping) always wins. `plan_training` is
pure; `plan_for_files` loads the files the way training does (for the Train tab, before Start); `apply_plan` turns a
plan into the resolved RunConfig that the run folder keeps, so the run can be repeated exactly.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from ftchat import models
from ftchat.config import RunConfig
from ftchat.data import load_dataset
from ftchat.data.tokens import row_tokens
from ftchat.prompts import GENERAL_PROMPTS

# 60: on the bundled model 21 steps on 25 rows taught 0 of 3 facts, 36-42 on 50 rows taught 6 (bench/learning.py).
MIN_STEPS = 60
CONTENT_SHAPES = ("messages", "prompt_completion", "text")  # MIN_STEPS is for learning content
# DPO and KTO: at least 48 updates, at most 12 passes. 32 voted pairs at 3 passes (24 steps) moved 4 of 10 unseen
# answers to the voted style, 48 steps all 10; more passes did not help 64 noisy votes (0 of 10 at 3.7 passes and at
# 6) (bench/round_learning.py, docs/benchmarks.md).
PREFERENCE_METHODS = ("dpo", "kto")
PREFERENCE_MIN_STEPS = 48
PREFERENCE_MAX_EPOCHS = 12.0
FLOOR_EPOCHS = 3.0
MAX_EPOCHS = 30.0
MAX_STEPS = 300  # past this, a plan stops adding passes (one pass still covers every row)
EVAL_MIN_ROWS = 20
EVAL_FRACTION = 0.1
EVAL_MAX_ROWS = 40  # an eval loss over 40 rows is steady enough; more only costs time
EARLY_STOP_MIN_ROWS = 20
EARLY_STOP_PATIENCE = 3
EVALS_PER_RUN = 6
# Training throughput (tokens/s, evals included) when this machine has not measured one for the base yet.
DEFAULT_TOKENS_PER_S = {"cpu": 150.0, "cuda": 4000.0}
STARTUP_S = {"cpu": 20.0, "cuda": 30.0}  # loading the model and the data, before the first step
SPEEDS_KEPT = 32


@dataclass(frozen=True)
class TrainingPlan:
    """What a run will do, resolved from its data and config. `chosen` names what the plan picked (not the user)."""

    examples: int  # usable rows in the files
    mean_tokens: float
    eval_examples: int
    replay_examples: int
    train_examples: int  # examples - eval_examples + replay_examples
    batch_size: int  # per optimizer update: batch_size * grad_accum
    steps_per_epoch: int
    steps: int
    epochs: float
    lr: float
    warmup_steps: int
    eval_steps: int
    early_stopping: int  # patience in evals; 0: off
    tokens_per_s: float
    est_seconds: float  # training, plus loading the model
    chosen: tuple[str, ...] = ()
    bf16_matmuls: bool = False  # models.autocast_bf16: said in the plan line, so a slower machine's plan explains itself

    def describe(self) -> str:
        """One line for the Train tab and the log, e.g. "≈ 60 steps (12 epochs of 25 rows), ~2 min on this machine"."""
        rows = f"{self.train_examples} rows" + (f" + {self.eval_examples} for eval" if self.eval_examples else "")
        minutes = self.est_seconds / 60
        took = f"~{minutes:.0f} min" if minutes >= 1.5 else f"~{max(1, round(self.est_seconds / 10) * 10):.0f} s"
        approx = "≈ " if "steps" in self.chosen else ""
        matmuls = ", bf16 matmuls" if self.bf16_matmuls else ""
        return f"{approx}{self.steps} steps ({self.epochs:.3g} epochs of {rows}), {took} on this machine{matmuls}"

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["chosen"] = list(self.chosen)
        values["describe"] = self.describe()
        return values


def _given(value) -> bool:
    return value is not None and value > 0


def eval_rows(n_examples: int, eval_split: float | None, method: str = "sft") -> int:
    """Rows held out for the eval loss: the user's fraction (at least 1, none below 4 rows), or the plan's.
    A reward model always keeps some pairs back (from 4 rows on): its held-out accuracy is the result it reports."""
    if eval_split is None and method == "reward":
        eval_split = EVAL_FRACTION
    if eval_split is not None:
        return max(1, round(n_examples * eval_split)) if eval_split > 0 and n_examples >= 4 else 0
    if n_examples < EVAL_MIN_ROWS:
        return 0
    return min(EVAL_MAX_ROWS, max(2, round(n_examples * EVAL_FRACTION)))


def replay_rows(n_train: int, config: RunConfig, shape: str) -> int:
    """Replay rows mixed into SFT on conversations (ftchat.train.replay; at most one per general prompt)."""
    if config.replay <= 0 or shape != "messages" or config.method != "sft":
        return 0
    return min(len(GENERAL_PROMPTS), max(1, round(config.replay * n_train)))


def plan_training(n_examples: int, mean_tokens: float, config: RunConfig, shape: str = "messages",
                  tokens_per_s: float | None = None) -> TrainingPlan:
    """The plan for `n_examples` usable rows of `mean_tokens` tokens each; values set in `config` win."""
    chosen = []
    n_eval = eval_rows(n_examples, config.eval_split, config.method)
    if config.eval_split is None:
        chosen.append("eval_split")
    n_user = n_examples - n_eval
    n_replay = replay_rows(n_user, config, shape)
    n_train = max(1, n_user + n_replay)
    per_update = config.batch_size * config.grad_accum
    per_epoch = max(1, math.ceil(n_train / per_update))
    if _given(config.max_steps):
        steps = config.max_steps
    elif _given(config.epochs):
        steps = max(1, math.ceil(config.epochs * per_epoch))
    else:
        chosen.append("steps")
        preference = config.method in PREFERENCE_METHODS
        floor = MIN_STEPS if shape in CONTENT_SHAPES else PREFERENCE_MIN_STEPS if preference else 1
        most = PREFERENCE_MAX_EPOCHS if preference else MAX_EPOCHS
        steps = max(floor, math.ceil(FLOOR_EPOCHS * per_epoch))
        steps = min(steps, math.ceil(most * per_epoch))
        steps = min(steps, max(MAX_STEPS, per_epoch))
    if config.eval_steps is not None:
        eval_steps = config.eval_steps
    else:
        chosen.append("eval_steps")
        eval_steps = max(5, math.ceil(steps / EVALS_PER_RUN))
    if config.early_stopping is not None:
        patience = config.early_stopping
    else:
        chosen.append("early_stopping")
        patience = EARLY_STOP_PATIENCE if n_eval >= EARLY_STOP_MIN_ROWS else 0
    if tokens_per_s is None:
        tokens_per_s = measured_speed(config)
    train_tokens = steps * per_update * mean_tokens
    est = STARTUP_S[_device()] + train_tokens / tokens_per_s
    return TrainingPlan(
        examples=n_examples, mean_tokens=round(mean_tokens, 1), eval_examples=n_eval, replay_examples=n_replay,
        train_examples=n_train, batch_size=per_update, steps_per_epoch=per_epoch, steps=steps,
        epochs=round(steps / per_epoch, 2), lr=config.learning_rate,
        warmup_steps=math.ceil(config.warmup_ratio * steps) if config.warmup_ratio < 1 else int(config.warmup_ratio),
        eval_steps=eval_steps, early_stopping=patience if n_eval else 0, tokens_per_s=round(tokens_per_s, 1),
        est_seconds=round(est, 1), chosen=tuple(chosen), bf16_matmuls=models.autocast_bf16(config.precision),
    )


def apply_plan(plan: TrainingPlan, config: RunConfig) -> RunConfig:
    """The config with every planned value written in: what config.yaml keeps, so a rerun trains the same way."""
    return dataclasses.replace(
        config, max_steps=plan.steps, epochs=plan.epochs,
        eval_split=plan.eval_examples / plan.examples if plan.eval_examples else 0.0,
        eval_steps=plan.eval_steps, early_stopping=plan.early_stopping,
    )


def mean_tokens(dataset, shape: str, tokenizer, sample: int = 64) -> float:
    """Mean tokens per row over up to `sample` evenly spaced rows: it only feeds the time estimate."""

    k = min(sample, len(dataset))
    picked = sorted({round(i * (len(dataset) - 1) / max(1, k - 1)) for i in range(k)})
    lengths = [row_tokens(dataset[i], shape, tokenizer) for i in picked]
    return sum(lengths) / len(lengths) if lengths else 0.0


def plan_for_files(paths: list[str], config: RunConfig) -> TrainingPlan:
    """The plan training would make for these files: loads and normalizes them with the base's tokenizer and
    config.max_length, as training does (well under 2 s for 300 rows once the tokenizer is loaded).
    Raises ftchat.data.DataError for unusable files."""

    tokenizer = tokenizer_for(config.base)
    dataset, shape, _ = load_dataset(paths, tokenizer=tokenizer, max_tokens=config.max_length,
                                     chunk_tokens=config.chunk_tokens)
    return plan_training(len(dataset), mean_tokens(dataset, shape, tokenizer), config, shape)


_TOKENIZERS: dict = {}


def tokenizer_for(base: str):
    """The base's tokenizer, loaded once per process (the Train tab can call this early to warm it)."""
    if base not in _TOKENIZERS:
        _TOKENIZERS[base] = models.load_tokenizer(base)
    return _TOKENIZERS[base]


def _device() -> str:
    return models.device()


def _speed_key(config: RunConfig) -> str:
    return f"{config.base}|{config.adapter}|{config.precision}|{_device()}"


def _speed_file():
    return models.cache_dir() / "speed.json"


def measured_speed(config: RunConfig) -> float:
    """Tokens/s the last finished run of this base and technique reached on this machine, or a default."""
    try:
        return float(json.loads(_speed_file().read_text())[_speed_key(config)])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_TOKENS_PER_S[_device()]


def record_speed(config: RunConfig, tokens_per_s: float) -> None:
    """Remember a finished run's throughput for the next plan's time estimate."""
    path = _speed_file()
    try:
        speeds = json.loads(path.read_text())
    except (OSError, ValueError):
        speeds = {}
    key = _speed_key(config)
    speeds.pop(key, None)
    speeds[key] = round(tokens_per_s, 1)
    speeds = dict(list(speeds.items())[-SPEEDS_KEPT:])  # the newest: test runs on throwaway bases come and go
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(speeds, indent=1))
    tmp.replace(path)
