"""Supervised fine-tuning: conversations (loss on assistant turns only) or documents (loss on all text)."""
from __future__ import annotations

import logging

from trl import SFTConfig, SFTTrainer

from ftchat import models
from ftchat.config import RunConfig
from ftchat.train.common import trainer_arguments

log = logging.getLogger(__name__)


def build_trainer(config: RunConfig, model, peft_config, tokenizer, train_ds, eval_ds, callbacks) -> SFTTrainer:
    conversational = "messages" in train_ds.column_names
    assistant_only = False
    if conversational:
        template = models.training_chat_template(tokenizer, config.base)
        if template is None:
            log.warning("No chat template with generation markers is known for %s: the loss covers every token.",
                        config.base)
        else:
            tokenizer.chat_template = template
            assistant_only = True
    arguments = trainer_arguments(config, has_eval=eval_ds is not None)
    # Padding-free batches: the examples of a batch are laid end to end in one row with restarting position_ids,
    # so no pad token is ever computed; attention stays within each example (tests/test_train_speed.py checks the
    # loss equals the padded batch's). ftchat.data already skips rows over max_length, which TRL then leaves alone.
    arguments["max_length"] = None
    args = SFTConfig(
        **arguments,
        assistant_only_loss=assistant_only,
        dataset_text_field="text",
        packing=False,
        padding_free=True,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
