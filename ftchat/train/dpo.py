"""Direct Preference Optimization on prompt/chosen/rejected pairs.

With an adapter, the reference model is the same base with the adapter switched off (TRL does this when it is
given a PEFT model and no ref_model), so no second copy of the weights is held.
"""
from __future__ import annotations

from trl import DPOConfig, DPOTrainer

from ftchat.config import RunConfig
from ftchat.train.common import trainer_arguments


def build_trainer(config: RunConfig, model, peft_config, tokenizer, train_ds, eval_ds, callbacks) -> DPOTrainer:
    args = DPOConfig(**trainer_arguments(config, has_eval=eval_ds is not None), beta=config.beta)
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
