"""Kahneman-Tversky Optimization on unpaired feedback: prompt/completion/label (thumbs up or down).

Like DPO, the reference is the model the run starts from: the base for a new adapter, the parent run (a frozen
copy of its adapter named "ref") for a run that continues its parent.
"""
from __future__ import annotations

from trl import KTOConfig, KTOTrainer

from ftchat.config import RunConfig
from ftchat.train.common import trainer_arguments


def build_trainer(config: RunConfig, model, peft_config, tokenizer, train_ds, eval_ds, callbacks) -> KTOTrainer:
    labels = train_ds["label"]
    desirable, undesirable = sum(labels), len(labels) - sum(labels)
    args = KTOConfig(
        **trainer_arguments(config, has_eval=eval_ds is not None),
        beta=config.beta,
        # balance the two kinds of feedback, as the KTO paper recommends for skewed data
        desirable_weight=1.0,
        undesirable_weight=(desirable / undesirable) if desirable and undesirable else 1.0,
    )
    return KTOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
