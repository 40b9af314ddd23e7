"""A reward model from preference pairs: the base with a one-output score head, LoRA, TRL's RewardTrainer.

The loss pushes the score of the chosen reply above the rejected one's (Bradley-Terry). Evaluation runs one pair per
batch, so the logged `eval_accuracy` is exactly the fraction of held-out pairs ranked right and `eval_margin` the
mean score gap. The run folder's adapter/ is a plain PEFT adapter (task SEQ_CLS) that holds the score head too; load
it with ftchat.train.reward_model.
"""
from __future__ import annotations

from trl import RewardConfig, RewardTrainer

from ftchat.config import RunConfig
from ftchat.train.common import trainer_arguments


def build_trainer(config: RunConfig, model, peft_config, tokenizer, train_ds, eval_ds, callbacks) -> RewardTrainer:
    arguments = trainer_arguments(config, has_eval=eval_ds is not None)
    arguments["per_device_eval_batch_size"] = 1  # per-batch means of one pair: the logged accuracy is exact
    model.config.pad_token_id = tokenizer.pad_token_id  # the head scores the last token that is not padding
    return RewardTrainer(
        model=model,
        args=RewardConfig(**arguments),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def summarize(trainer: RewardTrainer, eval_ds) -> dict:
    """Pairwise accuracy and mean margin of the final model on the held-out pairs (logged to metrics.jsonl too)."""
    if eval_ds is None:
        return {"eval_accuracy": None, "eval_margin": None}
    metrics = trainer.evaluate()
    return {"eval_accuracy": metrics.get("eval_accuracy"), "eval_margin": metrics.get("eval_margin"),
            "eval_pairs": len(eval_ds)}
