"""Supervised fine-tuning: conversations (loss on assistant turns only) or documents (loss on all text)."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from trl import SFTConfig, SFTTrainer

from ftchat import models
from ftchat.config import RunConfig
from ftchat.train.attention import use_packed_attention
from ftchat.train.common import trainer_arguments

log = logging.getLogger(__name__)


class LabelledHeadSFTTrainer(SFTTrainer):
    """SFTTrainer that, on a CPU, runs the LM head only at the positions that have a label.

    TRL's fused LM head scores only labelled positions where Triton runs (CUDA, XPU); elsewhere it scores every
    position, in vocabulary tiles folded by small torch ops. On a CPU that head is a quarter of a step of the
    135M model (its vocabulary is 49152 wide). Here, for a padding-free batch (one row) of a plain or LoRA model,
    the forward keeps only the labelled positions' logits (`logits_to_keep`) and one fused cross-entropy gives the
    same loss and gradients (tests/test_train_speed.py compares them with SFTTrainer's own). Anything else -
    prompt tuning, label smoothing, a custom loss, batches with padding, GPUs - goes to SFTTrainer unchanged.
    """

    def _head_on_labels(self, model, inputs, return_outputs: bool) -> bool:
        from peft import PeftModel

        labels = inputs.get("labels")
        return (not return_outputs and labels is not None and labels.dim() == 2 and labels.size(0) == 1
                and labels.device.type == "cpu" and self.compute_loss_func is None and self.label_smoother is None
                and self.args.loss_type == "nll" and not self.aux_loss_enabled
                and (not isinstance(model, PeftModel) or model.peft_config[model.active_adapter].peft_type == "LORA"))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._head_on_labels(model, inputs, return_outputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        labels = inputs["labels"]
        positions = (labels[0, 1:] != -100).nonzero().squeeze(1)  # position i predicts token i + 1
        targets = labels[0, positions + 1]
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        logits = model(**forward, use_cache=False, logits_to_keep=positions).logits[0].float()
        denominator = targets.numel() if num_items_in_batch is None else num_items_in_batch
        loss = F.cross_entropy(logits, targets, reduction="sum") / torch.as_tensor(denominator).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        with torch.no_grad():  # the metrics SFTTrainer logs: entropy and top-1 accuracy on the labelled tokens
            log_probs = logits.log_softmax(-1)
            gather = self.accelerator.gather_for_metrics
            n = gather(torch.tensor(targets.numel())).sum().clamp(min=1)
            entropy = gather(-(log_probs.exp() * log_probs).sum()).sum()
            correct = gather((logits.argmax(-1) == targets).sum()).sum()
            self._metrics[mode]["entropy"].append((entropy / n).item())
            self._metrics[mode]["mean_token_accuracy"].append((correct / n).item())
        if mode == "train":
            self._total_train_tokens += labels.size(1) // self._tp_size  # padding-free: every position is a token
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss


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
    if next(model.parameters()).device.type == "cpu":  # measured on CPUs only (bench/profile_step.py)
        use_packed_attention(model)
    return LabelledHeadSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
