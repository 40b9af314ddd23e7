"""REINFORCE Leave-One-Out on prompts: like GRPO, the policy answers each prompt `num_generations` times; each
answer's baseline is the mean reward of the other answers to the same prompt. Same rewards, same CPU sizing and the
same KL pull (`beta`) towards the reference as ftchat.train.grpo.
"""
from __future__ import annotations

from trl import RLOOConfig, RLOOTrainer

from ftchat.config import RunConfig
from ftchat.train import rewards
from ftchat.train.grpo import reward_summary, rl_arguments, training_callbacks


def build_trainer(config: RunConfig, model, peft_config, tokenizer, train_ds, eval_ds, callbacks) -> RLOOTrainer:
    return RLOOTrainer(
        model=model,
        reward_funcs=rewards.reward_functions(config.reward),
        args=RLOOConfig(**rl_arguments(config)),
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=training_callbacks(callbacks),
    )


def summarize(trainer, eval_ds) -> dict:
    return reward_summary(trainer.state.log_history)
