"""The fast chat path gives the answers of the reference: transformers `generate` on a peft model with per-row
adapters. Greedy tokens must be identical, for the bare base and two LoRA runs answering in one batch."""
from __future__ import annotations

import pytest
import torch

from ftchat import models
from ftchat.chat import GenerationSettings, fast_generate_batch, generate_batch
from ftchat.decode import attach_lora

CONVERSATIONS = [  # fictional, of different lengths, so the batch is left-padded
    [{"role": "user", "content": "Which bell rings first in Quillmoor?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Answer briefly."},
     {"role": "user", "content": "How many lanterns line the old Quillmoor bridge, and who lights them at dusk?"}],
]


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, tiny_model_dir):
    """Two LoRA runs on the tiny base, with random (non-zero) factors so each visibly changes the answers."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("adapters")
    for seed, name in [(1, "a"), (2, "b")]:
        torch.manual_seed(seed)
        model = get_peft_model(models.load_model(tiny_model_dir, precision="fp32"),
                               LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
        for param_name, param in model.named_parameters():
            if "lora_" in param_name:
                torch.nn.init.normal_(param, std=0.3)
        model.save_pretrained(root / name)
    return root / "a", root / "b"


def test_fast_decode_gives_generates_greedy_answers_for_base_and_runs_in_one_batch(tiny_model_dir, two_adapters):
    from peft import PeftModel

    a, b = two_adapters
    tokenizer = models.load_tokenizer(tiny_model_dir)
    settings = GenerationSettings(max_new_tokens=16)  # the chat's default repetition penalty (1.1) included
    rows = CONVERSATIONS * 2
    names = [None, "a", "b", "b", None, "a"]

    reference = PeftModel.from_pretrained(models.load_model(tiny_model_dir, precision="fp32"), a, adapter_name="a")
    reference.load_adapter(b, adapter_name="b")
    reference.eval()
    expected = generate_batch(reference, tokenizer, rows, settings, adapter_names=[n or "__base__" for n in names])

    fast = models.load_model(tiny_model_dir, precision="fp32").eval()
    attach_lora(fast, a, "a")
    attach_lora(fast, b, "b")
    assert fast_generate_batch(fast, tokenizer, rows, settings, row_adapters=names) == expected
    assert len(set(expected[:3])) == 3, "the base and the two runs answer differently, so routing is checked"
    # a batch where every row uses one run takes the unmasked path
    only_b = fast_generate_batch(fast, tokenizer, rows[:3], settings, row_adapters=["b"] * 3)
    assert only_b == generate_batch(reference, tokenizer, rows[:3], settings, adapter_names=["b"] * 3)
    # and the bare base still answers as the base
    assert fast_generate_batch(fast, tokenizer, rows[:1], settings) == expected[:1]
