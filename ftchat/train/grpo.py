"""Group Relative Policy Optimization on prompts: the policy answers each prompt `num_generations` times, the
rewards (reward-model runs and/or rules, see ftchat.train.rewards) score every answer, and each answer is pushed up or
down by how far its reward is above or below its group's mean. A KL term (`beta`) holds the policy near its
reference: with a parent adapter TRL keeps a frozen copy of it ("ref"), with a fresh adapter the base itself.

Sized for a CPU: few, short generations (generation dominates a step); no evaluation during training.
"""
from __future__ import annotations

from transformers import EarlyStoppingCallback
from trl import GRPOConfig, GRPOTrainer

from ftchat.config import RunConfig
from ftchat.train import rewards
from ftchat.train.common import trainer_arguments


def rl_arguments(config: RunConfig) -> dict:
    """The arguments GRPOConfig and RLOOConfig share."""
    arguments = trainer_arguments(config, has_eval=False)
    del arguments["max_length"]  # the prompt goes in whole; the answer is capped by max_completion_length
    return dict(
        arguments,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        beta=config.beta,
        reward_weights=list(config.reward_weights) or None,
        remove_unused_columns=False,
        shuffle_dataset=True,
    )


def training_callbacks(callbacks: list) -> list:
    return [c for c in callbacks if not isinstance(c, EarlyStoppingCallback)]  # no evaluation, nothing to stop on


def build_trainer(config: RunConfig, model, peft_config, tokenizer, train_ds, eval_ds, callbacks) -> GRPOTrainer:
    return GRPOTrainer(
        model=model,
        reward_funcs=rewards.reward_functions(config.reward),
        args=GRPOConfig(**rl_arguments(config)),
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=training_callbacks(callbacks),
    )


def summarize(trainer, eval_ds) -> dict:
    return reward_summary(trainer.state.log_history)


def reward_summary(log_history: list[dict], window: int = 3) -> dict:
    """Mean reward over the first and the last `window` logged steps, and the last KL."""
    rewards_logged = [h["reward"] for h in log_history if "reward" in h]
    kls = [h["kl"] for h in log_history if "kl" in h]
    if not rewards_logged:
        return {"first_reward": None, "final_reward": None, "final_kl": None}
    k = max(1, min(window, len(rewards_logged) // 2))
    return {"first_reward": sum(rewards_logged[:k]) / k, "final_reward": sum(rewards_logged[-k:]) / k,
            "final_kl": kls[-1] if kls else None}
