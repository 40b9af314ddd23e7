"""The one registry of training methods: name, label, the data shapes each trains on, what a run produces.

The config, the trainer dispatch, the Data tab and the Train tab all read this; a new method is one file under
ftchat/train/ and one entry here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # what the Train tab's picker shows
    shapes: tuple[str, ...]  # data shapes (ftchat.data.shapes) the method trains on
    produces: str  # "policy": a chat model (adapter or whole model); "reward": a reward model that scores replies
    module: str  # the module under ftchat.train with build_trainer(config, model, peft_config, tokenizer, ...)
    adapters: tuple[str, ...] = ("qlora", "lora", "full", "layers", "prompt")  # techniques it can train with

    def trainer_module(self):
        return importlib.import_module(self.module)


_PREFERENCE_ADAPTERS = ("qlora", "lora", "full", "layers")

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("sft", "SFT (supervised)", ("messages", "prompt_completion", "text"), "policy", "ftchat.train.sft"),
    Method("dpo", "DPO (preference pairs)", ("preference",), "policy", "ftchat.train.dpo", _PREFERENCE_ADAPTERS),
    Method("kto", "KTO (good / bad labels)", ("unpaired_preference",), "policy", "ftchat.train.kto",
           _PREFERENCE_ADAPTERS),
]}


def get(name: str) -> Method:
    return METHODS[name]


def names() -> tuple[str, ...]:
    return tuple(METHODS)


def methods_for_shapes(shapes) -> list[str]:
    """The methods that can train on every one of the given shapes (None means an unusable file: no method)."""
    shapes = list(shapes)
    return [m.name for m in METHODS.values() if all(s in m.shapes for s in shapes)]
