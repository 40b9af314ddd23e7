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
    # False where training runs no-grad passes of the model it trains (generation in GRPO / RLOO, the reward model's
    # mid-run evaluation): on a CPU such a pass repacks bitsandbytes' 4-bit weights and the LoRA gradients after it
    # are wrong (measured: the loss of the same weights changes and the LoRA gradient norm falls ~9x). On a CPU these
    # methods train `lora` (fp32) when `qlora` is asked for; see ftchat.train.run.prepare_run.
    qlora_on_cpu: bool = True
    # The default learning rate is the technique's SFT rate (per base, see ftchat.models) times this: plain DPO at
    # the SFT rate lost 19 of 20 held-out votes to its parent after 15 voted pairs (docs/benchmarks.md).
    lr_scale: float = 1.0

    def trainer_module(self):
        return importlib.import_module(self.module)


_PREFERENCE_ADAPTERS = ("qlora", "lora", "full", "layers")
_REWARD_ADAPTERS = ("qlora", "lora")  # a plain PEFT adapter plus the score head
_RL_ADAPTERS = ("qlora", "lora")
PREFERENCE_LR_SCALE = 0.1
RL_LR_SCALE = 0.1

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("sft", "SFT (supervised)", ("messages", "prompt_completion", "text"), "policy", "ftchat.train.sft"),
    Method("dpo", "DPO (preference pairs)", ("preference",), "policy", "ftchat.train.dpo", _PREFERENCE_ADAPTERS,
           lr_scale=PREFERENCE_LR_SCALE),
    Method("kto", "KTO (good / bad labels)", ("unpaired_preference",), "policy", "ftchat.train.kto",
           _PREFERENCE_ADAPTERS, lr_scale=PREFERENCE_LR_SCALE),
    Method("reward", "Reward model (preference pairs)", ("preference",), "reward", "ftchat.train.reward",
           _REWARD_ADAPTERS, qlora_on_cpu=False),
    Method("grpo", "GRPO (prompts + reward)", ("prompt_only",), "policy", "ftchat.train.grpo", _RL_ADAPTERS,
           qlora_on_cpu=False, lr_scale=RL_LR_SCALE),
    Method("rloo", "RLOO (prompts + reward)", ("prompt_only",), "policy", "ftchat.train.rloo", _RL_ADAPTERS,
           qlora_on_cpu=False, lr_scale=RL_LR_SCALE),
]}


def get(name: str) -> Method:
    return METHODS[name]


def names() -> tuple[str, ...]:
    return tuple(METHODS)


def policy_methods() -> tuple[str, ...]:
    """Methods whose runs are chat models (the others, e.g. reward, are scorers and never chat)."""
    return tuple(m.name for m in METHODS.values() if m.produces == "policy")


def methods_for_shapes(shapes) -> list[str]:
    """The methods that can train on every one of the given shapes (None means an unusable file: no method)."""
    shapes = list(shapes)
    return [m.name for m in METHODS.values() if all(s in m.shapes for s in shapes)]
