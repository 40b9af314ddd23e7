"""From a form (the Train tab, an API client, a "next round" button) to a validated RunConfig in the workspace.

The tab only draws and wires; the rules live here: which files may train, which method fits their shape, how a
form value becomes a typed RunConfig field, and what the new run folder is called.
"""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from ftchat import methods
from ftchat.config import PLANNED, ConfigError, RunConfig, value_type
from ftchat.models import DEFAULT_BASE
from ftchat.train import preflight
from ftchat.train.plan import TrainingPlan, plan_for_files
from ftchat.workspace import Workspace


def unique_run_dir(runs_dir: Path, name: str | None, method: str, adapter: str) -> Path:
    """The run folder, made here: the user's name (made safe) or date-method-technique, with -2, -3… if taken.
    Making it claims the name, so two Starts at once with the same name never train into one folder."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", (name or "").strip()).strip("-.") or \
        f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-{adapter}"
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    candidate, n = stem, 2
    while True:
        try:
            (runs_dir / candidate).mkdir()
            return runs_dir / candidate
        except FileExistsError:
            candidate, n = f"{stem}-{n}", n + 1


def coerce_field(name: str, value):
    """A form value as the RunConfig field's type: numbers arrive as floats or strings from the browser."""
    kind = value_type(name)  # not the default's type: planned fields (max_steps, eval_split…) default to None
    if value is None or value == "":
        return None
    if kind is bool:
        return bool(value)
    if kind is int:
        number = float(value)
        if number != int(number):
            raise ConfigError(f"{name}: must be a whole number, got {value}.")
        return int(number)
    if kind is float:
        return float(value)
    return value


def form_values(data: list[str], method: str, **fields) -> tuple[dict, list[str]]:
    """RunConfig values from a form's fields, each as its field's type, and what is wrong with any of them."""
    problems = []
    values = {"data": [p for p in (data or []) if p], "method": method,
              "base": (fields.pop("base", None) or DEFAULT_BASE).strip()}
    known = {f.name for f in dataclasses.fields(RunConfig)} - {"data", "out", "parent", "data_hashes"}
    for key, value in fields.items():
        if key not in known:
            problems.append(f"{key}: not a training setting.")
            continue
        try:
            coerced = coerce_field(key, value)
        except (TypeError, ValueError) as exc:
            problems.append(f"{key}: {value!r} is not a valid value ({exc}).")
            continue
        if key in PLANNED and coerced == 0:
            coerced = None  # the browser sends an empty number box as 0: in the form, 0 means "planned"
        if coerced is not None:
            values[key] = coerced
    if values.get("lr") == 0:
        values["lr"] = None  # 0 in the form: the base's and technique's default
    return values, problems


def plan_for_form(data: list[str], method: str, **fields) -> TrainingPlan:
    """What Start would train with these form values: the steps the defaults resolve to, and about how long."""
    values, problems = form_values(data, method, **fields)
    if problems:
        raise ConfigError(" ".join(problems))
    config = RunConfig(**values, out="plan")
    return plan_for_files(config.data, config)


def config_from_form(workspace: Workspace, data: list[str], method: str, shapes: dict[str, str | None],
                     parent_run: str = "", name: str = "", **fields) -> RunConfig:
    """A validated RunConfig for a run in `workspace`. `shapes` maps each data file to its detected shape (None:
    unusable). Raises ConfigError naming every problem found."""
    values, problems = form_values(data, method, **fields)
    data = values["data"]
    outside = [p for p in data if not workspace.is_upload(p) or not Path(p).is_file()]
    if outside:
        problems.append(f"data: {', '.join(outside)} is not an upload in this workspace; upload it in the Data tab.")
    if not data:
        problems.append("data: pick the training data first (upload a file or use a sample in the Data tab).")
    unusable = [Path(p).name for p, shape in shapes.items() if shape is None]
    if unusable:
        problems.append(f"data: {', '.join(unusable)} cannot be used for training (see its report in the Data tab).")
    elif data and not outside:
        allowed = methods.methods_for_shapes(shapes.values())
        if method not in allowed:
            found = ", ".join(sorted({s for s in shapes.values() if s}))
            problems.append(f"method: {method.upper()} cannot train on {found} data; it allows "
                            f"{', '.join(m.upper() for m in allowed) or 'nothing: pick files of one shape'}.")
    if parent_run:
        parent_dir = workspace.run_dir(parent_run)
        if parent_dir is None:
            problems.append(f"parent: {parent_run} is not a run in this workspace.")
        else:
            values["parent"] = str(parent_dir)
    values["out"] = str(unique_run_dir(workspace.runs_dir, name, method, values.get("adapter", "qlora")))
    offered = workspace.offers_base(values["base"])
    if not offered:
        problems.append(f"base: {values['base']} is neither the bundled model, a folder in the workspace's models/, "
                        f"nor a hub id (org/name).")
    try:
        config = RunConfig(**values)
        # every number finite and in range, then what the base, scheduler and LoRA targets allow (shapes: checked
        # above)
        problems += preflight.preflight(config, check_base=offered)
        if problems:
            raise ConfigError(" ".join(problems))
    except BaseException:
        Path(values["out"]).rmdir()  # the name claimed above goes back: nothing was started
        raise
    return config
