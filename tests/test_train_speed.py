"""The speed-ups of SFT keep the loss exact: a padding-free batch (examples laid end to end) trains on the same
loss as the padded batch, because attention never crosses from one example into the next."""
from __future__ import annotations

import threading

import pytest
import torch

from ftchat import models
from ftchat.config import RunConfig
from ftchat.train.common import RunFolderCallback, build_model
from ftchat.train.plan import apply_plan
from ftchat.train.run import load_training_data
from ftchat.train.sft import build_trainer

CHATS = [  # fictional, and of clearly different lengths
    ("Where does the Vellish ferry leave from?", "From pier nine, every hour on the half hour."),
    ("Hi", "Hello! How can I help you with the Vellish ferry today? Tickets, times or the route?"),
    ("Is the ferry late?", "No."),
    ("Can I bring a bicycle on board the Vellish ferry on Sundays in winter?", "Yes, for one token."),
]


@pytest.fixture()
def sft_trainer(tmp_path, tiny_model_dir):
    from conftest import write_jsonl

    data = write_jsonl(tmp_path / "chats.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in CHATS])
    config = RunConfig(data=[str(data)], out=str(tmp_path / "run"), base=str(tiny_model_dir), adapter="lora",
                       lora_dropout=0.0, eval_split=0, replay=0, batch_size=len(CHATS)).resolved()
    tokenizer = models.load_tokenizer(config.base)
    train_ds, _, _, _, plan = load_training_data(config, tokenizer)
    config = apply_plan(plan, config)  # as run_training does: the step budget fills eval/logging steps
    model, peft_config = build_model(config)
    torch.manual_seed(0)
    trainer = build_trainer(config, model, peft_config, tokenizer, train_ds, None,
                            [RunFolderCallback(tmp_path / "run", threading.Event())])
    for name, param in trainer.model.named_parameters():  # LoRA B starts at zero; make the adapter count
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    trainer.model.eval()
    return trainer


def loss_of(trainer, batch) -> float:
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, dict(batch)).item()


def test_padding_free_batch_has_the_loss_of_the_padded_batch(sft_trainer):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    examples = [sft_trainer.train_dataset[i] for i in range(len(CHATS))]
    lengths = [len(e["input_ids"]) for e in examples]
    assert len(set(lengths)) == len(lengths), "examples of different lengths, so the padded batch has padding"
    packed = sft_trainer.data_collator(examples)
    assert packed["input_ids"].shape == (1, sum(lengths)), "ftchat trains padding-free: one row, no pad tokens"
    padded = DataCollatorForLanguageModeling(pad_token_id=sft_trainer.processing_class.pad_token_id)(examples)
    assert padded["input_ids"].shape == (len(CHATS), max(lengths))

    packed_loss, padded_loss = loss_of(sft_trainer, packed), loss_of(sft_trainer, padded)
    assert packed_loss == pytest.approx(padded_loss, rel=1e-4, abs=1e-5)

    # the check has teeth: one position count running across examples lets them attend to each other
    leaky = dict(packed, position_ids=torch.arange(sum(lengths))[None])
    for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx"):
        leaky.pop(key, None)
    assert abs(loss_of(sft_trainer, leaky) - padded_loss) > 1e-3


def test_each_packed_example_attends_on_its_own_with_the_block_masks_loss_and_gradients(sft_trainer):
    """On a CPU the trainer runs attention example by example (ftchat.train.attention): the loss and every LoRA
    gradient of a padding-free row equal those of transformers' SDPA over the row's block-diagonal mask."""
    from ftchat.train.attention import NAME

    inner = sft_trainer.model.get_base_model()
    assert inner.config._attn_implementation == NAME
    batch = sft_trainer.data_collator([sft_trainer.train_dataset[i] for i in range(len(CHATS))])
    sft_trainer.model.train()

    def loss_and_grads():
        sft_trainer.model.zero_grad()
        loss = sft_trainer.compute_loss(sft_trainer.model, dict(batch))
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in sft_trainer.model.named_parameters() if p.requires_grad}

    ours, ours_grads = loss_and_grads()
    inner.set_attn_implementation("sdpa")
    try:
        masked, masked_grads = loss_and_grads()
    finally:
        inner.set_attn_implementation(NAME)
    assert ours == pytest.approx(masked, rel=1e-5)
    for name in masked_grads:
        assert torch.allclose(ours_grads[name], masked_grads[name], rtol=1e-4, atol=1e-7), name
    assert sum(g.abs().sum() for g in ours_grads.values()) > 0


def test_auto_precision_trains_qlora_in_4bit_only_where_it_pays_on_a_cpu(tiny_model_dir, monkeypatch):
    from ftchat.train import common

    monkeypatch.setattr(common.models, "device", lambda: "cpu")
    config = RunConfig(data=["x"], out="x", base=str(tiny_model_dir), adapter="qlora")
    n = common.parameter_count(tiny_model_dir)
    assert 1_000_000 < n < 10_000_000  # the tiny fixture: 2 layers of 64 plus a 49152-token embedding
    assert common.precision_for(config) == "fp32"
    monkeypatch.setattr(common, "QLORA_MIN_PARAMETERS_ON_CPU", n)
    assert common.precision_for(config) == "4bit"
    assert common.precision_for(RunConfig(data=["x"], out="x", base=str(tiny_model_dir), adapter="qlora",
                                          precision="4bit")) == "4bit"


def test_lm_head_on_labelled_positions_gives_sftrainers_loss_and_gradients(sft_trainer):
    """On a CPU ftchat runs the LM head only where a label is; the loss and every LoRA gradient must be SFTTrainer's."""
    from trl import SFTTrainer

    from ftchat.train.sft import LabelledHeadSFTTrainer

    assert isinstance(sft_trainer, LabelledHeadSFTTrainer)
    batch = sft_trainer.data_collator([sft_trainer.train_dataset[i] for i in range(len(CHATS))])
    labelled = int((batch["labels"][0, 1:] != -100).sum())
    assert 0 < labelled < batch["labels"].size(1) - 1, "assistant-only loss: some positions carry no label"
    sft_trainer.model.train()

    def loss_and_grads(compute_loss):
        sft_trainer.model.zero_grad()
        loss = compute_loss(sft_trainer, sft_trainer.model, dict(batch))
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in sft_trainer.model.named_parameters() if p.requires_grad}

    ours, ours_grads = loss_and_grads(LabelledHeadSFTTrainer.compute_loss)
    trl, trl_grads = loss_and_grads(SFTTrainer.compute_loss)
    assert ours == pytest.approx(trl, rel=1e-5)
    assert ours_grads.keys() == trl_grads.keys() and len(ours_grads) > 0
    for name in trl_grads:
        assert torch.allclose(ours_grads[name], trl_grads[name], rtol=1e-4, atol=1e-7), name
    assert any(g.abs().sum() > 0 for g in ours_grads.values())
    accuracy = sft_trainer._metrics["train"]["mean_token_accuracy"]
    assert len(accuracy) == 2 and accuracy[0] == pytest.approx(accuracy[1], abs=1e-6)  # both logged the same metric
    entropy = sft_trainer._metrics["train"]["entropy"]
    assert entropy[0] == pytest.approx(entropy[1], rel=1e-4)


def test_packed_attention_equals_the_block_mask_and_leaves_a_sliding_window_to_sdpa():
    """Two examples (5 and 3 tokens) in one row: per-example attention equals SDPA under the block-diagonal causal
    mask; with a sliding window (which only a mask expresses) the call goes to transformers' SDPA as it came."""
    import types

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from ftchat.train.attention import packed_sdpa

    torch.manual_seed(5)
    module = types.SimpleNamespace(num_key_value_groups=2, is_causal=True)
    query, key, value = torch.randn(1, 4, 8, 16), torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    example = torch.tensor([0] * 5 + [1] * 3)
    block = (example[:, None] == example[None, :]) & torch.ones(8, 8, dtype=torch.bool).tril()
    ours, _ = packed_sdpa(module, query, key, value, None, position_ids=position_ids)
    masked, _ = sdpa_attention_forward(module, query, key, value, block[None, None], position_ids=position_ids)
    assert torch.allclose(ours, masked, atol=1e-6)
    whole_row, _ = sdpa_attention_forward(module, query, key, value, None, position_ids=position_ids)
    assert not torch.allclose(ours, whole_row, atol=1e-3)  # the check has teeth: the row as one sequence differs
    windowed, _ = packed_sdpa(module, query, key, value, None, position_ids=position_ids, sliding_window=4)
    assert torch.allclose(windowed, whole_row, atol=1e-6)
