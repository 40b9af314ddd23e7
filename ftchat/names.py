"""How ftchat names a model, in ratings, pickers, the API and lineage: a base as `base:NAME`, a run by its folder
name (the chat's pickers pass the run folder's path). The one place that spells the prefix."""
from __future__ import annotations

from pathlib import Path

BASE_PREFIX = "base:"


def is_base(name: str) -> bool:
    return isinstance(name, str) and name.startswith(BASE_PREFIX)


def base_choice(base: str) -> str:
    """The name of a base model: base:NAME."""
    return BASE_PREFIX + str(base)


def base_of_choice(choice: str) -> str:
    """NAME of a base:NAME choice."""
    return choice[len(BASE_PREFIX):]


def model_name(choice: str) -> str:
    """The name a rating stores for a chat choice: a run by its folder name, a base as base:NAME."""
    if is_base(choice):
        return choice
    return Path(choice).name
