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
    method: str = "sft"  # a name in ftchat.methods.METHODS: sft | dpo | kto
    adapter: str = "qlora"  # qlora | lora | full | layers | prompt
    parent: str | None = None  # a finished run to continue from (its adapter is the starting point)

    # None (or 0): ftchat.budget plans them from the number and length of the examples; a value given here wins.
    # The run folder's config.yaml holds the planned values, so a rerun trains the same way.
    max_steps: int | None = None  # optimizer steps; overrides epochs
    epochs: float | None = None
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
    beta: float = 0.1  # dpo / kto strength of the pull towards the reference model

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
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}.")
        for name in ("max_steps", "epochs", "early_stopping"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be 0 or more (0 or empty: planned from the data), "
                                  f"got {getattr(self, name)}.")
        if self.eval_split is not None and not 0 <= self.eval_split < 1:
            raise ConfigError(f"eval_split: must be in [0, 1), got {self.eval_split}.")
        if self.learning_rate <= 0:
            raise ConfigError(f"lr: must be positive, got {self.lr}.")
        method = methods.get(self.method)
        if self.adapter not in method.adapters:
            raise ConfigError(f"adapter: {self.method} trains with {', '.join(method.adapters)}, not '{self.adapter}'.")
        for path in self.data:
            if not Path(path).is_file():
                raise ConfigError(f"data: {path} does not exist.")
        return self

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
        if isinstance(values.get("data"), str):
            values["data"] = [values["data"]]
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


PLANNED = ("max_steps", "epochs", "eval_split", "eval_steps", "early_stopping")  # see ftchat.budget


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
