"""RunConfig: the one description of a training run, shared by the CLI flags, YAML files, the UI and launchers.

A run folder keeps the resolved config (data hashes, base, every default filled in) so any run can be repeated.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ftchat import methods, models

ADAPTERS = ("qlora", "lora", "full", "layers", "prompt")
# Learning rates that work for each technique on small data; a user value always wins.
DEFAULT_LR = {"qlora": 2e-4, "lora": 2e-4, "full": 2e-5, "layers": 5e-5, "prompt": 3e-2}


MIN_LR, MAX_LR = 1e-12, 1.0  # above 1 every technique diverges at once; below 1e-12 nothing moves
# field: (lowest, highest, whole number) - values outside are typos or would break the run later, never a choice.
RANGES = {
    "max_steps": (0, 10_000_000, True),
    "epochs": (0, 10_000, False),
    "batch_size": (1, 65_536, True),
    "grad_accum": (1, 65_536, True),
    "max_length": (1, 1_048_576, True),
    "weight_decay": (0, 10, False),
    "warmup_ratio": (0, 1, False),
    "seed": (0, 2**32 - 1, True),
    "lora_r": (1, 65_536, True),
    "lora_alpha": (1e-6, 1e6, False),
    "lora_dropout": (0, 0.99, False),
    "train_layers": (1, 10_000, True),
    "prompt_tokens": (1, 65_536, True),
    "beta": (1e-6, 1e3, False),
    "sft_weight": (0, 100, False),
    "label_noise": (0, 0.49, False),
    "eval_split": (0, 0.99, False),
    "eval_steps": (1, 10_000_000, True),
    "early_stopping": (0, 1_000_000, True),
    "replay": (0, 100, False),
    "chunk_tokens": (16, 1_048_576, True),
    "logging_steps": (1, 10_000_000, True),
    "compare_prompts": (0, 1000, True),
}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _range_problem(name: str, value, low, high, whole: bool) -> str | None:
    """What is wrong with a numeric field's value, with the range that would fix it; None if it is fine."""
    span = f"between {low:g} and {high:g}"
    if not _is_number(value):
        return f"{name}: must be a {'whole ' if whole else ''}number {span}, got {value!r}."
    if not math.isfinite(value):
        return f"{name}: must be a finite number {span}, got {value}."
    if whole and value != int(value):
        return f"{name}: must be a whole number {span}, got {value}."
    if not low <= value <= high:
        return f"{name}: must be {span}, got {value:g}."
    return None


class ConfigError(ValueError):
    """A run config value is invalid; the message names the field."""


@dataclass
class RunConfig:
    data: list[str] = field(default_factory=list)  # training files (any format ftchat.data reads)
    out: str = ""  # the run folder, e.g. runs/my-run
    base: str = "smollm2-135m"  # registry name, local model folder or hub id
    method: str = "sft"  # a name in ftchat.methods.METHODS: sft | dpo | kto | reward | grpo | rloo
    adapter: str = "qlora"  # qlora | lora | full | layers | prompt
    parent: str | None = None  # a finished run to continue from (its adapter is the starting point)

    # None (or 0): ftchat.train.plan plans them from the number and length of the examples; a value given here wins.
    # The run folder's config.yaml holds the planned values, so a rerun trains the same way.
    max_steps: int | None = None  # optimizer steps; overrides epochs
    epochs: float | None = None
    lr: float | None = None  # None: DEFAULT_LR for the adapter (or the base's LoRA rate) × the method's lr_scale
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 2048  # tokens per example; longer rows are skipped (and listed), never truncated
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "cosine"
    seed: int = 42
    precision: str = "auto"  # auto (see train.common.precision_for) | 4bit | 8bit | bf16 | fp32

    lora_r: int = 16
    lora_alpha: int = 32
    # 0: on a CPU the dropout masks' random numbers took 13-17% of an SFT step (bench/profile_step.py), and 25 rows of
    # new facts were learned as well without them (docs/benchmarks.md, SFT speed)
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"  # or a comma list, e.g. q_proj,v_proj
    train_layers: int = 2  # layers: train only the last N transformer blocks
    prompt_tokens: int = 16  # prompt: number of virtual tokens
    beta: float = 0.1  # dpo / kto / grpo / rloo: strength of the pull towards the reference model (KL for grpo/rloo)
    # dpo: weight of an SFT term (the chosen reply's negative log-likelihood; TRL's loss_type "sft", as in RPO) added
    # to the preference loss; 0: plain DPO
    sft_weight: float = 0.0
    # dpo: the share of votes taken to be reversed by mistake; above 0 the preference loss is TRL's robust DPO
    # (label_smoothing), which stops pushing on pairs that contradict the rest; 0: sigmoid DPO
    label_noise: float = 0.0

    # grpo / rloo: the model answers each prompt num_generations times and the rewards score the answers
    reward: list[str] = field(default_factory=list)  # reward-model run folders and/or rules (rule:NAME, ftchat.train.rewards)
    reward_weights: list[float] = field(default_factory=list)  # one per reward; empty: all 1.0
    num_generations: int = 4  # answers per prompt; batch_size * grad_accum must be a multiple of it
    max_completion_length: int = 48  # new tokens per answer (generation dominates a step on a CPU)

    eval_split: float | None = None  # fraction held out for eval loss (at least 1 example, 0 disables); None: planned
    eval_steps: int | None = None  # None: planned (about 6 evals a run)
    early_stopping: int | None = None  # stop after N evals without improvement (0 disables); None: planned
    replay: float = 0.2  # replay examples (the base's own answers to general prompts) per training example
    chunk_tokens: int = 512  # documents are cut into chunks of this many tokens
    logging_steps: int = 1
    compare_prompts: int = 3  # after training, answer N held-out and N general prompts with base and tuned
    gradient_checkpointing: bool = False  # saves memory on big models; on small ones it only costs time

    data_hashes: dict[str, str] = field(default_factory=dict)  # filled in when resolved

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        spec = models.spec_for(self.base)
        if self.adapter in ("qlora", "lora") and spec and spec.lora_lr:
            rate = spec.lora_lr
        else:
            rate = DEFAULT_LR.get(self.adapter, DEFAULT_LR["lora"])
        method = methods.METHODS.get(self.method)
        return rate * (method.lr_scale if method else 1.0)

    def validate(self) -> "RunConfig":
        """Check every field; raise one ConfigError that lists each problem (field: what is wrong, what to do)."""
        problems = self.problems()
        if problems:
            raise ConfigError(("These settings cannot train:\n- " + "\n- ".join(problems)) if len(problems) > 1
                              else problems[0])
        return self

    def problems(self) -> list[str]:
        """Everything wrong with the values on their own (no files or models are opened besides the data paths;
        train.preflight checks what needs them)."""
        problems = []
        if not self.data:
            problems.append("data: give at least one training file.")
        if not self.out:
            problems.append("out: give the run folder, e.g. runs/my-run.")
        if self.method not in methods.METHODS:
            problems.append(f"method: '{self.method}' is not one of {', '.join(methods.names())}.")
        if self.adapter not in ADAPTERS:
            problems.append(f"adapter: '{self.adapter}' is not one of {', '.join(ADAPTERS)}.")
        elif self.method in methods.METHODS and self.adapter not in methods.get(self.method).adapters:
            problems.append(f"adapter: {self.method} trains with {', '.join(methods.get(self.method).adapters)}, "
                            f"not '{self.adapter}'.")
        if self.precision not in models.PRECISIONS:
            problems.append(f"precision: '{self.precision}' is not one of {', '.join(models.PRECISIONS)}.")
        for name, (low, high, whole) in RANGES.items():
            if getattr(self, name) is None and name in PLANNED:
                continue  # planned from the data by ftchat.train.plan
            problem = _range_problem(name, getattr(self, name), low, high, whole)
            if problem:
                problems.append(problem)
        if _is_number(self.lr) is False and self.lr is not None:
            problems.append(f"lr: must be a number, got {self.lr!r}.")
        elif self.lr is not None:
            problems.append(_range_problem("lr", self.lr, MIN_LR, MAX_LR, False) or "")
        if not isinstance(self.scheduler, str) or not self.scheduler.strip():
            problems.append("scheduler: give a learning-rate scheduler name, e.g. cosine or linear.")
        if not isinstance(self.lora_targets, str) or not self.lora_targets.strip():
            problems.append("lora_targets: give all-linear or a comma list of module names, e.g. q_proj,v_proj.")
        for path in self.data if isinstance(self.data, list) else []:
            if not Path(path).is_file():
                problems.append(f"data: {path} does not exist.")
        method = methods.METHODS.get(self.method)
        if method is not None and method.shapes == ("prompt_only",):
            problems += self._rl_problems()
        elif self.reward:
            problems.append(f"reward: only grpo and rloo train against a reward, not {self.method}.")
        return [p for p in problems if p]

    def _rl_problems(self) -> list[str]:
        """Every problem with the reward settings of a grpo / rloo run that the values show on their own (whether
        each reward names a known rule or a finished reward model is train.preflight's: it opens run folders)."""
        problems = []
        if not self.reward:
            problems.append(f"reward: {self.method} needs at least one reward: a reward-model run folder "
                            f"(--method reward) or a rule (rule:NAME)")
        if self.reward_weights and len(self.reward_weights) != len(self.reward):
            problems.append(f"reward_weights: give one weight per reward ({len(self.reward)}), "
                            f"got {len(self.reward_weights)}")
        if self.num_generations < 2:
            problems.append(f"num_generations: must be at least 2 (the answers to a prompt are compared with each "
                            f"other), got {self.num_generations}")
        elif (self.batch_size * self.grad_accum) % self.num_generations:
            problems.append(f"batch_size x grad_accum ({self.batch_size} x {self.grad_accum}) must be a multiple of "
                            f"num_generations ({self.num_generations}): each step holds whole groups of answers")
        if self.max_completion_length < 1:
            problems.append(f"max_completion_length: must be at least 1, got {self.max_completion_length}")
        return [p + "." for p in problems]

    def resolved(self) -> "RunConfig":
        """A copy with data hashes and the learning rate filled in, as written into the run folder."""
        copy = dataclasses.replace(self, lr=self.learning_rate)
        copy.data = [str(Path(p)) for p in self.data]
        copy.data_hashes = {p: file_sha256(p) for p in copy.data}
        return copy

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}.")
        values = dict(values)
        for key in ("data", "reward"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        if isinstance(values.get("reward_weights"), (int, float)):
            values["reward_weights"] = [values["reward_weights"]]
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc}).") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value.")
        return cls.from_dict(values, source=str(path))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field, so `ftchat train --flags` and a YAML file are the same thing."""
    defaults = RunConfig()
    for f in fields(RunConfig):
        if f.name in ("data_hashes",):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "data":
            parser.add_argument(flag, nargs="+", default=None, help="training file(s)")
        elif f.name == "reward":
            parser.add_argument(flag, nargs="+", default=None,
                                help="grpo/rloo: reward-model run folder(s) and/or rule:NAME (several are summed)")
        elif f.name == "reward_weights":
            parser.add_argument(flag, nargs="+", type=float, default=None, help="one weight per --reward")
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif f.name == "method":
            parser.add_argument(flag, choices=methods.names(), default=None)
        elif f.name == "adapter":
            parser.add_argument(flag, choices=ADAPTERS, default=None)
        else:
            kind = value_type(f.name)
            shown = default if default is not None else ("the technique's" if f.name == "lr" else
                                                         "planned from the data" if f.name in PLANNED else "none")
            parser.add_argument(flag, type=kind, default=None, help=f"default: {shown}")


PLANNED = ("max_steps", "epochs", "eval_split", "eval_steps", "early_stopping")  # see ftchat.train.plan


def value_type(name: str):
    """int, float or str: what a RunConfig field's value is when it is given (a form or a flag turns text into it).
    Planned fields default to None, so their type comes from the annotation ("int | None"), not the default."""
    annotation = {f.name: f.type for f in fields(RunConfig)}[name]
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "str")
    return {"int": int, "float": float, "bool": bool}.get(kind.split("|")[0].strip(), str)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """YAML (if given) first, then any flag the user typed on top of it."""
    config = RunConfig.load(args.config) if getattr(args, "config", None) else RunConfig()
    for f in fields(RunConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(config, f.name, value)
    return config
