"""RunConfig: the one description of a training run, shared by the CLI flags, YAML files, the UI and launchers.

A run folder keeps the resolved config (data hashes, base, every default filled in) so any run can be repeated.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ftchat import methods

ADAPTERS = ("qlora", "lora", "full", "layers", "prompt")
# Learning rates that work for each technique on small data; a user value always wins.
DEFAULT_LR = {"qlora": 2e-4, "lora": 2e-4, "full": 2e-5, "layers": 5e-5, "prompt": 3e-2}


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

    max_steps: int = 0  # > 0 overrides epochs
    epochs: float = 3.0
    lr: float | None = None  # None: DEFAULT_LR for the adapter
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512  # tokens per example; longer rows are skipped, not truncated
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "cosine"
    seed: int = 42
    precision: str = "auto"  # auto (see train.common.precision_for) | 4bit | 8bit | bf16 | fp32

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"  # or a comma list, e.g. q_proj,v_proj
    train_layers: int = 2  # layers: train only the last N transformer blocks
    prompt_tokens: int = 16  # prompt: number of virtual tokens
    beta: float = 0.1  # dpo / kto / grpo / rloo: strength of the pull towards the reference model (KL for grpo/rloo)

    # grpo / rloo: the model answers each prompt num_generations times and the rewards score the answers
    reward: list[str] = field(default_factory=list)  # reward-model run folders and/or rules (rule:NAME, ftchat.rewards)
    reward_weights: list[float] = field(default_factory=list)  # one per reward; empty: all 1.0
    num_generations: int = 4  # answers per prompt; batch_size * grad_accum must be a multiple of it
    max_completion_length: int = 48  # new tokens per answer (generation dominates a step on a CPU)

    eval_split: float = 0.1  # fraction held out for eval loss (at least 1 example, 0 disables)
    eval_steps: int = 10
    early_stopping: int = 3  # stop after N evals without improvement (0 disables)
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
        from ftchat.models import spec_for

        spec = spec_for(self.base)
        if self.adapter in ("qlora", "lora") and spec and spec.lora_lr:
            return spec.lora_lr
        return DEFAULT_LR[self.adapter]

    def validate(self) -> "RunConfig":
        if not self.data:
            raise ConfigError("data: give at least one training file.")
        if not self.out:
            raise ConfigError("out: give the run folder, e.g. runs/my-run.")
        if self.method not in methods.METHODS:
            raise ConfigError(f"method: '{self.method}' is not one of {', '.join(methods.names())}.")
        if self.adapter not in ADAPTERS:
            raise ConfigError(f"adapter: '{self.adapter}' is not one of {', '.join(ADAPTERS)}.")
        for name in ("batch_size", "grad_accum", "max_length", "lora_r", "train_layers", "prompt_tokens", "eval_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}.")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError("max_steps / epochs: give max_steps > 0 or epochs > 0.")
        if not 0 <= self.eval_split < 1:
            raise ConfigError(f"eval_split: must be in [0, 1), got {self.eval_split}.")
        if self.learning_rate <= 0:
            raise ConfigError(f"lr: must be positive, got {self.lr}.")
        method = methods.get(self.method)
        if self.adapter not in method.adapters:
            raise ConfigError(f"adapter: {self.method} trains with {', '.join(method.adapters)}, not '{self.adapter}'.")
        for path in self.data:
            if not Path(path).is_file():
                raise ConfigError(f"data: {path} does not exist.")
        if method.shapes == ("prompt_only",):
            self._validate_rl()
        elif self.reward:
            raise ConfigError(f"reward: only grpo and rloo train against a reward, not {self.method}.")
        return self

    def _validate_rl(self) -> None:
        """Every problem with the reward settings of a grpo / rloo run, in one error."""
        from ftchat import rewards

        problems = []
        if not self.reward:
            problems.append(f"reward: {self.method} needs at least one reward: a reward-model run folder "
                            f"(--method reward) or a rule ({', '.join('rule:' + n for n in rewards.RULES)})")
        for spec in self.reward:
            problem = rewards.spec_problem(spec)
            if problem:
                problems.append(f"reward: {problem}")
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
        if problems:
            raise ConfigError("; ".join(problems) + ".")

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
            kind = type(default) if default is not None else (float if f.name == "lr" else str)
            parser.add_argument(flag, type=kind, default=None, help=f"default: {default}")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """YAML (if given) first, then any flag the user typed on top of it."""
    config = RunConfig.load(args.config) if getattr(args, "config", None) else RunConfig()
    for f in fields(RunConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(config, f.name, value)
    return config
