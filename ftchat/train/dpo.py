"""Direct Preference Optimization on prompt/chosen/rejected pairs.

The reference model is the model the run starts from, without a second copy of the base's weights (TRL does this
when given no ref_model): a new adapter's reference is the base with the adapter switched off; a run that continues
its parent's adapter (a feedback round, see ftchat.feedback.rounds) gets a frozen copy of that adapter, named "ref",
so the parent is the reference. A full or layer-wise parent is loaded again as the reference.
"""
from __future__ import annotations

from trl import DPOConfig, DPOTrainer

from ftchat.config import RunConfig
from ftchat.train.common import trainer_arguments


def build_trainer(config: RunConfig, model, peft_config, tokenizer, train_ds, eval_ds, callbacks) -> DPOTrainer:
    preference = "robust" if config.label_noise else "sigmoid"
    losses = {"loss_type": [preference, "sft"], "loss_weights": [1.0, config.sft_weight]} if config.sft_weight \
        else {"loss_type": [preference]}
    if config.label_noise:
        losses["label_smoothing"] = config.label_noise
    # The reference's log-probs once, before the first step: a round passes over the same few pairs many times
    # (plan.PREFERENCE_MIN_STEPS), and each step then skips the reference's forward pass.
    args = DPOConfig(**trainer_arguments(config, has_eval=eval_ds is not None), beta=config.beta,
                     precompute_ref_log_probs=True, **losses)
    return DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
