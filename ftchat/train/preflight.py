"""What can be known to fail before a run starts: the config's values, the base model, the parent run, the
scheduler, the LoRA target modules, the layer count and the data shapes - all reported at once.

The Train tab calls `check` before it launches a trainer, and `ftchat train` calls it before it writes a run
folder, so a typo costs a second instead of a failed run 10 s later. The base's modules are read by building the
model on the meta device: no weights are loaded.
"""
from __future__ import annotations

from pathlib import Path

from ftchat import methods, models, runs
from ftchat.config import ConfigError, RunConfig
from ftchat.train import rewards


def check(config: RunConfig, shapes: dict[str, str | None] | None = None) -> RunConfig:
    """The config, if `preflight` finds nothing; else one ConfigError listing every problem."""
    problems = preflight(config, shapes)
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          "These settings cannot train:\n- " + "\n- ".join(problems))
    return config


def preflight(config: RunConfig, shapes: dict[str, str | None] | None = None, check_base: bool = True) -> list[str]:
    """Every problem with the config that shows without training (empty: none found).

    `shapes` maps each data file to its detected shape (None: unusable), as the app's data reports know them;
    without it the data are not read here (training reads them first thing and names any bad row). With
    `check_base` False the base is not opened (the caller has refused it already)."""
    problems = config.problems() + reward_problems(config)
    if not check_base:
        return problems + scheduler_problems(config.scheduler)
    base = config.base
    if config.parent:
        problems += parent_problems(config.parent)
        parent = runs.load_run(config.parent)
        base = parent.config.get("base") or base
    base_path = None
    try:
        base_path = local_base(base)
    except models.ModelError as exc:
        problems.append(f"base: {exc}")
    problems += scheduler_problems(config.scheduler)
    if base_path is not None:
        problems += model_problems(config, base_path)
    if shapes is not None:
        problems += shape_problems(config, shapes)
    return problems


def reward_problems(config: RunConfig) -> list[str]:
    """Each reward of a grpo / rloo run that is neither a known rule nor a finished reward-model run."""
    if methods.METHODS.get(config.method) is None or methods.get(config.method).shapes != ("prompt_only",):
        return []
    return [f"reward: {problem}." for problem in map(rewards.spec_problem, config.reward) if problem]


def local_base(base: str) -> Path | None:
    """The base's local folder (a ModelError if there is none to be had); None for a hub id not downloaded yet,
    which training fetches first thing - a check must not start a download of gigabytes."""
    name = str(base)
    if Path(name).expanduser().is_dir() or models.spec_for(name) or "/" not in name or name.startswith((".", "/", "~")):
        return models.resolve_base(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not in the cache (or no hub library): nothing to check yet
        return None


def parent_problems(parent: str) -> list[str]:
    run = runs.load_run(parent)
    if not Path(parent).is_dir() or run.state != "done":
        return [f"parent: {parent} is not a finished run (state: {run.state}); pick a run whose state is done."]
    try:
        models.require_safetensors(runs.weights_dir(parent))
    except models.ModelError as exc:
        return [f"parent: {exc}"]
    return []


def scheduler_problems(name) -> list[str]:
    from transformers.trainer_utils import SchedulerType

    known = [s.value for s in SchedulerType]
    if isinstance(name, str) and name in known:
        return []
    return [f"scheduler: '{name}' is not a learning-rate scheduler transformers knows; use one of {', '.join(known)}."]


def model_problems(config: RunConfig, base_path: Path) -> list[str]:
    """LoRA targets that the base lacks (or that are not layers), more layers asked for than it has."""
    problems = []
    if config.adapter in ("full", "layers") and config.precision in ("4bit", "8bit"):
        problems.append(f"precision: {config.adapter} training changes the weights themselves, which cannot be "
                        f"{config.precision}; use auto, bf16 or fp32 (or the qlora technique).")
    wants_targets = config.adapter in ("qlora", "lora") and not config.parent and isinstance(config.lora_targets, str) \
        and config.lora_targets.strip() != "all-linear"
    if not wants_targets and config.adapter != "layers":
        return problems
    try:
        model = meta_model(base_path)
    except Exception as exc:  # an unknown architecture: training would fail the same way
        return problems + [f"base: {base_path} cannot be built by transformers ({type(exc).__name__}: {exc})."]
    if wants_targets:
        problems += target_problems(model, [t.strip() for t in config.lora_targets.split(",") if t.strip()])
    if config.adapter == "layers":
        blocks = getattr(getattr(model, "model", None), "layers", None)
        if blocks is None:
            problems.append(f"adapter: layer-wise training needs a model with model.layers; {base_path} has none.")
        elif isinstance(config.train_layers, int) and config.train_layers > len(blocks):
            problems.append(f"train_layers: the base has {len(blocks)} layers, asked to train {config.train_layers}.")
    return problems


def meta_model(base_path: Path):
    """The base's module tree without its weights (built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.from_pretrained(base_path, trust_remote_code=False)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config, trust_remote_code=False)


def target_problems(model, targets: list[str]) -> list[str]:
    """peft matches a target by a module's full name or its last dotted parts; it can wrap layers only."""
    import torch
    from transformers.pytorch_utils import Conv1D

    layers = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, Conv1D)
    modules = list(model.named_modules())
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in modules if isinstance(module, torch.nn.Linear)})
    missing, containers = [], []
    for target in targets:
        matched = [module for name, module in modules if name == target or name.endswith("." + target)]
        if not matched:
            missing.append(target)
        elif not any(isinstance(module, layers) for module in matched):
            containers.append(target)
    problems = []
    hint = f"its linear layers are {', '.join(linear)}; or use all-linear."
    if missing:
        problems.append(f"lora_targets: the base has no module named {', '.join(missing)}; {hint}")
    if containers:
        problems.append(f"lora_targets: {', '.join(containers)} are groups of layers, not layers LoRA can wrap; "
                        f"{hint}")
    return problems


def shape_problems(config: RunConfig, shapes: dict[str, str | None]) -> list[str]:
    if config.method not in methods.METHODS:
        return []  # already reported by RunConfig.problems
    unusable = [Path(path).name for path, shape in shapes.items() if shape is None]
    if unusable:
        return [f"data: {', '.join(unusable)} cannot be used for training (see its report in the Data tab)."]
    found = {"messages" if s == "prompt_completion" else s for s in shapes.values()}
    if len(found) > 1:
        return [f"data: the files have different shapes ({', '.join(sorted(found))}); train each shape in its own run."]
    method = methods.get(config.method)
    wrong = [s for s in shapes.values() if s not in method.shapes]
    if wrong:
        fitting = methods.methods_for_shapes(shapes.values())
        return [f"method: {config.method} trains on {' or '.join(method.shapes)} data, not {wrong[0]}; "
                f"pick {' or '.join(fitting) if fitting else 'other data'}."]
    return []
